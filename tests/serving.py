"""Starting a real torchrig server in-process on an OS-assigned port (test helper)."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torchrig.server.runner import build_state, make_server
from torchrig.settings import ServeSettings


@contextmanager
def running(
    repository: Path | str,
    settings: ServeSettings | None = None,
    *,
    management_token: str | None = None,
    cache_dir: Path | None = None,
) -> Iterator[tuple[str, Any]]:
    """Start the server in a thread on a socket bound to port 0; yield (url, state)."""
    settings = settings or ServeSettings(port=0, log_format="text")
    if settings.grpc_port > 0:  # tests never take a fixed port: gRPC on an OS-assigned one
        settings = dataclasses.replace(settings, grpc_port=0)
    if cache_dir is None:
        cache_dir = Path(repository).parent / "cache"
    state = build_state(
        repository, settings, cache_dir=cache_dir, management_token=management_token
    )
    server = make_server(state)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", state
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()
