"""`check`: judge one torch build against one GPU and driver, naming cause and fix."""

from __future__ import annotations

from torchrig.compat.advise import builds_for, preferred_variant, runner_phrase
from torchrig.compat.kb import KnowledgeBase, load_kb
from torchrig.compat.model import (
    CompatReport,
    DriverStatus,
    Finding,
    GpuModel,
    VariantInfo,
    Verdict,
)
from torchrig.compat.platforms import jetson_wheels_text, load_platforms
from torchrig.compat.rules import arch_support, driver_support
from torchrig.compat.versions import (
    TorchBuild,
    format_cc,
    parse_cc,
    parse_driver,
    parse_torch_version,
    sm_name,
)

_RANK: dict[Verdict, int] = {"ok": 0, "warn": 1, "unknown": 2, "fail": 3}
_DRIVER_VERDICT: dict[DriverStatus, Verdict] = {
    "ok": "ok",
    "minor-compat": "warn",
    "insufficient": "fail",
    "unknown": "unknown",
}


GIVE_CC = (
    "name a known GPU, or give its compute capability with --cc (nvidia-smi "
    "--query-gpu=name,compute_cap --format=csv prints it)"
)


class _Target:
    """The GPU being judged: a display label and its compute capability."""

    def __init__(self, label: str, cc: tuple[int, int], model: GpuModel | None) -> None:
        self.label = label
        self.cc = cc
        self.model = model

    @property
    def cc_text(self) -> str:
        return format_cc(self.cc)

    @property
    def named(self) -> str:
        return f"{self.label} ({sm_name(self.cc)})"


def _resolve_gpu(
    kb: KnowledgeBase, gpu: str | None, cc: str | None, findings: list[Finding]
) -> _Target | None:
    given_cc = parse_cc(cc) if cc is not None else None
    model = kb.gpu(gpu) if gpu is not None else None
    if gpu is not None and model is None:
        if given_cc is None:
            findings.append(Finding("unknown", "gpu", kb.unknown_gpu_text(gpu), GIVE_CC))
            return None
        findings.append(
            Finding(
                "ok",
                "gpu",
                f"GPU {gpu!r} is not in the knowledge base; using the given compute "
                f"capability {format_cc(given_cc)}",
            )
        )
        return _Target(gpu, given_cc, None)
    if model is not None:
        model_cc = parse_cc(model.compute_capability)
        if given_cc is not None and given_cc != model_cc:
            findings.append(
                Finding(
                    "warn",
                    "gpu",
                    f"{model.name} has compute capability {model.compute_capability} in the "
                    f"knowledge base, but {format_cc(given_cc)} was given; using "
                    f"{format_cc(given_cc)}",
                )
            )
        return _Target(model.name, given_cc or model_cc, model)
    if given_cc is not None:
        return _Target(f"compute capability {format_cc(given_cc)}", given_cc, None)
    return None


def _fix_for(
    info_release: str, build: TorchBuild, target: _Target, driver: str | None
) -> str | None:
    kb = load_kb()
    rel = kb.release(info_release)
    best = preferred_variant(rel, target.cc_text, driver) if rel is not None else None
    if best is None and rel is not None and driver is not None:
        best = preferred_variant(rel, target.cc_text, None)
    if best is not None:
        info, _choice = best
        version = build.version if build.version in info.patches else info.latest_patch
        return (
            f"install torch=={version} from the {info.variant} index: {info.pip_command(version)}"
        )
    others = builds_for(target.cc_text, driver=driver) or builds_for(target.cc_text)
    if others:
        return (
            f"install torch {others[0].torch_version}+{others[0].variant}: {others[0].pip_command}"
        )
    jetson = load_platforms().jetson_platforms(target.cc_text)
    wheels = jetson_wheels_text(jetson)
    if wheels is not None:
        return f"a Jetson GPU: install the torch wheels built for its JetPack: {wheels}"
    return None


def _check_arch(
    build: TorchBuild,
    info: VariantInfo,
    target: _Target,
    driver: str | None,
    ptx_jit_allowed: bool,
) -> Finding:
    support = arch_support(info.arch_list, target.cc_text, ptx_jit_allowed=ptx_jit_allowed)
    if support.runs:
        status: Verdict = "warn" if support.how == "ptx-jit" else "ok"
        return Finding(status, "arch", f"{target.named}: {support.message}")
    rel = load_kb().release(build.release)
    phrase = runner_phrase(rel, target.cc_text) if rel is not None else None
    if phrase is not None and ptx_jit_allowed:
        message = f"{target.named} needs {phrase}; this is {info.variant}"
    elif phrase is None:
        message = (
            f"{target.named} is not supported by any torch {build.release} Linux x86_64 build; "
            f"{support.message}"
        )
    else:
        message = f"{target.named}: {support.message}"
    return Finding("fail", "arch", message, _fix_for(build.release, build, target, driver))


def _check_torch(
    kb: KnowledgeBase, build: TorchBuild, findings: list[Finding]
) -> VariantInfo | None:
    rel = kb.release(build.release)
    if rel is None:
        findings.append(
            Finding(
                "unknown",
                "torch",
                f"unknown: torch {build.release} is not in the knowledge base "
                f"(it knows {kb.known_releases_text()})",
                "on the machine itself, `torchrig doctor` judges any torch build from what it "
                "reports (its architecture list, its CUDA, the driver's CUDA)",
            )
        )
        return None
    if build.version not in rel.patches and build.version.count(".") == 2:
        findings.append(
            Finding(
                "ok",
                "torch",
                f"torch {build.version} is not a known patch of {rel.release} "
                f"(known: {', '.join(rel.patches)}); using the {rel.release} release data",
            )
        )
    variant = build.variant
    if variant is None:
        variant = rel.pypi_default
        findings.append(
            Finding(
                "ok",
                "torch",
                f"torch {build.version} has no local tag: assuming the PyPI wheel, which for "
                f"{rel.release} on Linux x86_64 is the {variant} build",
            )
        )
    info = rel.variant(variant)
    if info is None and variant != "cpu":
        known = ", ".join(v.variant for v in rel.variants)
        findings.append(
            Finding(
                "unknown",
                "torch",
                f"unknown: torch {rel.release} has no {variant} build in the knowledge base "
                f"(it knows {known}, cpu)",
            )
        )
    return info


def _check_driver(
    build: TorchBuild,
    *,
    cuda: str,
    driver: str,
    target: _Target | None,
    findings: list[Finding],
    known: dict[str, str],
) -> bool:
    """Add the driver finding; return whether PTX JIT is possible (not minor-compat)."""
    support = driver_support(cuda, driver)
    if support.min_driver:
        known["min_driver"] = support.min_driver
    if support.floor:
        known["minor_compat_floor"] = support.floor
    fix = support.fix
    if support.status == "insufficient" and target is not None:
        # The generic fix may name a build that cannot run this GPU; pick one that can.
        upgrade = f"upgrade the driver to >= {support.min_driver or support.floor}"
        rel = load_kb().release(build.release)
        best = preferred_variant(rel, target.cc_text, driver) if rel is not None else None
        if best is not None:
            info, _choice = best
            version = build.version if build.version in info.patches else info.latest_patch
            fix = f"{upgrade} or install torch=={version} from the {info.variant} index: " + (
                info.pip_command(version)
            )
        else:
            fix = upgrade
    findings.append(Finding(_DRIVER_VERDICT[support.status], "driver", support.message, fix))
    return support.status != "minor-compat"


def _verdict(findings: list[Finding]) -> Verdict:
    worst: Verdict = "ok"
    for finding in findings:
        if _RANK[finding.status] > _RANK[worst]:
            worst = finding.status
    return worst


def check(
    *, torch: str, gpu: str | None = None, driver: str | None = None, cc: str | None = None
) -> CompatReport:
    """Judge torch build `torch` (`2.9.1+cu126`) against a GPU (by name or `cc`) and a driver.

    Malformed version strings raise UnknownVersionError; releases, variants and GPUs
    the knowledge base lacks give an "unknown" finding instead of a guess.
    """
    build = parse_torch_version(torch)
    if driver is not None:
        parse_driver(driver)
    kb = load_kb()
    findings: list[Finding] = []
    known: dict[str, str] = {"torch": build.version, "release": build.release}
    info = _check_torch(kb, build, findings)
    target = _resolve_gpu(kb, gpu, cc, findings)
    variant = info.variant if info else build.variant
    cuda = info.cuda if info else build.cuda
    if variant:
        known["variant"] = variant
    if cuda:
        known["cuda"] = cuda
    if info is not None:
        known["arch_list"] = " ".join(info.arch_list)
        known.update({k: v for k, v in (("cudnn", info.cudnn), ("nccl", info.nccl)) if v})
    if target is not None:
        known["cc"] = target.cc_text
        if target.model is not None:
            known["gpu"] = target.model.name
            known["datacenter"] = "yes" if target.model.datacenter else "no"
    ptx_jit_allowed = True
    if driver is not None:
        known["driver"] = driver
        if cuda is not None:
            ptx_jit_allowed = _check_driver(
                build, cuda=cuda, driver=driver, target=target, findings=findings, known=known
            )
    if build.variant == "cpu" or (info is None and variant == "cpu"):
        what = f"it cannot use the {target.named}" if target else "no GPU can be used"
        fix = _fix_for(build.release, build, target, driver) if target else None
        findings.append(
            Finding(
                "fail" if target else "warn",
                "torch",
                f"torch {build.version}+cpu is a CPU-only build; {what}",
                fix,
            )
        )
    elif info is not None and target is not None:
        findings.append(_check_arch(build, info, target, driver, ptx_jit_allowed))
    return CompatReport(verdict=_verdict(findings), findings=findings, known=known)
