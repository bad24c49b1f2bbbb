"""`python -m torchrig.facts.probes`: run the `--deep` probes, print one ProbeFacts JSON.

Run as a child of the collecting process so that a crash (a segfault in a CUDA
library), a hang or a poisoned CUDA context cannot take the caller down. Anything
that libraries print on stdout (NCCL_DEBUG, for one) is sent to stderr, so stdout
carries exactly one JSON line.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import msgspec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torchrig.facts.probes", description=__doc__)
    parser.add_argument("--budget-s", type=float, default=180.0, help="time the probes may take")
    parser.add_argument("--workdir", type=Path, help="private directory for rendezvous files")
    args = parser.parse_args(argv)

    sys.stdout.flush()
    result_fd = os.dup(1)
    os.dup2(2, 1)  # from here on, fd 1 (C libraries and Python's print) is stderr
    from torchrig.facts.probes.suite import run_suite

    if args.workdir is not None:
        facts = run_suite(budget_s=args.budget_s, workdir=args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="torchrig-probes-") as workdir:
            facts = run_suite(budget_s=args.budget_s, workdir=Path(workdir))
    sys.stdout.flush()
    with os.fdopen(result_fd, "wb") as result:
        result.write(msgspec.json.encode(facts) + b"\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
