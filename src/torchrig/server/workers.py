"""`torchrig serve --workers N`: several server processes sharing one port and the GPU.

Why: one Python process parses requests (JSON or binary tensors), copies them and runs
its event loop on one core; on an H200 that caps a server near a quarter of what the GPU
computes. N processes parse up to N times as fast, each with its own copy of the models
on the same GPU.

How: the parent binds the listening socket once (port 0 resolves to one port, reported as
the single server reports it), then starts N workers with the "spawn" start method (a
forked CUDA context is unusable). Each worker builds its own state, loads the models and
runs uvicorn on the inherited socket; the kernel hands each new connection to whichever
worker accepts it first. The parent serves nothing itself: each worker answers
/v2/health/* for itself (all load the same models), and every answer carries the header
`torchrig-worker: <pid>`.

CPU threads: unless OMP_NUM_THREADS is set, each worker gets the cores divided by N
(`threads_per_worker`), since N processes that each spread torch's CPU work over every
core slow each other down many times over.

Metrics: prometheus_client's multiprocess mode over a private directory the parent
creates (PROMETHEUS_MULTIPROC_DIR, set before a worker imports prometheus_client) and
removes at exit; a scrape of any worker reports the sums over all of them (see
`torchrig.server.metrics`).

Lifecycle, with no process left behind on any path:
- the parent logs "serving on URL" once every worker has started (models loaded);
- SIGTERM/SIGINT to the parent: each worker is asked to stop over its control pipe and
  drains as the single server does; the parent waits (the drain timeout and a grace),
  kills what is left and exits 0 (a second signal kills the workers at once);
- a worker that exits on its own (crash, OOM kill, a signal of its own) makes the parent
  stop the others and exit 1 (2 when it ended before every worker served), so that
  Kubernetes restarts the pod;
- the parent killed outright: each worker sees its control pipe close, drains and exits.
Workers run in their own process group, so a terminal's Ctrl+C reaches the parent only,
which stops each worker once (uvicorn takes a second SIGINT as "quit without draining").
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing import connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from torchrig.errors import ConfigError
from torchrig.server.gpus import GPU_ENV, describe_split, split_gpus, visible_gpus
from torchrig.settings import ServeSettings

log = logging.getLogger("torchrig.server")

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
THREADS_ENV = "OMP_NUM_THREADS"  # torch's intra-op threads, unless the user set it
STOP_GRACE_S = 30.0  # beyond the drain timeout: releasing models, closing connections
STOP = "stop"
CLEAN_EXITS = (0, -signal.SIGTERM, -signal.SIGINT)  # asked to stop, or signalled directly


@dataclass(frozen=True)
class WorkerSpec:
    """What every worker is started with (pickled into each spawned process)."""

    repository: str
    settings: ServeSettings
    cache_dir: Path  # each worker takes its own directory below it
    management_token: str | None
    metrics_dir: Path


@dataclass
class _Worker:
    """One worker process as the parent sees it."""

    index: int
    process: BaseProcess
    control: connection.Connection  # parent -> worker: STOP (its closing means the same)
    events: connection.Connection | None  # worker -> parent: its pid once it serves
    ready: bool = False

    @property
    def name(self) -> str:
        return f"worker {self.index} (pid {self.process.pid})"


def serve_workers(
    repository: str | Path,
    settings: ServeSettings,
    *,
    cache_dir: Path,
    management_token: str | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> int:
    """Run `settings.workers` server processes on one socket until a signal or a worker's
    end; returns the exit status (0 after a signal, non-zero when a worker failed).
    `on_ready(url)` runs once every worker serves. Call it from the main thread."""
    from torchrig.repository import Repository
    from torchrig.server.runner import check_control, socket_url

    check_control(settings)
    Repository(repository)  # a bad location fails here, once, not in every worker
    sock = bind_socket(settings.host, settings.port)
    metrics_dir = Path(tempfile.mkdtemp(prefix="torchrig-metrics-"))
    spec = WorkerSpec(str(repository), settings, cache_dir, management_token, metrics_dir)
    supervisor = _Supervisor(spec)
    try:
        with supervisor.signals_caught():
            supervisor.start(sock)
            return supervisor.run(socket_url(sock), on_ready)
    finally:
        supervisor.kill_left_over()
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


class _Supervisor:
    """The parent's side: starts the workers, watches them and the signals, stops them."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.workers: list[_Worker] = []
        self.received: list[int] = []  # signals, in order
        self._sock: socket.socket | None = None  # the listening socket, until workers serve
        self._wake_read, self._wake_write = socket.socketpair()  # signals wake the wait
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)

    @contextlib.contextmanager
    def signals_caught(self) -> Iterator[None]:
        """SIGTERM and SIGINT recorded (and waking `connection.wait`) within the block."""
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        previous_wakeup = signal.set_wakeup_fd(self._wake_write.fileno())
        for sig in previous:
            signal.signal(sig, lambda signum, _frame: self.received.append(signum))
        try:
            yield
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._wake_read.close()
            self._wake_write.close()

    def start(self, sock: socket.socket) -> None:
        """Spawn the workers, PROMETHEUS_MULTIPROC_DIR set in the environment they inherit."""
        self._sock = sock
        context = multiprocessing.get_context("spawn")  # never fork: CUDA
        threads = os.environ.get(THREADS_ENV) or str(threads_per_worker(self.spec.settings.workers))
        log.info("each worker runs torch's CPU work on %s threads (%s)", threads, THREADS_ENV)
        gpus = visible_gpus()
        shares = split_gpus(gpus, self.spec.settings.workers)
        if (warning := describe_split(shares)) is not None:
            log.warning("%s", warning)
        with _environment({METRICS_DIR_ENV: str(self.spec.metrics_dir), THREADS_ENV: threads}):
            for index, share in enumerate(shares):
                control_read, control_write = context.Pipe(duplex=False)
                events_read, events_write = context.Pipe(duplex=False)
                process = context.Process(
                    target=run_worker,
                    name=f"torchrig-worker-{index}",
                    args=(index, sock, self.spec, control_read, events_write),
                )
                # each worker's models on its own GPUs, not every worker's on GPU 0
                with _environment({GPU_ENV: ",".join(share)} if share else {}):
                    process.start()
                if share:
                    log.info("worker %d sees GPU(s) %s", index, ",".join(share))
                control_read.close()  # the worker holds its own copies now
                events_write.close()
                log.info("worker %d started (pid %d)", index, process.pid)
                self.workers.append(_Worker(index, process, control_write, events_read))

    def run(self, url: str, on_ready: Callable[[str], None] | None) -> int:
        """Wait for every worker to serve, then for a signal or a worker's end."""
        serving = False
        while True:
            if self.received:
                log.info(
                    "%s: stopping %d workers (each drains its in-flight requests)",
                    signal.Signals(self.received[0]).name,
                    len(self.workers),
                )
                return self.stop()
            waiting: list[Any] = [self._wake_read]
            waiting += [w.process.sentinel for w in self.workers]
            waiting += [w.events for w in self.workers if w.events is not None]
            ready = connection.wait(waiting)
            self._drain_wake()
            for worker in self.workers:
                if worker.events is not None and worker.events in ready:
                    _read_event(worker, worker.events)
                if worker.process.sentinel in ready:
                    worker.process.join()
                    log.error(
                        "%s %s (%s); stopping the other workers: the server exits",
                        worker.name,
                        "exited unexpectedly" if serving else "failed to start",
                        describe_exit(worker.process.exitcode),
                    )
                    self.stop()
                    return 1 if serving else 2
            if not serving and all(w.ready for w in self.workers):
                serving = True
                # every worker holds the listening socket now: the parent's copy would keep
                # it listening after the workers close theirs on SIGTERM, queueing new
                # connections that nobody accepts until they are reset at the very end
                if self._sock is not None:
                    self._sock.close()
                log.info("%d workers serve on one socket", len(self.workers))
                if on_ready is not None:
                    on_ready(url)

    def stop(self) -> int:
        """Ask every worker to drain and stop, wait for them (a second signal or the
        deadline kills the rest); 0 when each one ended cleanly."""
        from prometheus_client.multiprocess import mark_process_dead

        for worker in self.workers:
            with contextlib.suppress(OSError):  # a worker already gone closed its end
                worker.control.send(STOP)
        signals_before = len(self.received)
        deadline = time.monotonic() + self.spec.settings.drain_timeout_s + STOP_GRACE_S
        while True:
            # one look per round: `is_alive` reaps an exited worker, so a worker that ends
            # between two looks must not leave an empty wait that only the deadline ends
            alive = [w.process.sentinel for w in self.workers if w.process.is_alive()]
            if not alive:
                break
            left = deadline - time.monotonic()
            if left <= 0 or len(self.received) > signals_before:
                why = "the deadline" if left <= 0 else "a second signal"
                for worker in self.workers:
                    if worker.process.is_alive():
                        log.error("%s did not stop before %s; killing it", worker.name, why)
                        worker.process.kill()
                break
            connection.wait([self._wake_read, *alive], timeout=left)
            self._drain_wake()
        clean = True
        for worker in self.workers:
            worker.process.join(10)
            worker.control.close()
            if worker.events is not None:
                worker.events.close()
                worker.events = None
            clean = clean and worker.process.exitcode in CLEAN_EXITS
            if worker.process.pid is not None:  # its live gauges no longer count
                mark_process_dead(worker.process.pid, str(self.spec.metrics_dir))  # type: ignore[no-untyped-call]
        log.info("all workers stopped")
        return 0 if clean else 1

    def kill_left_over(self) -> None:
        """After an error in the parent itself: no worker outlives it."""
        for worker in self.workers:
            if worker.process.is_alive():
                log.error("%s still runs as the parent ends; killing it", worker.name)
                worker.process.kill()
            worker.process.join(10)

    def _drain_wake(self) -> None:
        """Empty the wake-up socket (its bytes only say 'a signal came')."""
        with contextlib.suppress(BlockingIOError):
            while self._wake_read.recv(4096):
                pass


def bind_socket(host: str, port: int) -> socket.socket:
    """The TCP socket every worker accepts on, bound (not yet listening: a connection
    before the first worker serves is refused, as with a single server)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
            "choose another --port (0 picks a free one) or --host."
        ) from None
    return sock


def threads_per_worker(workers: int) -> int:
    """torch's CPU threads per worker: the cores (affinity, cgroup quota) shared out.
    By default each process's OpenMP team takes every core: on a 16-core H200 host two
    workers so made served the demo classifier 7x slower than one process, and 2.1x
    faster than it with 8 threads each."""
    from torchrig.facts.cgroup import read_cgroup
    from torchrig.facts.system import read_cpu_count

    cores = read_cpu_count() or 1
    quota = read_cgroup().cpu_quota_cores
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores // workers)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """`values` in os.environ while the block runs (spawned children inherit them)."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _read_event(worker: _Worker, events: connection.Connection) -> None:
    """The worker's one message: its pid once it serves (EOF when it ended)."""
    try:
        events.recv()
    except (EOFError, OSError):
        events.close()
        worker.events = None
        return
    worker.ready = True
    log.info("%s serves", worker.name)


def describe_exit(code: int | None) -> str:
    """A process exit code in words: "exit code 3", "killed by SIGKILL"."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


# ---- in the worker process ----------------------------------------------------------------


def run_worker(
    index: int,
    sock: socket.socket,
    spec: WorkerSpec,
    control: connection.Connection,
    events: connection.Connection,
) -> None:
    """A worker's life: its own state and models, uvicorn on the shared socket until the
    parent says stop (or is gone), or a signal of its own."""
    os.setpgrp()  # a terminal's Ctrl+C goes to the parent alone, which stops us once
    from torchrig.server.logs import configure_logging
    from torchrig.server.runner import build_state, make_server

    settings = spec.settings
    configure_logging(settings.log_format, settings.log_level.upper())  # type: ignore[arg-type]
    cache_dir = spec.cache_dir / f"worker-{index}"
    cache_dir.mkdir(parents=True, exist_ok=True)
    state = build_state(
        spec.repository,
        settings,
        cache_dir=cache_dir,
        management_token=spec.management_token,
        metrics_dir=spec.metrics_dir,
    )
    server = make_server(state, on_ready=lambda _url: events.send(os.getpid()))

    def follow_parent() -> None:
        try:
            control.recv()
            why = "the parent asked to stop"
        except (EOFError, OSError):
            why = "the parent process is gone"
        log.info("worker %d: %s: draining in-flight requests, then releasing models", index, why)
        state.shutting_down = True  # readiness false and 503s before anything else
        server.should_exit = True

    threading.Thread(target=follow_parent, name="torchrig-parent", daemon=True).start()
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(2)
