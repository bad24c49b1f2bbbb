"""`torchrig doctor`: pure judgement of a facts snapshot.

`diagnose(snapshot)` runs every registered check and returns a `Report` with the
verdict and the exit code. It does no I/O, so a snapshot written on a GPU node can be
diagnosed anywhere.
"""

from __future__ import annotations

import logging

from torchrig import __version__
from torchrig.doctor.attribution import attribute
from torchrig.doctor.context import unreadable
from torchrig.doctor.model import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_WARN,
    Check,
    CheckContext,
    CheckResult,
    Report,
    Summary,
)
from torchrig.doctor.registry import CHECKS
from torchrig.errors import UnknownVersionError
from torchrig.facts.model import Snapshot

__all__ = ["CHECKS", "Check", "CheckContext", "CheckResult", "Report", "diagnose"]

log = logging.getLogger(__name__)


def _run(check: Check, ctx: CheckContext) -> list[CheckResult]:
    try:
        return check.func(ctx)
    except UnknownVersionError as exc:  # the facts, not the check: no traceback
        status, message, fix = unreadable(exc)
        return [CheckResult(id=check.id, status=status, message=message, fix=fix)]
    except Exception as exc:  # a check bug must not hide the other verdicts
        log.exception("doctor check %s crashed", check.id)
        return [
            CheckResult(
                id=check.id,
                status="fail",
                message=f"the check itself failed ({type(exc).__name__}: {exc})",
                fix="report this as a torchrig bug, with the snapshot (--save-snapshot)",
            )
        ]


def diagnose(
    snapshot: Snapshot,
    *,
    require_gpu: bool = False,
    strict: bool = False,
    min_shm_bytes: int = 1024**3,
    source: str = "live",
) -> Report:
    """Judge `snapshot` with every check; `strict` turns warnings into exit code 1."""
    ctx = CheckContext(snapshot=snapshot, require_gpu=require_gpu, min_shm_bytes=min_shm_bytes)
    results: list[CheckResult] = []
    for check in CHECKS:
        results.extend(_run(check, ctx))
    results = attribute(results)
    counts = {s: sum(1 for r in results if r.status == s) for s in ("ok", "warn", "fail", "skip")}
    if counts["fail"]:
        verdict, code = "fail", EXIT_FAIL
    elif counts["warn"]:
        verdict, code = "warn", (EXIT_WARN if strict else EXIT_OK)
    else:
        verdict, code = "ok", EXIT_OK
    return Report(
        torchrig_version=__version__,
        hostname=snapshot.hostname,
        snapshot_taken_at=snapshot.taken_at,
        source=source,
        deep=snapshot.probes is not None,
        verdict=verdict,  # type: ignore[arg-type]
        exit_code=code,
        summary=Summary(**counts),
        checks=results,
    )
