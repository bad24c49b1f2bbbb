"""torchrig serve next to MLServer, LitServe and a bare ASGI callable: the demo ranker,
one row per request, 64 concurrent connections, all in one run.

Servers (each one process group on 127.0.0.1, an OS-chosen free port, 1 worker, started,
polled until ready, checked for the right answer, warmed up, measured, stopped):
  torchrig         `python -m torchrig serve REPO` (demo repository: ranker max_batch_size 64,
                   no queue delay), V2 JSON body
  torchrig-binary  the same server, the binary tensor extension (binary inputs and output)
  asgi             bare ASGI callable under uvicorn+httptools+uvloop: msgspec JSON, the module
                   per request, no batching (the ceiling for per-request serving)
  mlserver         MLServer 1.7.1, custom MLModel runtime, adaptive batching 64 / 2 ms, V2 JSON
  litserve         LitServe 0.2.19, batch 64 / 2 ms, POST /predict {"dense": [...], "sparse": [...]}
MLServer and LitServe are installed into their own virtual environments under
~/.cache/torchrig-bench/venvs (reused when present) with the same torch release; uv is used
when it is on PATH (PIP_FIND_LINKS is passed on as --find-links), pip otherwise. Where one
cannot be installed the run says so and measures the rest.

Load: wrk (-t2 -c64, `--warmup` s, then `--duration` s) with serve_compare/post.lua, which
prints exact p50/p99; without wrk, a small asyncio HTTP/1.1 generator (said in the output).
Every server gets the same torch thread count (OMP_NUM_THREADS, torch.set_num_threads).

Run: `python benchmarks/serve_compare.py [--only torchrig,asgi] [--duration 10] [--rounds 1]
[--json F]` (--only names: torchrig, torchrig-binary, asgi, mlserver, litserve). About 2.5 min
for everything on a 2-core box (first run: plus the peer installs, seconds with uv).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import torch

HERE = Path(__file__).resolve().parent / "serve_compare"
LUA = HERE / "post.lua"
SERVERS = ("torchrig", "torchrig-binary", "asgi", "mlserver", "litserve")
MLSERVER_VERSION = "1.7.1"
LITSERVE_VERSION = "0.2.19"
MAX_BATCH_SIZE = 64
BATCH_TIME_S = 0.002
TOLERANCE = 1e-5
READY_DEADLINE_S = 180.0


@dataclass
class Body:
    data: bytes
    content_type: str = "application/json"
    header_length: int | None = None  # Inference-Header-Content-Length (binary extension)

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": self.content_type}
        if self.header_length is not None:
            headers["Inference-Header-Content-Length"] = str(self.header_length)
        return headers


@dataclass
class Server:
    name: str
    label: str
    port: int
    command: list[str]
    ready_path: str
    infer_path: str
    bodies: list[Body]  # bodies[0] is the benchmark body; each has an expected answer
    expected: list[float]
    read_probability: Callable[[httpx.Response], float]
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Result:
    name: str
    label: str
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    requests: int = 0
    errors: int = 0
    note: str = ""
    # the server process's user + system CPU over the measured load, per answered request
    # (robust to other work on a shared box, where wall-clock rates are not)
    cpu_us: float | None = None


@dataclass
class LoadResult:
    requests: int
    seconds: float
    p50_us: float
    p99_us: float
    errors: int
    non_2xx: int


# ---------------------------------------------------------------- bodies and answers


def v2_json_body(dense: torch.Tensor, sparse: torch.Tensor) -> Body:
    request = {
        "inputs": [
            {"name": "dense", "shape": [1, 13], "datatype": "FP32", "data": dense.tolist()},
            {"name": "sparse", "shape": [1, 26], "datatype": "INT64", "data": sparse.tolist()},
        ]
    }
    return Body(json.dumps(request, separators=(",", ":")).encode())


def v2_binary_body(dense: torch.Tensor, sparse: torch.Tensor) -> Body:
    raw_dense = dense.numpy().astype("<f4").tobytes()
    raw_sparse = sparse.numpy().astype("<i8").tobytes()
    header = {
        "inputs": [
            {
                "name": "dense",
                "shape": [1, 13],
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(raw_dense)},
            },
            {
                "name": "sparse",
                "shape": [1, 26],
                "datatype": "INT64",
                "parameters": {"binary_data_size": len(raw_sparse)},
            },
        ],
        "parameters": {"binary_data_output": True},
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    return Body(head + raw_dense + raw_sparse, "application/octet-stream", len(head))


def litserve_body(dense: torch.Tensor, sparse: torch.Tensor) -> Body:
    request = {"dense": dense.flatten().tolist(), "sparse": sparse.flatten().tolist()}
    return Body(json.dumps(request, separators=(",", ":")).encode())


def v2_json_probability(response: httpx.Response) -> float:
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    data = outputs["probability"]["data"]
    while isinstance(data, list):
        data = data[0]
    return float(data)


def v2_binary_probability(response: httpx.Response) -> float:
    import numpy as np

    length = int(response.headers["inference-header-content-length"])
    header = json.loads(response.content[:length])
    (output,) = header["outputs"]
    size = int(output["parameters"]["binary_data_size"])
    raw = response.content[length : length + size]
    return float(np.frombuffer(raw, dtype="<f4")[0])


def litserve_probability(response: httpx.Response) -> float:
    return float(response.json()["probability"])


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop(process: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """SIGINT to the server's own process group, SIGKILL to that group if it lingers."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(process: subprocess.Popen[bytes], url: str, deadline_s: float) -> float:
    """Poll `url` until it answers 200; returns seconds waited. Raises if the process died."""
    start = time.perf_counter()
    with httpx.Client(timeout=2.0) as client:
        while time.perf_counter() - start < deadline_s:
            if process.poll() is not None:
                raise RuntimeError(f"exited with status {process.returncode} before ready")
            try:
                if client.get(url).status_code == 200:
                    return time.perf_counter() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"not ready within {deadline_s:.0f} s")


def verify(server: Server, base: str) -> str:
    """Empty string when every probe body gets the in-process module's probability."""
    with httpx.Client(timeout=30.0) as client:
        for body, expected in zip(server.bodies, server.expected, strict=True):
            response = client.post(
                base + server.infer_path, content=body.data, headers=body.headers()
            )
            if response.status_code != 200:
                return f"status {response.status_code}: {response.text[:200]}"
            got = server.read_probability(response)
            if abs(got - expected) > TOLERANCE:
                return f"probability {got!r}, expected {expected!r} (tolerance {TOLERANCE})"
    return ""


# ---------------------------------------------------------------- load generators


def run_wrk(
    url: str, body_file: Path, body: Body, seconds: float, args: argparse.Namespace
) -> LoadResult:
    env = dict(os.environ)
    env["BENCH_BODY_FILE"] = str(body_file)
    env["BENCH_CONTENT_TYPE"] = body.content_type
    env["BENCH_HEADER_LENGTH"] = "" if body.header_length is None else str(body.header_length)
    command = [
        "wrk",
        f"-t{args.wrk_threads}",
        f"-c{args.connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "30s",
        "-s",
        str(LUA),
        url,
    ]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=seconds + 120, check=False
    )
    line = next((s for s in done.stdout.splitlines() if s.startswith("BENCH_RESULT")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result: {done.stdout[-500:]} {done.stderr[-500:]}")
    fields = dict(item.split("=") for item in line.split()[1:])
    values = {k: int(v) for k, v in fields.items()}
    return LoadResult(
        requests=values["requests"],
        seconds=values["duration_us"] / 1e6,
        p50_us=values["p50_us"],
        p99_us=values["p99_us"],
        errors=values["connect"] + values["read"] + values["write"] + values["timeout"],
        non_2xx=values["status"],
    )


async def _asyncio_load(url: str, body: Body, seconds: float, connections: int) -> LoadResult:
    """Fallback when wrk is missing: keep-alive HTTP/1.1 POSTs on `connections` sockets."""
    parsed = httpx.URL(url)
    head = (
        f"POST {parsed.raw_path.decode()} HTTP/1.1\r\nHost: {parsed.host}:{parsed.port}\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in body.headers().items())
        + f"Content-Length: {len(body.data)}\r\n\r\n"
    )
    request = head.encode() + body.data
    latencies: list[float] = []
    failures = [0, 0]  # errors, non-2xx
    stop_at = time.perf_counter() + seconds

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(parsed.host, parsed.port)
        try:
            while time.perf_counter() < stop_at:
                sent = time.perf_counter()
                writer.write(request)
                status_line = await reader.readline()
                length, chunked = 0, False
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    name = name.strip().lower()
                    if name == "content-length":
                        length = int(value)
                    elif name == "transfer-encoding":
                        chunked = "chunked" in value.lower()
                while chunked and (size := int((await reader.readline()).strip(), 16)):
                    await reader.readexactly(size + 2)  # the chunk and its CRLF
                if chunked:
                    await reader.readline()  # the CRLF after the last (empty) chunk
                await reader.readexactly(0 if chunked else length)
                latencies.append(time.perf_counter() - sent)
                if not status_line.split(b" ")[1].startswith(b"2"):
                    failures[1] += 1
        except (OSError, asyncio.IncompleteReadError, IndexError):
            failures[0] += 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(q: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e6 if latencies else 0.0
        )

    return LoadResult(len(latencies), elapsed, pct(0.50), pct(0.99), failures[0], failures[1])


def run_load(
    url: str, body_file: Path, body: Body, seconds: float, args: argparse.Namespace
) -> LoadResult:
    if args.wrk:
        return run_wrk(url, body_file, body, seconds, args)
    return asyncio.run(_asyncio_load(url, body, seconds, args.connections))


# ---------------------------------------------------------------- peer environments


def pip_find_links() -> list[str]:
    return [p for p in os.environ.get("PIP_FIND_LINKS", "").split() if p]


def ensure_venv(path: Path, requirements: list[str], log: Path) -> tuple[Path | None, str]:
    """A virtual environment at `path` with `requirements`; (python, "") or (None, why)."""
    python = path / "bin" / "python"
    marker = path / "torchrig-bench-requirements.txt"
    wanted = "\n".join(requirements) + "\n"
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python, ""
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    if Path(uv).exists():
        links = [arg for link in pip_find_links() for arg in ("--find-links", link)]
        steps = [
            [uv, "venv", "-q", "--python", sys.executable, str(path)],
            [uv, "pip", "install", "-q", "--python", str(python), *links, *requirements],
        ]
    else:
        steps = [
            [sys.executable, "-m", "venv", str(path)],
            [str(python), "-m", "pip", "install", "-q", *requirements],
        ]
    with log.open("ab") as out:
        for step in steps:
            try:
                done = subprocess.run(step, stdout=out, stderr=out, timeout=900, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                return None, f"{Path(step[0]).name} failed: {exc}"
            if done.returncode != 0:
                shutil.rmtree(path, ignore_errors=True)
                return (
                    None,
                    f"`{' '.join(step[:3])} ...` failed (exit {done.returncode}): {tail(log, 3)}",
                )
    marker.write_text(wanted)
    return python, ""


# ---------------------------------------------------------------- the servers


def torch_requirement() -> str:
    return f"torch=={torch.__version__.split('+')[0]}"


@dataclass
class Setup:
    """What every server builder needs: the work directory, options and probe rows."""

    work: Path
    args: argparse.Namespace
    rows: list[tuple[torch.Tensor, torch.Tensor]]
    expected: list[float]
    notes: dict[str, str] = field(default_factory=dict)

    def bodies(self, make: Callable[[torch.Tensor, torch.Tensor], Body]) -> list[Body]:
        return [make(dense, sparse) for dense, sparse in self.rows]


PEER_ENV = {"PYTHONPATH": str(HERE)}


def torchrig_servers(setup: Setup, selected: list[str]) -> list[Server]:
    from torchrig.demo import build_demo_repository

    repo = build_demo_repository(setup.work / "repo")
    port = free_port()
    command = [
        *(sys.executable, "-m", "torchrig", "serve", str(repo)),
        *("--host", "127.0.0.1", "--port", str(port), "--log-format", "text"),
        *("--grpc-port", "0"),  # gRPC on as by default, on a free port (8001 may be taken)
    ]
    servers = []
    for name, label, body, read in (
        ("torchrig", "torchrig (V2 JSON)", v2_json_body, v2_json_probability),
        ("torchrig-binary", "torchrig (V2 binary)", v2_binary_body, v2_binary_probability),
    ):
        if name in selected:
            servers.append(
                Server(
                    name=name,
                    label=label,
                    port=port,
                    command=command,
                    ready_path="/v2/health/ready",
                    infer_path="/v2/models/ranker/infer",
                    bodies=setup.bodies(body),
                    expected=setup.expected,
                    read_probability=read,
                )
            )
    return servers


def asgi_server(setup: Setup) -> Server:
    port = free_port()
    command = [
        *(sys.executable, "-m", "uvicorn", "asgi_app:app", "--app-dir", str(HERE)),
        *("--host", "127.0.0.1", "--port", str(port), "--http", "httptools", "--loop", "uvloop"),
        *("--lifespan", "off", "--no-access-log", "--log-level", "warning", "--workers", "1"),
    ]
    return Server(
        name="asgi",
        label="bare ASGI (uvicorn, no batching)",
        port=port,
        command=command,
        ready_path="/",
        infer_path="/v2/models/ranker/infer",
        bodies=setup.bodies(v2_json_body),
        expected=setup.expected,
        read_probability=v2_json_probability,
        env=PEER_ENV,
    )


def mlserver_server(setup: Setup) -> Server | None:
    python, why = ensure_venv(
        setup.args.venv_dir / f"mlserver-{MLSERVER_VERSION}",
        # uvloop 0.22 raises in get_event_loop() without a loop, which kills MLServer 1.7.1's
        # inference workers at start ("There is no current event loop in thread 'MainThread'")
        [torch_requirement(), f"mlserver=={MLSERVER_VERSION}", "uvloop<0.22"],
        setup.work / "mlserver-install.log",
    )
    if python is None:
        setup.notes["mlserver"] = f"MLServer {MLSERVER_VERSION} could not be installed: {why}"
        return None
    port = free_port()
    folder = setup.work / "mlserver"
    (folder / "ranker").mkdir(parents=True)
    settings = {
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "metrics_endpoint": None,
        "debug": False,  # no access log, like the others
        "parallel_workers": setup.args.mlserver_workers,
    }
    model = {
        "name": "ranker",
        "implementation": "mlserver_runtime.RankerRuntime",
        "max_batch_size": MAX_BATCH_SIZE,
        "max_batch_time": BATCH_TIME_S,
    }
    (folder / "settings.json").write_text(json.dumps(settings, indent=2))
    (folder / "ranker" / "model-settings.json").write_text(json.dumps(model, indent=2))
    command = [str(python.parent / "mlserver"), "start", str(folder)]
    label = f"MLServer {MLSERVER_VERSION} (V2 JSON, adaptive batch)"
    return Server(
        name="mlserver",
        label=label,
        port=port,
        command=command,
        ready_path="/v2/models/ranker/ready",
        infer_path="/v2/models/ranker/infer",
        bodies=setup.bodies(v2_json_body),
        expected=setup.expected,
        read_probability=v2_json_probability,
        env=PEER_ENV,
    )


def litserve_server(setup: Setup) -> Server | None:
    python, why = ensure_venv(
        setup.args.venv_dir / f"litserve-{LITSERVE_VERSION}",
        [torch_requirement(), f"litserve=={LITSERVE_VERSION}", "numpy"],
        setup.work / "litserve-install.log",
    )
    if python is None:
        setup.notes["litserve"] = f"LitServe {LITSERVE_VERSION} could not be installed: {why}"
        return None
    port = free_port()
    app = HERE / "litserve_app.py"
    command = [str(python), str(app), str(port), str(MAX_BATCH_SIZE), str(BATCH_TIME_S)]
    label = f"LitServe {LITSERVE_VERSION} (own JSON, batch)"
    return Server(
        name="litserve",
        label=label,
        port=port,
        command=command,
        ready_path="/health",
        infer_path="/predict",
        bodies=setup.bodies(litserve_body),
        expected=setup.expected,
        read_probability=litserve_probability,
        env=PEER_ENV,
    )


def build_servers(setup: Setup, selected: list[str]) -> list[Server]:
    """The servers to measure, in SERVERS order; peers that cannot be set up go to notes."""
    from torchrig.demo import ranker

    module, _ = ranker()  # the bare ASGI app and the peers load these weights (tensors only)
    torch.save(module.state_dict(), setup.work / "ranker_state.pt")
    servers: list[Server | None] = []
    if "torchrig" in selected or "torchrig-binary" in selected:
        servers.extend(torchrig_servers(setup, selected))
    if "asgi" in selected:
        servers.append(asgi_server(setup))
    if "mlserver" in selected:
        servers.append(mlserver_server(setup))
    if "litserve" in selected:
        servers.append(litserve_server(setup))
    order = {name: i for i, name in enumerate(SERVERS)}
    return sorted((s for s in servers if s is not None), key=lambda s: order[s.name])


def measure(server: Server, setup: Setup, base_env: dict[str, str]) -> Result:
    work, args, port = setup.work, setup.args, server.port
    result = Result(server.name, server.label)
    log = work / f"{server.name}.log"
    env = {**base_env, **server.env}
    with log.open("wb") as out:
        process = subprocess.Popen(
            server.command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=work,
            start_new_session=True,  # stop() signals the whole group (peers fork workers)
        )
    base = f"http://127.0.0.1:{port}"
    try:
        waited = wait_ready(process, base + server.ready_path, READY_DEADLINE_S)
        print(f"  {server.name}: ready after {waited:.1f} s on port {port}", flush=True)
        wrong = verify(server, base)
        if wrong:
            result.note = f"wrong answer, not measured: {wrong}"
            return result
        body_file = work / f"{server.name}.body"
        body_file.write_bytes(server.bodies[0].data)
        url = base + server.infer_path
        run_load(url, body_file, server.bodies[0], args.warmup, args)
        cpu_before = process_cpu_seconds(process.pid)
        load = run_load(url, body_file, server.bodies[0], args.duration, args)
        cpu_used = process_cpu_seconds(process.pid) - cpu_before
        good = load.requests - load.non_2xx
        result.cpu_us = 1e6 * cpu_used / good if good else None
        result.rps = good / load.seconds
        result.p50_ms = load.p50_us / 1000
        result.p99_ms = load.p99_us / 1000
        result.requests = load.requests
        result.errors = load.errors + load.non_2xx
        if result.errors:
            result.note = f"{load.non_2xx} non-2xx, {load.errors} socket errors/timeouts"
    except (RuntimeError, httpx.HTTPError, subprocess.TimeoutExpired, KeyError, ValueError) as exc:
        result.note = f"failed: {exc}\n{tail(log, 8)}"
    finally:
        stop(process)
    return result


# ---------------------------------------------------------------- report


def median_result(results: list[Result]) -> Result:
    """One row from several rounds: the median of each measured number."""
    first = results[0]
    measured = [r for r in results if r.rps is not None]
    notes = sorted({r.note for r in results if r.note})
    merged = Result(first.name, first.label, note="; ".join(notes))
    merged.requests = sum(r.requests for r in results)
    merged.errors = sum(r.errors for r in results)
    if measured:
        merged.rps = statistics.median(r.rps for r in measured if r.rps is not None)
        merged.p50_ms = statistics.median(r.p50_ms for r in measured if r.p50_ms is not None)
        merged.p99_ms = statistics.median(r.p99_ms for r in measured if r.p99_ms is not None)
        cpu = [r.cpu_us for r in measured if r.cpu_us is not None]
        merged.cpu_us = statistics.median(cpu) if cpu else None
    return merged


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}x"


def report(results: list[Result], notes: dict[str, str]) -> list[str]:
    by_name = {r.name: r for r in results}
    ml = by_name.get("mlserver")
    asgi = by_name.get("asgi")
    ml_rps = ml.rps if ml else None
    asgi_rps = asgi.rps if asgi else None
    rows = [("server", "req/s", "p50 ms", "p99 ms", "vs MLServer", "vs bare ASGI")]
    for r in results:
        rps_text, p50, p99_text = fmt(r.rps, ",.0f"), fmt(r.p50_ms, ".1f"), fmt(r.p99_ms, ".1f")
        rows.append(
            (r.label, rps_text, p50, p99_text, ratio(r.rps, ml_rps), ratio(r.rps, asgi_rps))
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    for r in results:
        if r.note:
            lines.append(f"note {r.name}: {r.note}")
    for name, note in notes.items():
        lines.append(f"note {name}: {note}")
    ours = by_name.get("torchrig")
    rps = ours.rps if ours else None

    def goal(text: str, ok: bool | None, missing: str) -> str:
        return f"{text}: " + (f"n/a ({missing})" if ok is None else "met" if ok else "MISSED")

    p99, ml_p99 = (ours.p99_ms if ours else None), (ml.p99_ms if ml else None)
    no_ml = "MLServer or torchrig not measured"
    no_asgi = "bare ASGI or torchrig not measured"
    met_rps = None if rps is None or ml_rps is None else rps >= 2 * ml_rps
    met_p99 = None if p99 is None or ml_p99 is None else p99 < ml_p99
    met_asgi = None if rps is None or asgi_rps is None else rps >= 0.8 * asgi_rps
    lines.append(goal("torchrig >= 2x MLServer req/s", met_rps, no_ml))
    lines.append(goal("torchrig p99 < MLServer p99", met_p99, no_ml))
    lines.append(goal("torchrig >= 0.8 x bare ASGI req/s", met_asgi, no_asgi))
    return lines


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--only",
        default=",".join(SERVERS),
        help=f"comma list of {', '.join(SERVERS)} (default: all)",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per server")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before that")
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure every server N times, interleaved; medians"
    )
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch threads per server (1: wrk needs a core)",
    )
    parser.add_argument(
        "--mlserver-workers", type=int, default=1, help="MLServer parallel_workers (its default 1)"
    )
    parser.add_argument(
        "--venv-dir", type=Path, default=Path.home() / ".cache" / "torchrig-bench" / "venvs"
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    args.selected = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(args.selected) - set(SERVERS))
    if unknown:
        parser.error(f"--only: unknown {', '.join(unknown)}; choose from {', '.join(SERVERS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    args.wrk = shutil.which("wrk") is not None
    from torchrig.demo import ranker

    threads = args.torch_threads
    torch.set_num_threads(threads)
    module, (dense, sparse) = ranker()
    rows = [(dense[i : i + 1], sparse[i : i + 1]) for i in (0, 1)]
    with torch.inference_mode():
        expected = [float(module(d, s)[0, 0]) for d, s in rows]
    base_env = dict(os.environ)
    base_env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        TORCHRIG_BENCH_THREADS=str(threads),
        TORCHRIG_BENCH_MODELS_PY=str(sys.modules[type(module).__module__].__file__),
        PYTHONUNBUFFERED="1",
        PYTHONWARNINGS="ignore",
    )
    print(f"cores: {os.cpu_count()}; torch threads per server: {threads} (OMP_NUM_THREADS)")
    load = f"wrk, {args.wrk_threads} threads"
    if not args.wrk:
        load = "NO wrk on PATH: asyncio load generator in this process (weaker than wrk)"
    print(
        f"load: {load}, {args.connections} connections, {args.warmup:g} s warm-up + "
        f"{args.duration:g} s per server, one row per request"
    )
    work = Path(tempfile.mkdtemp(prefix="torchrig-serve-compare-"))
    base_env["TORCHRIG_BENCH_WEIGHTS"] = str(work / "ranker_state.pt")
    setup = Setup(work, args, rows, expected)
    results: list[Result] = []
    try:
        print("setting up servers ...", flush=True)
        servers = build_servers(setup, args.selected)
        rounds: dict[str, list[Result]] = {server.name: [] for server in servers}
        for round_no in range(1, args.rounds + 1):
            for server in servers:
                suffix = f" (round {round_no}/{args.rounds})" if args.rounds > 1 else ""
                print(f"measuring {server.label}{suffix} ...", flush=True)
                result = measure(server, setup, base_env)
                rounds[server.name].append(result)
                print(
                    f"  {fmt(result.rps, ',.0f')} req/s, p50 {fmt(result.p50_ms, '.1f')} ms, "
                    f"p99 {fmt(result.p99_ms, '.1f')} ms {result.note}",
                    flush=True,
                )
        results = [median_result(measured) for measured in rounds.values()]
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - started
    print()
    for line in report(results, setup.notes):
        print(line)
    print(f"whole run: {elapsed:.0f} s")
    if args.json:
        payload = {
            "results": [asdict(r) for r in results],
            "notes": setup.notes,
            "torch_threads": threads,
            "connections": args.connections,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "load_generator": "wrk" if args.wrk else "asyncio",
            "elapsed_s": elapsed,
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
