"""Instructions per request of the in-process request path, counted exactly by valgrind's
callgrind: a figure that holds on a shared machine whose speed drifts, where CPU times move
by 2x within minutes (it counts instructions, not the cycles they take: cache misses and
the kernel's share are not in it).

The path is request_path.py's (the V2 app driven in-process with the demo ranker's one-row
JSON request, `--concurrency` requests at a time), or with `--bare` the bare ASGI app's
(serve_compare/asgi_app.py). The app is built and warmed with counting off; callgrind
counts only the `--requests` measured requests (`callgrind_control -i on/off`), so start-up
and imports are not in the figure. Printed: instructions per request. About 2 minutes (the
program runs some 50x slower under valgrind).

Run: `python benchmarks/request_instructions.py [--requests 200] [--concurrency 1] [--bare]`
(valgrind must be on PATH; Debian: apt-get install valgrind). To compare two trees, run it
with each tree first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent


def wait_for(path: Path, process: subprocess.Popen[bytes], deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while not path.exists():
        if process.poll() is not None:
            raise RuntimeError(f"the measured program exited early ({process.returncode})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {path.name} within {deadline_s:g} s")
        time.sleep(0.2)


def measure(args: argparse.Namespace) -> int:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind (callgrind) is not on PATH: apt-get install valgrind")
        return 2
    work = Path(tempfile.mkdtemp(prefix="torchrig-request-instructions-"))
    out = work / "callgrind.out"
    command = [
        *("valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"),
        *(sys.executable, __file__, "--child", str(work)),
        *("--requests", str(args.requests), "--concurrency", str(args.concurrency)),
        *(["--bare"] if args.bare else []),
    ]
    with open(work / "log.txt", "wb") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(work / "ready", child, 1800)
            subprocess.run(["callgrind_control", "-i", "on", str(child.pid)], check=True,
                           capture_output=True)  # fmt: skip
            (work / "go").touch()
            wait_for(work / "done", child, 3600)
            subprocess.run(["callgrind_control", "-i", "off", str(child.pid)], check=True,
                           capture_output=True)  # fmt: skip
            (work / "end").touch()
            child.wait(600)
        finally:
            if child.poll() is None:
                child.kill()
    totals = [
        int(line.split()[1])
        for path in work.glob("callgrind.out*")
        for line in path.read_text(errors="replace").splitlines()
        if line.startswith("totals:")
    ]
    if not totals:
        print(f"callgrind wrote no totals; see {work / 'log.txt'}")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    which = "bare ASGI app" if args.bare else "torchrig"
    print(
        f"{which}, c={args.concurrency}: {sum(totals) / args.requests:,.0f} instructions per "
        f"request over {args.requests} requests (callgrind)"
    )
    return 0


async def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(HERE))
    from request_path import Client, bare_app, ranker_body

    work = Path(args.child)
    if args.bare:
        app = bare_app(work)
        state = None
    else:
        from torchrig.demo import build_demo_repository
        from torchrig.server.app import V2App
        from torchrig.server.runner import build_state
        from torchrig.settings import ServeSettings

        state = build_state(build_demo_repository(work / "repo"), ServeSettings())
        app = V2App(state)
        await state.lifespan_hooks["startup"]()
    client = Client(app, ranker_body())

    async def load(requests: int) -> None:
        for _ in range(requests // args.concurrency):
            if args.concurrency == 1:  # no gather: its task would be counted too
                await client.post()
            else:
                await asyncio.gather(*(client.post() for _ in range(args.concurrency)))

    await load(max(200, 20 * args.concurrency))  # warm: traces, batch sizes, caches
    (work / "ready").touch()
    while not (work / "go").exists():
        time.sleep(0.05)
    await load(args.requests)
    (work / "done").touch()
    while not (work / "end").exists():
        time.sleep(0.05)
    if state is not None:
        await state.lifespan_hooks["shutdown"]()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=200, help="measured requests")
    parser.add_argument("--concurrency", type=int, default=1, help="requests at a time")
    parser.add_argument("--bare", action="store_true", help="the bare ASGI app instead")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.requests % args.concurrency:
        parser.error("--requests must be a multiple of --concurrency")
    if args.child is None:
        return measure(args)
    warnings.simplefilter("ignore")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    try:
        import uvloop

        uvloop.run(child(args))
    except ImportError:
        asyncio.run(child(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
