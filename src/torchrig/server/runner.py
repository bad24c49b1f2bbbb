"""Running the server: build the app, start uvicorn, shut down in uvicorn's order.

Startup: the quick doctor (its failures keep the server unready, with the reason), then
every model the repository's policies select. With `control_mode = "poll"` a background
task then follows the repository every `poll_interval_s` (new versions hot-swapped in,
removed ones drained and released); with "explicit" the management API does that on
request. SIGTERM/SIGINT: readiness goes false at once and new requests get 503, uvicorn
stops accepting and waits for in-flight requests (up to the drain timeout), then the
poll stops and the models are released.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from torchrig.errors import ConfigError
from torchrig.facts.model import Snapshot
from torchrig.repository import Repository
from torchrig.runtime import ModelRegistry
from torchrig.server.app import ServerState, V2App
from torchrig.server.management import CONTROL_MODES
from torchrig.server.metrics import ServerMetrics
from torchrig.settings import ServeSettings

log = logging.getLogger("torchrig.server")

PUBLISH_INTERVAL_S = 0.5  # with several workers: how old another worker's gauges may be
ABANDONED_SWEEP_S = 0.25  # how often queued requests nobody waits for are dropped


def run_doctor(snapshot: Snapshot, require_gpu: bool) -> tuple[bool, str]:
    """The quick doctor, as the readiness gate: (passed, summary of the failures)."""
    from torchrig.doctor import diagnose

    report = diagnose(snapshot, require_gpu=require_gpu)
    failed = [r for r in report.checks if r.status == "fail"]
    for res in report.checks:
        if res.status in ("warn", "fail"):
            log.warning("doctor %s %s: %s (fix: %s)", res.id, res.status, res.message, res.fix)
    if not failed:
        return True, "passed"
    return False, "; ".join(f"{r.id}: {r.message}" for r in failed)


def build_state(
    repository: str | Path,
    settings: ServeSettings,
    *,
    metrics_registry: Any | None = None,
    cache_dir: Path | None = None,
    management_token: str | None = None,
    metrics_dir: Path | None = None,
) -> ServerState:
    """The app's shared state, with lifespan hooks that load and release the models (and,
    in poll mode, follow the repository). `management_token` turns the management API on
    (with control_mode "explicit"). `metrics_dir`: this is one of several worker processes
    whose metrics meet there (see `torchrig.server.workers`)."""
    from prometheus_client import CollectorRegistry

    from torchrig.envlock import take_lock

    check_control(settings)
    repo = Repository(repository, cache_dir=cache_dir)
    registry = ModelRegistry(
        repo,
        device=settings.device or None,
        drain_timeout_s=settings.drain_timeout_s,
        allow_python_handlers=settings.allow_python_handlers,
    )
    metrics = ServerMetrics(
        metrics_registry or CollectorRegistry(),
        model_registry=registry,
        multiprocess_dir=metrics_dir,
    )
    state = ServerState(
        registry=registry, metrics=metrics, settings=settings, management_token=management_token
    )
    tasks: list[asyncio.Task[None]] = []

    async def startup() -> None:
        # one collection serves both: the doctor judges the lock's snapshot, and the lock
        # is what model versions are compared with at load
        lock = await asyncio.to_thread(take_lock)
        state.doctor_ok, state.doctor_summary = run_doctor(lock.snapshot, settings.require_gpu)
        registry.environment = lock
        registry.batch_observer = state.statistics.observer(metrics.batch_observer)
        await registry.load_all()
        settle_heap()
        state.started = True
        for version in registry.versions():
            log.info(
                "model %s version %s %s%s",
                version.model,
                version.version,
                version.state,
                f": {version.reason}" if version.reason else "",
                extra={"model": version.model, "version": str(version.version)},
            )
        for name, reason in registry.model_errors().items():
            log.error("model %s not served: %s", name, reason, extra={"model": name})
        tasks.append(asyncio.ensure_future(drop_abandoned(registry, ABANDONED_SWEEP_S)))
        if settings.control_mode == "poll":
            tasks.append(asyncio.ensure_future(poll(registry, settings.poll_interval_s)))
        if metrics.multiprocess:
            metrics.publish()
            tasks.append(asyncio.ensure_future(publish_metrics(metrics, PUBLISH_INTERVAL_S)))
        if settings.control_mode == "explicit" and management_token is None:
            log.warning(
                "control mode explicit without a management token: load and unload are off "
                "until the server is started with TORCHRIG_SERVE_MANAGEMENT_TOKEN or "
                "--management-token-file"
            )

    async def shutdown() -> None:
        state.shutting_down = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await registry.close()
        metrics.close()
        log.info("models released")

    state.lifespan_hooks = {"startup": startup, "shutdown": shutdown}
    return state


def settle_heap() -> None:
    """Move everything alive after start-up (torch, the models: millions of objects) out
    of the collector's reach. A full collection otherwise walks all of it, which took
    0.2-0.4 s on a 2-core box under load, several times a minute: the p99. Objects made
    while serving are collected as usual."""
    import gc

    gc.collect()
    gc.freeze()


FILES_BESIDE_CONNECTIONS = 256  # model files, libraries, pipes, the listening sockets


def raise_open_files(settings: ServeSettings) -> None:
    """Raise this process's soft limit on open files to its hard limit (as Go's and the
    JVM's runtimes do): container runtimes now often start processes at a soft 1,024,
    below what --max-connections allows on the REST and gRPC ports together, and past
    it neither port can accept. Warns when even the hard limit is below that."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:  # e.g. a hard limit above the kernel's nr_open
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, exc)
            target = soft
        else:
            log.info("open-files limit raised from %d to %d", soft, target)
    else:
        target = soft
    sockets = settings.max_connections * (1 if settings.grpc_port < 0 else 2)
    needed = sockets + FILES_BESIDE_CONNECTIONS
    if target != resource.RLIM_INFINITY and target < needed:
        log.warning(
            "this process may open %d files, fewer than the %d that --max-connections %d "
            "allows (with %d for models and libraries): a flood of connections could stop "
            "the server accepting any; raise the container's nofile limit (docker run "
            "--ulimit nofile=%d:%d) or lower --max-connections",
            target,
            needed,
            settings.max_connections,
            FILES_BESIDE_CONNECTIONS,
            needed,
            needed,
        )


def check_control(settings: ServeSettings) -> None:
    """Refuse an unknown control mode or a poll interval that is not positive."""
    if settings.control_mode not in CONTROL_MODES:
        raise ConfigError(
            f"control mode {settings.control_mode!r} is not one of {', '.join(CONTROL_MODES)}."
        )
    if settings.poll_interval_s <= 0:
        raise ConfigError(f"poll interval {settings.poll_interval_s} s must be positive.")


async def poll(registry: ModelRegistry, interval_s: float) -> None:
    """Follow the repository until cancelled; a failed look is logged and tried again."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await registry.refresh()
        except Exception as exc:  # a task boundary: an unreachable store must not stop it
            log.warning("polling the model repository failed: %s; trying again", exc)


async def drop_abandoned(registry: ModelRegistry, interval_s: float) -> None:
    """Every `interval_s`, drop the queued requests whose clients left or whose deadlines
    passed (a batch gathering one drops it too; this frees the queue slots and answers
    the requests that wait in a long queue, with no timer per request)."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            dropped = registry.drop_abandoned()
        except Exception:  # a task boundary: a failed sweep must not stop the next ones
            log.exception("dropping the requests of clients that left failed; trying again")
            continue
        if dropped:
            log.debug("dropped %d queued requests (clients gone or deadlines past)", dropped)


async def publish_metrics(metrics: ServerMetrics, interval_s: float) -> None:
    """With several workers: keep this worker's scrape-time series current in the shared
    metrics files (a scrape reaches one worker and reads every worker's files)."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            metrics.publish()
        except Exception:  # a task boundary: a failed copy must not stop the next ones
            log.exception("publishing this worker's metrics failed; trying again")


def make_server(state: ServerState, *, on_ready: Callable[[str], None] | None = None) -> Any:
    """A uvicorn server for the app whose signal handling first flips readiness off."""
    import uvicorn

    from torchrig.server.http_limits import HttpLimits, protocol_class

    settings = state.settings
    if settings.grpc_port >= 0:  # the gRPC transport shares the app's lifespan and state
        from torchrig.server.grpc import attach

        attach(state)
    limited = protocol_class(HttpLimits.of(settings))
    config = uvicorn.Config(
        V2App(state),
        http=limited if limited is not None else "h11",
        limit_concurrency=settings.max_connections,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        access_log=False,
        log_config=None,
        # uvicorn annotates an int but hands it to asyncio.wait_for: a fraction is kept
        # (int() made 0.5 s "no timeout", so such a drain waited forever)
        timeout_graceful_shutdown=cast(int, settings.drain_timeout_s),
        server_header=False,
        # no WebSocket endpoint: an upgrade request is answered as the plain HTTP request
        # it also is (uvicorn's default hands it to the app as a handshake it would fail
        # with a 500)
        ws="none",
        # bounds the request line and headers when h11 parses (no httptools)
        h11_max_incomplete_event_size=int(settings.max_header_kb * 1024),
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            state.shutting_down = True  # readiness false and 503s before anything else
            log.info("signal %s: draining in-flight requests, then releasing models", sig)
            super().handle_exit(sig, frame)

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and on_ready is not None:
                on_ready(bound_url(self))

    return Server(config)


def bound_url(server: Any) -> str:
    """The http:// URL the server actually listens on (port 0 resolved)."""
    for srv in getattr(server, "servers", []):
        for sock in srv.sockets:
            return socket_url(sock)
    return f"http://{server.config.host}:{server.config.port}"


def socket_url(sock: socket.socket) -> str:
    """The http:// URL of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"
