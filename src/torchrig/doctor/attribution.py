"""The most specific cause carries the verdict.

Some checks see a symptom: an error message torch printed when CUDA, cuDNN or a probe
failed. Other checks judge the cause from facts: CUDA_VISIBLE_DEVICES, the driver, the
libraries on LD_PRELOAD. When a symptom's known error names a cause check that found a
problem, that cause check fails (a warning becomes a failure: it is what broke CUDA) and
the symptom points at it through `cause` and a fix that starts with it.
"""

from __future__ import annotations

from torchrig.doctor.cuda_errors import explain
from torchrig.doctor.model import CheckResult

# checks whose failure messages carry an error text from torch or CUDA
SYMPTOM_CHECKS = frozenset(
    {"torch.cuda_init", "libs.cudnn", "probe.run", "probe.kernel", "probe.sdpa", "probe.allreduce"}
)


def _found(results: list[CheckResult], check_id: str) -> CheckResult | None:
    return next(
        (r for r in results if r.id == check_id and r.status in ("warn", "fail")),
        None,
    )


def attribute(results: list[CheckResult]) -> list[CheckResult]:
    """Link each failed symptom to the cause check that found a problem, and fail that one."""
    causes: dict[int, str] = {}  # symptom index -> cause check id
    escalate: set[str] = set()
    for index, res in enumerate(results):
        if res.id not in SYMPTOM_CHECKS or res.status != "fail":
            continue
        cause_id = res.cause
        if cause_id is None:
            known = explain(res.message)
            if known is None:
                continue
            cause_id = next(
                (c for c in known.related_checks if _found(results, c) is not None), None
            )
        if cause_id is None or _found(results, cause_id) is None:
            continue
        causes[index] = cause_id
        escalate.add(cause_id)
    linked: list[CheckResult] = []
    for index, original in enumerate(results):
        res = original
        cause_id = causes.get(index)
        if cause_id is not None:
            specific = _found(results, cause_id)
            detail = f": {specific.fix}" if specific is not None and specific.fix else ""
            res = CheckResult(
                id=res.id,
                status=res.status,
                message=f"{res.message} (the cause is reported by {cause_id})",
                fix=f"fix {cause_id} first{detail}",
                subject=res.subject,
                cause=cause_id,
            )
        elif res.id in escalate and res.status == "warn":
            res = CheckResult(
                id=res.id,
                status="fail",
                message=f"{res.message} — this is why CUDA fails here",
                fix=res.fix,
                subject=res.subject,
                cause=res.cause,
            )
        linked.append(res)
    return linked
