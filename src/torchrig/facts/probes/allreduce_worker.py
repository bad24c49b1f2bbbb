"""One rank of the all-reduce probe: `python -m torchrig.facts.probes.allreduce_worker`.

Each rank is its own process (as in a real job), joins the group through a
rendezvous file, all-reduces a tensor filled with `rank + 1` a few times, checks
that every element is exactly the sum over ranks, and writes its timings to a
JSON result file. The launcher (`allreduce.py`) reads those files.
"""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path
from typing import Any

import msgspec

TIMED_ITERATIONS = 5


class WorkerResult(msgspec.Struct, frozen=True, kw_only=True):
    rank: int
    ok: bool
    times_ms: list[float] = []
    error: str | None = None


def run_worker(
    *, rank: int, world_size: int, backend: str, init_file: Path, numel: int, timeout_s: float
) -> WorkerResult:
    """Join the group, all-reduce, check the sum; any failure becomes the result's error."""
    import torch
    import torch.distributed as dist

    try:
        if backend == "nccl":
            device = torch.device("cuda", rank)
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        dist.init_process_group(
            backend,
            init_method=init_file.resolve().as_uri(),
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    except Exception as exc:
        return WorkerResult(rank=rank, ok=False, error=f"joining the group: {_describe(exc)}")
    try:
        return _all_reduce(
            torch, dist, rank=rank, world_size=world_size, device=device, numel=numel
        )
    except Exception as exc:  # NCCL "unhandled system error" and friends are the finding
        return WorkerResult(rank=rank, ok=False, error=_describe(exc))
    finally:
        dist.destroy_process_group()


def _all_reduce(
    torch: Any, dist: Any, *, rank: int, world_size: int, device: Any, numel: int
) -> WorkerResult:
    tensor = torch.empty(numel, dtype=torch.float32, device=device)
    expected = float(world_size * (world_size + 1) // 2)  # small integers: exact in fp32
    times: list[float] = []
    for iteration in range(TIMED_ITERATIONS + 1):  # the first one sets up the channels
        tensor.fill_(rank + 1)
        _synchronize(torch, device)
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(tensor)
        _synchronize(torch, device)
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        if not bool((tensor == expected).all()):
            wrong = int((tensor != expected).sum())
            return WorkerResult(
                rank=rank,
                ok=False,
                error=f"the all-reduce sum is wrong in {wrong} of {numel} elements",
            )
        if iteration > 0:
            times.append(elapsed_ms)
    return WorkerResult(rank=rank, ok=True, times_ms=times)


def _synchronize(torch: Any, device: Any) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world-size", type=int, required=True)
    parser.add_argument("--backend", choices=["nccl", "gloo"], required=True)
    parser.add_argument("--init-file", type=Path, required=True)
    parser.add_argument("--numel", type=int, required=True)
    parser.add_argument("--timeout-s", type=float, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)
    result = run_worker(
        rank=args.rank,
        world_size=args.world_size,
        backend=args.backend,
        init_file=args.init_file,
        numel=args.numel,
        timeout_s=args.timeout_s,
    )
    args.result.write_bytes(msgspec.json.encode(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
