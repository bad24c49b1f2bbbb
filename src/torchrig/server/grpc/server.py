"""The gRPC transport beside the REST one: same process, same event loop, same state.

`attach(state)` hooks a grpc.aio server into the REST server's lifespan: it starts once
the models are loaded (as the REST port opens) and, on shutdown, stops taking calls and
lets in-flight ones finish (up to --drain-timeout-s) before the models are released.
Message size follows --max-body-mb (larger calls: RESOURCE_EXHAUSTED, from gRPC itself);
--max-connections bounds both the concurrent calls and the open connections (one past it
is closed as it comes), and a connection that has not set up HTTP/2 within
--header-timeout-s is closed, so idle sockets cannot use up the process's open files; and
keepalive keeps idle connections from being silently dropped by load balancers while
refusing clients that ping abusively.
"""

from __future__ import annotations

import logging
import socket

import grpc

from torchrig.errors import ConfigError
from torchrig.server.app import ServerState
from torchrig.server.grpc.service import InferenceService

log = logging.getLogger("torchrig.server")

KEEPALIVE_TIME_MS = 60_000  # ping a connection idle this long (Triton: 2 h)
KEEPALIVE_TIMEOUT_MS = 20_000  # and close it if the ping is not answered in this time
MIN_CLIENT_PING_MS = 10_000  # a client pinging more often is told off (GOAWAY)


class GrpcTransport:
    """A grpc.aio server serving `InferenceService(state)` on `settings.grpc_port`."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.server: grpc.aio.Server | None = None
        self.port: int | None = None

    def options(self) -> list[tuple[str, int]]:
        settings = self.state.settings
        max_message = int(settings.max_body_mb * 1024 * 1024)
        return [
            ("grpc.max_receive_message_length", max_message),
            ("grpc.max_send_message_length", -1),
            ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
            ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_MS),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.max_allowed_incoming_connections", settings.max_connections),
            ("grpc.server_handshake_timeout_ms", max(1, int(settings.header_timeout_s * 1000))),
            # several worker processes share the port; one process must own it alone
            ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        ]

    async def start(self) -> int:
        """Bind and start; returns the port (0 in the settings: the one the OS picked)."""
        settings = self.state.settings
        server = grpc.aio.server(
            options=self.options(), maximum_concurrent_rpcs=settings.max_connections
        )
        service = InferenceService(self.state)
        service.add_to(server)
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        address = f"{host}:{settings.grpc_port}"
        try:
            port: int = server.add_insecure_port(address)
        except RuntimeError as exc:
            port = 0
            detail = f" ({exc})"
        else:
            detail = ""
        if port == 0:
            raise ConfigError(
                f"cannot listen for gRPC on {address}{detail}: the port is taken or the "
                "address is not this machine's; choose another with --grpc-port (0: any "
                "free port) or turn gRPC off with --grpc-port -1."
            )
        service.port = port
        await server.start()
        self.server, self.port = server, port
        self.state.grpc_address = f"{host}:{port}"
        log.info("gRPC serving on %s", self.state.grpc_address, extra={"grpc_address": address})
        return port

    async def stop(self) -> None:
        """Refuse new calls, let in-flight ones finish within the drain timeout, then end."""
        if self.server is not None:
            await self.server.stop(self.state.settings.drain_timeout_s or None)
            self.server = None


def check_port(state: ServerState) -> None:
    """Refuse a taken gRPC port before anything starts (ConfigError naming the fix), rather
    than after the models loaded. With several workers the port is shared on purpose."""
    settings = state.settings
    if settings.grpc_port == 0 or settings.workers > 1:
        return
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.host, settings.grpc_port))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen for gRPC on {settings.host}:{settings.grpc_port} "
                f"({exc.strerror}); choose another port with --grpc-port (0: any free "
                "port) or turn gRPC off with --grpc-port -1."
            ) from None


def attach(state: ServerState) -> GrpcTransport:
    """Run a gRPC transport with the REST server's lifespan (models loaded first)."""
    check_port(state)
    transport = GrpcTransport(state)
    startup = state.lifespan_hooks.get("startup")
    shutdown = state.lifespan_hooks.get("shutdown")

    async def start() -> None:
        if startup is not None:
            await startup()
        await transport.start()

    async def stop() -> None:
        state.shutting_down = True
        try:
            await transport.stop()
        finally:
            if shutdown is not None:
                await shutdown()

    state.lifespan_hooks = {"startup": start, "shutdown": stop}
    return transport
