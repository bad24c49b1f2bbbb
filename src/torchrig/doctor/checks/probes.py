"""Judging the `--deep` probe results: kernels, matmul correctness, SDPA backends, all-reduce."""

from __future__ import annotations

from torchrig.doctor.checks.system import SHM_FIX
from torchrig.doctor.context import result, skip
from torchrig.doctor.cuda_errors import explain
from torchrig.doctor.model import CheckContext, CheckResult, Status
from torchrig.facts.model import ProbeFacts, SdpaProbe

# fp32 matmul of 512x512 against the CPU, TF32 disabled: anything above this is wrong maths
MATMUL_TOLERANCE = 1e-3
FUSED_BACKENDS = ("flash", "efficient", "cudnn")
NOT_DEEP = "run with --deep to probe the devices"


def _probes(ctx: CheckContext) -> ProbeFacts | None:
    return ctx.snapshot.probes


def _fix_for(error: str, default: str) -> str:
    known = explain(error)
    return known.fix if known else default


def check_probe_run(ctx: CheckContext) -> list[CheckResult]:
    probes = _probes(ctx)
    if probes is None:
        return skip("probe.run", NOT_DEEP)
    if probes.error:
        return [
            result(
                "probe.run",
                "fail",
                f"the probe process failed: {probes.error}",
                "a hang or crash in a kernel launch points at the driver or the GPU: check "
                "dmesg for Xid errors; rerun with a longer --probe-timeout-s if it was slow",
            )
        ]
    took = f" in {probes.duration_s:.1f} s" if probes.duration_s is not None else ""
    return [result("probe.run", "ok", f"probes ran{took}")]


def check_probe_kernels(ctx: CheckContext) -> list[CheckResult]:
    probes = _probes(ctx)
    if probes is None:
        return skip("probe.kernel", NOT_DEEP)
    if not probes.kernels:
        return skip("probe.kernel", "no device was probed")
    results: list[CheckResult] = []
    for probe in probes.kernels:
        if not probe.ok:
            error = probe.error or "unknown error"
            results.append(
                result(
                    "probe.kernel",
                    "fail",
                    f"{probe.device}: a kernel launch failed: {error}",
                    _fix_for(error, "check dmesg for Xid errors; see gpu.arch and driver.cuda"),
                    probe.device,
                )
            )
            continue
        error_rel = probe.matmul_max_rel_error
        if error_rel is not None and error_rel > MATMUL_TOLERANCE:
            results.append(
                result(
                    "probe.kernel",
                    "fail",
                    f"{probe.device}: a 512x512 fp32 matmul differs from the CPU result by "
                    f"{error_rel:.2e} (relative): the device computes wrong results",
                    "drain the node and run `dcgmi diag -r 3`; a GPU that computes wrongly "
                    "must be serviced",
                    probe.device,
                )
            )
            continue
        timing = f"kernel {probe.kernel_ms:.3f} ms" if probe.kernel_ms is not None else "kernel ok"
        accuracy = f", matmul rel. error {error_rel:.1e}" if error_rel is not None else ""
        results.append(
            result("probe.kernel", "ok", f"{probe.device}: {timing}{accuracy}", None, probe.device)
        )
    return results


def _describe(probe: SdpaProbe) -> str:
    parts = []
    for backend in probe.backends:
        if backend.ok and backend.median_ms is not None:
            parts.append(f"{backend.backend} {backend.median_ms:.2f} ms")
        else:
            parts.append(f"{backend.backend} unavailable")
    return ", ".join(parts)


def check_probe_sdpa(ctx: CheckContext) -> list[CheckResult]:
    probes = _probes(ctx)
    if probes is None:
        return skip("probe.sdpa", NOT_DEEP)
    if not probes.sdpa:
        return skip("probe.sdpa", "no device was probed")
    results: list[CheckResult] = []
    for probe in probes.sdpa:
        shape = "x".join(str(d) for d in probe.shape)
        head = f"{probe.device} {probe.dtype} {shape}{' causal' if probe.causal else ''}"
        if probe.error:
            results.append(
                result(
                    "probe.sdpa",
                    "fail",
                    f"{head}: attention could not run: {probe.error}",
                    _fix_for(probe.error, "see probe.kernel"),
                    probe.device,
                )
            )
            continue
        ran = {b.backend: b for b in probe.backends if b.ok and b.median_ms is not None}
        math = ran.get("math")
        fused = [ran[name] for name in FUSED_BACKENDS if name in ran]
        speed = ""
        if math is not None and math.median_ms and fused:
            fastest = min(fused, key=lambda b: b.median_ms or float("inf"))
            ratio = math.median_ms / (fastest.median_ms or 1)
            speed = f"; fastest {fastest.backend} is {ratio:.1f}x math"
        detail = f"{head}: {_describe(probe)}{speed}"
        if not probe.device.startswith("cuda"):
            status: Status = "ok" if ran else "fail"
            results.append(result("probe.sdpa", status, detail, None, probe.device))
        elif not fused:
            results.append(
                result(
                    "probe.sdpa",
                    "fail",
                    f"{detail}: no fused attention kernel runs, every attention call takes the "
                    "math path (tens of times slower, O(L^2) memory, out-of-memory on long inputs)",
                    "install an official torch wheel built for this GPU (flash and "
                    "memory-efficient attention need sm_80 or newer for bf16)",
                    probe.device,
                )
            )
        elif "flash" not in ran:
            results.append(
                result(
                    "probe.sdpa",
                    "warn",
                    f"{detail}: Flash Attention does not run here",
                    "install an official torch wheel with Flash Attention for this GPU",
                    probe.device,
                )
            )
        else:
            results.append(result("probe.sdpa", "ok", detail, None, probe.device))
    return results


def check_probe_allreduce(ctx: CheckContext) -> list[CheckResult]:
    probes = _probes(ctx)
    if probes is None:
        return skip("probe.allreduce", NOT_DEEP)
    probe = probes.allreduce
    if probe is None:
        return skip("probe.allreduce", "no all-reduce was run")
    head = f"{probe.backend} all-reduce over {probe.world_size} rank(s)"
    if not probe.ok:
        error = probe.error or "unknown error"
        known = explain(error)
        fix = known.fix if known else SHM_FIX + "; set NCCL_DEBUG=INFO for details"
        return [result("probe.allreduce", "fail", f"{head} failed: {error}", fix)]
    numbers = []
    if probe.size_bytes is not None:
        numbers.append(f"{probe.size_bytes / 2**20:.0f} MiB")
    if probe.median_ms is not None:
        numbers.append(f"{probe.median_ms:.2f} ms")
    if probe.bus_bandwidth_gbps is not None:
        numbers.append(f"bus bandwidth {probe.bus_bandwidth_gbps:.1f} GB/s")
    suffix = f": {', '.join(numbers)}" if numbers else ""
    return [result("probe.allreduce", "ok", f"{head} correct{suffix}")]
