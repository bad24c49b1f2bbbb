"""Which torch builds run on a GPU (and driver): the answers behind every suggested fix."""

from __future__ import annotations

from torchrig.compat.kb import KnowledgeBase, load_kb
from torchrig.compat.model import BuildChoice, DriverStatus, TorchRelease, VariantInfo
from torchrig.compat.rules import arch_support, driver_status
from torchrig.compat.versions import format_cc, parse_cc, parse_cuda, parse_driver, release_key
from torchrig.errors import UnknownVersionError

_STATUS_RANK = {"stable": 0, "legacy": 1, "experimental": 2}


def _choice(
    info: VariantInfo, cc: str, driver: str | None, machine: str = "x86_64"
) -> BuildChoice | None:
    """The BuildChoice for `info` if its wheels for host `machine` run on `cc` (under
    `driver` if given), else None; None too where that host's arch list is unknown."""
    arch_list = info.arch_list_for(machine)
    if arch_list is None:
        return None
    status: DriverStatus | None = driver_status(info.cuda, driver) if driver else None
    if status == "insufficient":
        return None
    support = arch_support(arch_list, cc, ptx_jit_allowed=status != "minor-compat")
    if not support.runs or support.how is None:
        return None
    req = load_kb().driver_requirement(info.cuda)
    return BuildChoice(
        torch_version=info.latest_patch,
        release=info.release,
        variant=info.variant,
        cuda=info.cuda,
        min_driver=req.min_driver if req else None,
        how=support.how,
        driver_status=status,
        status=info.status,
        pip_command=info.pip_command(),
    )


def release_or_raise(kb: KnowledgeBase, release: str) -> TorchRelease:
    rel = kb.release(release)
    if rel is None:
        raise UnknownVersionError(
            f"torch {release} is not in the knowledge base (it knows {kb.known_releases_text()})"
        )
    return rel


def builds_for(
    cc: str, *, release: str | None = None, driver: str | None = None, machine: str = "x86_64"
) -> list[BuildChoice]:
    """Every (release, variant) whose code runs on compute capability `cc`, newest first.

    `machine` is the host architecture (`x86_64` or `aarch64`): the wheels of the two
    carry different architecture lists.

    Within a release, builds the driver runs fully come before minor-compat ones,
    then higher CUDA first.

    With `driver`, builds the driver cannot run are left out; builds it runs only
    under minor-version compatibility stay in (see `driver_status`) unless they
    would need PTX JIT, which minor-version compatibility rules out.
    """
    cc_text = format_cc(parse_cc(cc))
    if driver is not None:
        parse_driver(driver)
    kb = load_kb()
    releases = [release_or_raise(kb, release)] if release else kb.releases
    choices = [
        choice
        for rel in releases
        for info in rel.variants
        if (choice := _choice(info, cc_text, driver, machine)) is not None
    ]
    # newest release first; within a release, builds the driver fully supports first
    choices.sort(key=lambda c: parse_cuda(c.cuda), reverse=True)
    choices.sort(key=lambda c: c.driver_status == "minor-compat")
    choices.sort(key=lambda c: release_key(c.release), reverse=True)
    return choices


def preferred_variant(
    rel: TorchRelease, cc: str, driver: str | None = None, machine: str = "x86_64"
) -> tuple[VariantInfo, BuildChoice] | None:
    """The variant of `rel` to recommend for `cc`: fully supported by the driver, stable
    rather than legacy or experimental, and of the lowest CUDA (the smallest change)."""
    ranked: list[tuple[tuple[int, int, tuple[int, int]], VariantInfo, BuildChoice]] = []
    for info in rel.variants:
        choice = _choice(info, cc, driver, machine)
        if choice is None:
            continue
        driver_rank = 1 if choice.driver_status == "minor-compat" else 0
        status_rank = _STATUS_RANK[info.status]
        ranked.append(((driver_rank, status_rank, parse_cuda(info.cuda)), info, choice))
    if not ranked:
        return None
    _key, info, choice = min(ranked, key=lambda item: item[0])
    return info, choice


def runner_phrase(rel: TorchRelease, cc: str) -> str | None:
    """'a cu128 or newer build' / 'a cu126 build': the variants of `rel` that run `cc`."""
    runners = [info for info in rel.variants if _choice(info, cc, None) is not None]
    if not runners:
        return None
    runners.sort(key=lambda info: parse_cuda(info.cuda))
    lowest = parse_cuda(runners[0].cuda)
    newer = [info for info in rel.variants if parse_cuda(info.cuda) >= lowest]
    if len(runners) > 1 and len(newer) == len(runners):
        return f"a {runners[0].variant} or newer build"
    return "a " + " or ".join(info.variant for info in runners) + " build"
