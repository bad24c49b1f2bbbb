"""`torchrig serve --workers N` as real processes: one port, several workers, one set of
metrics, and no process left behind whichever process ends first."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli_runs import torchrig
from doubles import until
from torchrig.server.workers import threads_per_worker

DEADLINE_S = 60.0
STARTED = re.compile(r"^worker (\d+) started \(pid (\d+)\)$")


class Server:
    """`python -m torchrig serve ARGS` with its JSON log lines collected as they come."""

    def __init__(self, args: list[str], cwd: Path, extra_env: dict[str, str] | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHRIG_")}
        env.pop("OMP_NUM_THREADS", None)
        env.update(extra_env or {})
        self.stderr = cwd / "stderr.txt"
        with self.stderr.open("w") as errors:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "torchrig", "serve", *args, "--log-format", "json"],
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
                env=env,
                cwd=cwd,
            )
        self.records: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()  # drained all along: a full pipe would block the workers

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.records.append(json.loads(line))

    def until(self, find: Callable[[], Any], what: str) -> Any:
        """Poll `find()` until it gives something (or fail, with the logs)."""
        return until(find, lambda: f"{what} in {DEADLINE_S} s:\n{self.log()}", DEADLINE_S, 0.02)

    def url(self) -> str:
        def served() -> str:
            if self.process.poll() is not None:
                raise AssertionError(f"the server ended ({self.process.returncode}):\n{self.log()}")
            return next((str(r["url"]) for r in list(self.records) if r.get("url")), "")

        return str(self.until(served, "serving line"))

    def worker_pids(self) -> set[int]:
        return {
            int(match.group(2))
            for record in list(self.records)
            if (match := STARTED.match(record.get("message", "")))
        }

    def messages(self) -> str:
        return "\n".join(str(r.get("message")) for r in list(self.records))

    def log(self) -> str:
        return f"{self.messages()}\nstderr:\n{self.stderr.read_text()}"

    def wait(self) -> int:
        code = self.process.wait(DEADLINE_S)
        self._reader.join(DEADLINE_S)
        return code

    def close(self, workers: set[int]) -> None:
        """Whatever the test left running goes (the workers are in their own group)."""
        for pid in [self.process.pid, *workers]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(DEADLINE_S)
        if self.process.stdout is not None:
            self.process.stdout.close()


def alive(pid: int) -> bool:
    """The process exists and has not exited (a zombie waiting for its reaper has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(*args: str, extra_env: dict[str, str] | None = None) -> Server:
        started.append(Server(list(args), tmp_path, extra_env))
        return started[-1]

    yield start
    for one in started:
        one.close(one.worker_pids())


def ranker_body(i: int) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "dense", "datatype": "FP32", "shape": [1, 13], "data": [0.1 * i] * 13},
            {"name": "sparse", "datatype": "INT64", "shape": [1, 26], "data": [i] * 26},
        ]
    }


def success_total(metrics: str, model: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("torchrig_request_success_total{") and f'model="{model}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


class Load:
    """Ranker requests over several connections, with who answered what."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent = 0
        self.answers: dict[int, set[float]] = {}  # input number -> the answers it got
        self.by_worker: dict[int, int] = {}  # pid -> requests it answered
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def client(self, rounds: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:  # one connection each
            for i in range(rounds):
                reply = http.post("/v2/models/ranker/infer", json=ranker_body(i % 4))
                with self._lock:
                    self.sent += 1
                    if reply.status_code != 200:
                        self.errors.append(reply.text)
                        continue
                    (probability,) = reply.json()["outputs"][0]["data"]
                    self.answers.setdefault(i % 4, set()).add(probability)
                    worker = int(reply.headers["torchrig-worker"])
                    self.by_worker[worker] = self.by_worker.get(worker, 0) + 1

    def clients(self, count: int, rounds: int) -> None:
        threads = [threading.Thread(target=self.client, args=(rounds,)) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(DEADLINE_S)


def test_two_workers_share_the_port_and_the_metrics(server: Callable[..., Server]) -> None:
    serve = server("--demo", "--workers", "2", "--port", "0", "--grpc-port", "0")
    url = serve.url()
    pids = serve.worker_pids()
    assert len(pids) == 2, serve.log()
    assert all(parent_of(pid) == serve.process.pid for pid in pids)
    assert httpx.get(f"{url}/v2/health/ready").status_code == 200
    # the workers share the CPUs out, and meet in one private metrics directory
    environments = [environment(pid) for pid in pids]
    assert {e["OMP_NUM_THREADS"] for e in environments} == {str(threads_per_worker(2))}
    (metrics_dir,) = {Path(e["PROMETHEUS_MULTIPROC_DIR"]) for e in environments}
    assert metrics_dir.is_dir()
    assert "PROMETHEUS_MULTIPROC_DIR" not in environment(serve.process.pid)

    load = Load(url)
    load.clients(8, 20)

    def both_answered() -> bool:  # new connections until each worker took one
        if set(load.by_worker) != pids:
            load.client(1)
        return set(load.by_worker) == pids

    serve.until(both_answered, "answer from each worker")
    assert not load.errors, load.errors[:3]
    assert sum(load.by_worker.values()) == load.sent >= 160
    # both workers serve the same model: an input has one answer, whoever computed it
    assert all(len(values) == 1 for values in load.answers.values()), load.answers
    assert all(0.0 < value < 1.0 for values in load.answers.values() for value in values)

    # a scrape reaches one worker and reports the requests of both
    scraped_by: set[int] = set()

    def every_scrape_counts_all() -> bool:
        reply = httpx.get(f"{url}/metrics")  # a new connection: either worker answers
        assert reply.status_code == 200
        if success_total(reply.text, "ranker") != load.sent:
            scraped_by.clear()  # the last answers may still be counted: look again
            return False
        scraped_by.add(int(reply.headers["torchrig-worker"]))
        return scraped_by == pids

    serve.until(every_scrape_counts_all, "scrape from each worker with every request")
    metrics = httpx.get(f"{url}/metrics").text
    assert 'torchrig_model_ready{model="ranker",version="1"} 1.0' in metrics
    assert 'torchrig_inflight_requests{model="ranker"} 0.0' in metrics
    assert "pid=" not in metrics  # combined across workers, not one series per process
    assert httpx.get(f"{url}/v2").headers["torchrig-worker"] in {str(p) for p in pids}

    # a worker dies: the other one is stopped and the server exits non-zero
    victim, other = sorted(pids)
    os.kill(victim, signal.SIGKILL)
    assert serve.wait() == 1, serve.log()
    serve.until(lambda: not alive(other), "end of the other worker")
    assert f"(pid {victim}) exited unexpectedly (killed by SIGKILL)" in serve.messages()
    assert not metrics_dir.exists()


def inflight(url: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith('torchrig_inflight_requests{model="slow"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_sigterm_drains_every_worker_and_exits_0(
    server: Callable[..., Server], slow_repo: Path
) -> None:
    serve = server(
        str(slow_repo),
        "--workers",
        "2",
        "--port",
        "0",
        "--grpc-port",
        "0",
        "--drain-timeout-s",
        "20",
    )
    url = serve.url()
    pids = serve.worker_pids()
    metrics_dir = Path(environment(min(pids))["PROMETHEUS_MULTIPROC_DIR"])
    results: list[tuple[int, int, Any]] = []

    def call(i: int) -> None:
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [i] * 4}]}
        reply = httpx.post(f"{url}/v2/models/slow/infer", json=body, timeout=DEADLINE_S)
        results.append((i, reply.status_code, reply.json()))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    # in flight across both workers, as one number
    serve.until(lambda: inflight(url) == 6, "six requests in flight")
    serve.process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(DEADLINE_S)
    assert sorted(status for _, status, _ in results) == [200] * 6, results
    for i, _, body in results:
        assert body["outputs"][0]["data"] == [i + 1.0] * 4
    assert serve.wait() == 0, serve.log()
    assert not any(alive(pid) for pid in pids)
    assert "all workers stopped" in serve.messages()
    assert not metrics_dir.exists()


def test_workers_stop_when_the_parent_is_killed(
    server: Callable[..., Server], slow_repo: Path
) -> None:
    serve = server(str(slow_repo), "--workers", "2", "--port", "0", "--grpc-port", "0")
    serve.url()
    pids = serve.worker_pids()
    assert len(pids) == 2
    serve.process.kill()
    serve.until(lambda: not any(alive(pid) for pid in pids), "end of every worker")
    assert "the parent process is gone" in serve.messages()


@pytest.mark.parametrize(
    ("args", "environ", "says"),
    [
        (["--workers", "0"], {}, "--workers 0: give 1 or more"),
        ([], {"TORCHRIG_SERVE_WORKERS": "-1"}, "--workers -1: give 1 or more"),
        (["--workers", "2", "--control-mode", "explicit"], {}, "would reach one worker only"),
    ],
)
def test_bad_worker_counts_are_refused(
    tmp_path: Path, args: list[str], environ: dict[str, str], says: str
) -> None:
    done = torchrig("serve", "--demo", *args, cwd=tmp_path, env=environ, timeout_s=DEADLINE_S)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("Error: "), done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr


SIGTERM_RUNS = 20
SIGTERM_CHUNKS = 4  # separate tests, so parallel test workers share the 20 runs
DRAIN_S = 5.0
EXIT_MARGIN_S = 5.0


def _sigterm_under_load(serve: Server) -> tuple[float, float, list[tuple[float, Any]]]:
    """Load the server from 6 client threads (a fresh connection per request), SIGTERM it
    once requests are in flight; (seconds from SIGTERM to the exit, requests in flight at
    the signal, [(start relative to the signal, outcome)])."""
    url = serve.url()
    stop = threading.Event()
    outcomes: list[tuple[float, Any]] = []

    def load(i: int) -> None:
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [i] * 4}]}
        while not stop.is_set():
            started = time.monotonic()
            try:
                reply = httpx.post(f"{url}/v2/models/slow/infer", json=body, timeout=DEADLINE_S)
                outcomes.append((started, reply.status_code))
            except httpx.ConnectError:  # the listening socket is closed: never accepted
                outcomes.append((started, "refused"))
                return
            except httpx.ReadError:  # connected while the listener closed, never read
                outcomes.append((started, "reset"))
            except httpx.RemoteProtocolError as exc:  # accepted, closed unread at shutdown
                unread = "without sending a response" in str(exc)
                outcomes.append((started, "reset" if unread else repr(exc)))
            except httpx.HTTPError as exc:
                outcomes.append((started, repr(exc)))

    threads = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(6)]
    for thread in threads:
        thread.start()
    in_flight = serve.until(lambda: max(inflight(url) - 3, 0), "requests in flight") + 3
    signalled = time.monotonic()
    serve.process.send_signal(signal.SIGTERM)
    try:
        serve.process.wait(DRAIN_S + 60)
    finally:
        exited = time.monotonic() - signalled
        stop.set()
        for thread in threads:
            thread.join(DEADLINE_S)
            assert not thread.is_alive(), "a request hangs after the server exited"
    return exited, in_flight, [(started - signalled, outcome) for started, outcome in outcomes]


@pytest.mark.long
@pytest.mark.timeout(600)
@pytest.mark.parametrize("chunk", range(SIGTERM_CHUNKS))
def test_every_sigterm_under_load_exits_within_the_drain_timeout(
    server: Callable[..., Server], slow_repo: Path, chunk: int
) -> None:
    """20 times (in 4 chunks of 5): `serve --workers 2` under load, SIGTERM; it exits within
    the drain timeout + 5 s (the pod's grace period holds it); every request in flight at
    the signal is answered 200, and none hangs or fails otherwise. A request that arrives
    later is answered 503 while draining, its connection refused once the listener is
    closed, or reset when it lands in the listen queue as the workers close the listener
    (uvicorn never reads those; in a pod the preStop sleep keeps new connections away by
    then). The client's own clock cannot tell "just before" from "just after" the signal on
    a busy machine, so the in-flight count, not a timestamp, names the accepted requests."""
    args = ["--workers", "2", "--port", "0", "--grpc-port", "0", "--drain-timeout-s", "5"]
    exits = []
    for run in range(chunk, SIGTERM_RUNS, SIGTERM_CHUNKS):
        serve = server(str(slow_repo), *args)
        exited, in_flight, outcomes = _sigterm_under_load(serve)
        exits.append(round(exited, 2))
        timeline = "\n".join(f"{r.get('time')} {r.get('message')}" for r in serve.records)
        assert exited <= DRAIN_S + EXIT_MARGIN_S, f"run {run}: {exits}\n{timeline}"
        assert serve.process.returncode == 0, serve.log()
        answered = [outcome for started, outcome in outcomes if started < 0 and outcome == 200]
        assert len(answered) >= in_flight, f"run {run}: {in_flight}, {sorted(outcomes)}"
        seen = {outcome for _, outcome in outcomes}
        assert seen <= {200, 503, "refused", "reset"}, f"run {run}: {sorted(outcomes)}"
        serve.close(serve.worker_pids())


def test_each_worker_gets_its_share_of_the_gpus(
    server: Callable[..., Server], slow_repo: Path
) -> None:
    """The device list injected as a pod with 4 GPUs has it (the CPU build of torch
    ignores it): 2 workers take 2 GPUs each, none stacks on GPU 0, and since each places
    its replicas on both of its GPUs (device = "auto"), nothing idles: no warning."""
    serve = server(
        str(slow_repo),
        "--workers",
        "2",
        "--port",
        "0",
        "--grpc-port",
        "0",
        extra_env={"CUDA_VISIBLE_DEVICES": "0,1,2,3"},
    )
    serve.url()
    shares = sorted(environment(pid)["CUDA_VISIBLE_DEVICES"] for pid in serve.worker_pids())
    assert shares == ["0,2", "1,3"]
    assert "GPUs for 2 workers" not in serve.messages()  # an even split: nothing to say
    assert environment(serve.process.pid)["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
