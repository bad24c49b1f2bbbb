"""Which torch build to install instead: the pip command behind every fix that names one.

A suggestion keeps the user's torch release when a build of it fits (only the CUDA
variant changes) and says so when the release must change. It judges wheels by the
host's architecture (x86_64 and aarch64 wheels carry different code), and on a Jetson
whose wheels come from NVIDIA it names those, since download.pytorch.org has none.
"""

from __future__ import annotations

from torchrig import compat
from torchrig.compat.platforms import jetson_wheels_text, load_platforms
from torchrig.compat.versions import parse_cuda, release_key
from torchrig.doctor.context import driver_version, jetson_gpus, machine, visible_gpus
from torchrig.doctor.model import CheckContext
from torchrig.errors import UnknownVersionError
from torchrig.facts.model import Snapshot

_STATUS_RANK = {"stable": 0, "legacy": 1, "experimental": 2}


def installed_build(snapshot: Snapshot) -> compat.TorchBuild | None:
    """The installed torch as the knowledge base parses it, or None."""
    if snapshot.torch is None:
        return None
    try:
        return compat.parse_torch_version(snapshot.torch.version)
    except UnknownVersionError:
        return None


def _common(
    ccs: list[str], release: str | None, driver: str | None, host: str
) -> compat.BuildChoice | None:
    """The first build (newest release first) that runs on every compute capability."""
    candidates: list[compat.BuildChoice] | None = None
    for cc in ccs:
        try:
            choices = compat.builds_for(cc, release=release, driver=driver, machine=host)
        except UnknownVersionError:
            return None
        if candidates is None:
            candidates = choices
        else:
            keep = {(c.release, c.variant) for c in choices}
            candidates = [c for c in candidates if (c.release, c.variant) in keep]
    if not candidates:
        return None
    # newest release first; within it, what the driver fully runs, then stable before
    # legacy and experimental, then the release's PyPI default, then the lowest CUDA
    kb = compat.load_kb()

    def is_default(choice: compat.BuildChoice) -> bool:
        info = kb.variant(choice.release, choice.variant)
        return info is not None and info.pypi_default

    candidates.sort(key=lambda c: parse_cuda(c.cuda))
    candidates.sort(key=lambda c: not is_default(c))
    candidates.sort(key=lambda c: _STATUS_RANK[c.status])
    candidates.sort(key=lambda c: c.driver_status == "minor-compat")
    candidates.sort(key=lambda c: release_key(c.release), reverse=True)
    return candidates[0]


def _jetson_suggestion(ctx: CheckContext) -> str | None:
    platforms = load_platforms()
    driver = ctx.snapshot.driver
    for gpu in jetson_gpus(ctx.snapshot):
        found = platforms.jetson_platforms(gpu.compute_capability or "")
        # the JetPack on the device: its driver reports the CUDA that JetPack ships
        matching = [p for p in found if driver is not None and p.cuda == driver.cuda_version]
        found = matching or found
        if found and found[0].system_libraries:
            text = jetson_wheels_text(found)
            if text:
                return (
                    f"install NVIDIA's Jetson wheels (download.pytorch.org has no "
                    f"sm_{(gpu.compute_capability or '').replace('.', '')} build): {text}"
                )
    return None


def suggest_build(ctx: CheckContext, *, use_driver: bool = True) -> str | None:
    """A fix sentence with the pip command of a build that runs on every visible GPU.

    With `use_driver`, only builds this driver can run; the user's release first.
    """
    snap = ctx.snapshot
    gpus = visible_gpus(snap) or snap.gpus
    ccs = sorted({g.compute_capability for g in gpus if g.compute_capability})
    if not ccs:
        return None
    jetson = _jetson_suggestion(ctx)
    if jetson is not None:
        return jetson
    on_jetson = bool(jetson_gpus(snap))
    # a Jetson's driver is JetPack's: the desktop driver tables do not apply to it
    driver = driver_version(snap) if use_driver and not on_jetson else None
    host = "aarch64" if on_jetson else machine(snap)
    build = installed_build(snap)
    kb = compat.load_kb()
    if build is not None and kb.release(build.release) is not None:
        same = _common(ccs, build.release, driver, host)
        if same is not None:
            info = kb.variant(same.release, same.variant)
            version = (
                build.version if info and build.version in info.patches else same.torch_version
            )
            index = info.index_url if info else ""
            command = f"pip install torch=={version} --index-url {index}"
            return f"`{command}` (the {same.variant} build of your torch {build.release} release)"
    other = _common(ccs, None, driver, host)
    if other is None:
        return None
    if build is None:
        return f"`{other.pip_command}` (torch {other.torch_version}, the {other.variant} build)"
    reason = " with this driver" if driver else ""
    return (
        f"`{other.pip_command}` (no torch {build.release} build runs here{reason}, so this "
        f"changes torch from {build.version} to {other.torch_version})"
    )
