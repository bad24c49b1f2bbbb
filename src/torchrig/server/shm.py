"""The system shared-memory extension: same-node clients pass tensors through POSIX shared
memory (/dev/shm) instead of through the request and the response.

A client creates a region (tritonclient.utils.shared_memory), registers it under a name with
its key, offset and size, and then names the region, an offset and a byte size in place of
an input's data or as where an output should be written. The server maps the region once at
registration.

Who may use a region: shared memory is for clients on this node only (loopback peers), and
the server asks the kernel which user owns the client's end of the connection
(`torchrig.server.peers`). A client may register only a region object owned by that same
user, and may read, write, list or unregister only regions its user registered: a client
of another user can neither map someone else's region through the server nor use one
another user registered. Offsets and sizes are checked against the registered size.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from torchrig.errors import InvalidInput, ManagementDisabled, ModelNotFound, TorchrigError
from torchrig.protocol.shared_memory import Buffer
from torchrig.server.peers import is_loopback, peer_uid

SHM_DIR = Path("/dev/shm")
MAX_REGIONS = 1024  # registered at once, all users together


class SharedMemoryDenied(ManagementDisabled):
    """Shared memory from a client that is not on this node, or of another user (403)."""


class CudaSharedMemoryUnsupported(TorchrigError):
    """CUDA shared memory is not served (501; gRPC UNIMPLEMENTED, as Triton without GPUs)."""

    status_code = 501


CUDA_SHM_UNSUPPORTED = (
    "CUDA shared memory is not supported by torchrig; use system shared memory instead "
    "(tritonclient.utils.shared_memory and register_system_shared_memory): on the same "
    "node it passes tensors without copying them through the request"
)


@dataclass
class Region:
    name: str
    key: str
    offset: int
    byte_size: int
    owner: int  # the uid that registered it
    memory: mmap.mmap

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key": self.key,
            "offset": self.offset,
            "byte_size": self.byte_size,
        }


def client_uid(peer: tuple[str, int] | None, server_port: int | None) -> int:
    """The user of a client on this node (SharedMemoryDenied for any other client)."""
    if peer is None or not is_loopback(peer[0]):
        raise SharedMemoryDenied(
            "shared memory is for clients on this node: connect over loopback (127.0.0.1 or "
            "::1), or send the tensors in the request"
        )
    uid = peer_uid(peer, server_port)
    if uid is None:
        raise SharedMemoryDenied(
            "cannot tell which user this client is (the kernel did not say); send the "
            "tensors in the request"
        )
    return uid


class SharedMemory:
    """The registered regions of this server process (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._regions: dict[str, Region] = {}

    def register(self, name: str, key: str, offset: int, byte_size: int, uid: int) -> None:
        if not name:
            raise InvalidInput("a shared-memory region needs a name")
        if offset < 0 or byte_size <= 0:
            raise InvalidInput(
                f"shared-memory region {name!r}: offset {offset} and byte_size {byte_size} "
                "must be >= 0 and > 0"
            )
        path = _shm_path(key)
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise InvalidInput(
                f"shared-memory region {name!r}: cannot open key {key!r} ({exc.strerror}); "
                "create it first (tritonclient.utils.shared_memory.create_shared_memory_region)"
            ) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise InvalidInput(f"shared-memory key {key!r} is not a shared-memory object")
            if info.st_uid != uid:
                raise SharedMemoryDenied(
                    f"shared-memory key {key!r} belongs to another user than this client's"
                )
            if offset + byte_size > info.st_size:
                raise InvalidInput(
                    f"shared-memory region {name!r}: offset {offset} + byte_size {byte_size} "
                    f"exceeds the {info.st_size} bytes of key {key!r}"
                )
            memory = mmap.mmap(fd, offset + byte_size)
        finally:
            os.close(fd)
        with self._lock:
            if name in self._regions:
                memory.close()
                raise InvalidInput(
                    f"shared-memory region {name!r} is registered already; unregister it first"
                )
            if len(self._regions) >= MAX_REGIONS:
                memory.close()
                raise InvalidInput(f"{MAX_REGIONS} shared-memory regions are registered already")
            self._regions[name] = Region(name, key, offset, byte_size, uid, memory)

    def unregister(self, name: str | None, uid: int) -> None:
        """Unregister one region (or, name None, every region of this user)."""
        with self._lock:
            if name:
                region = self._regions.get(name)
                if region is None or region.owner != uid:
                    return  # as Triton: unregistering what is not there succeeds
                chosen = [region]
            else:
                chosen = [r for r in self._regions.values() if r.owner == uid]
            for region in chosen:
                del self._regions[region.name]
        for region in chosen:
            with contextlib.suppress(BufferError):  # still viewed: closed when collected
                region.memory.close()

    def status(self, name: str | None, uid: int) -> list[dict[str, Any]]:
        with self._lock:
            mine = [r for r in self._regions.values() if r.owner == uid]
        if name:
            mine = [r for r in mine if r.name == name]
            if not mine:
                raise ModelNotFound(f"no shared-memory region {name!r} is registered")
        return [r.status() for r in sorted(mine, key=lambda r: r.name)]

    def _region(self, name: str, offset: int, byte_size: int, uid: int, what: str) -> Region:
        with self._lock:
            region = self._regions.get(name)
        if region is None or region.owner != uid:
            raise InvalidInput(f"{what}: no shared-memory region {name!r} is registered")
        if offset < 0 or byte_size < 0 or offset + byte_size > region.byte_size:
            raise InvalidInput(
                f"{what}: offset {offset} + byte_size {byte_size} exceeds the "
                f"{region.byte_size} bytes of shared-memory region {name!r}"
            )
        return region

    def read(self, name: str, offset: int, byte_size: int, *, uid: int, what: str) -> np.ndarray:
        """`byte_size` bytes of the region as a writable uint8 array viewing the mapping
        (no copy: the tensors made from it read the client's memory). The mapping stays
        valid while a view exists, even if the region is unregistered meanwhile."""
        region = self._region(name, offset, byte_size, uid, what)
        start = region.offset + offset
        view: np.ndarray = np.frombuffer(
            region.memory, dtype=np.uint8, count=byte_size, offset=start
        )
        return view

    def write(
        self, name: str, offset: int, byte_size: int, data: Buffer, *, uid: int, what: str
    ) -> int:
        """Copy `data` (bytes, or a C-contiguous array: an output tensor's own memory) into
        the region; returns its size in bytes."""
        region = self._region(name, offset, byte_size, uid, what)
        raw = memoryview(data).cast("B")
        if raw.nbytes > byte_size:
            raise InvalidInput(
                f"{what} takes {raw.nbytes} bytes but its shared-memory byte_size is {byte_size}"
            )
        start = region.offset + offset
        region.memory[start : start + raw.nbytes] = raw
        return raw.nbytes

    def close(self) -> None:
        with self._lock:
            regions = list(self._regions.values())
            self._regions.clear()
        for region in regions:
            with contextlib.suppress(BufferError):
                region.memory.close()


def _shm_path(key: str) -> str:
    """/dev/shm/<key> for a POSIX shared-memory name ("/name" or "name", no other "/")."""
    bare = key[1:] if key.startswith("/") else key
    if not bare or "/" in bare or bare in (".", "..") or "\0" in bare:
        raise InvalidInput(
            f"shared-memory key {key!r} is not a POSIX shared-memory name such as '/input0'"
        )
    return str(SHM_DIR / bare)


class PeerAccess:
    """One request's access to the registered regions, as the user its client runs as:
    `who(peer)` is asked only when the request uses shared memory, and once. One small
    object per request (most never touch shared memory); `read` and `write` are what the
    decoder and encoder take."""

    __slots__ = ("_peer", "_shared", "_uid", "_who")

    def __init__(self, shared: SharedMemory, who: Callable[[Any], int], peer: Any) -> None:
        self._shared = shared
        self._who = who
        self._peer = peer
        self._uid: int | None = None

    def _user(self) -> int:
        if self._uid is None:
            self._uid = self._who(self._peer)
        return self._uid

    def read(self, region: str, offset: int, size: int, what: str) -> Any:
        return self._shared.read(region, offset, size, uid=self._user(), what=what)

    def write(self, region: str, offset: int, size: int, data: Buffer, what: str) -> int:
        return self._shared.write(region, offset, size, data, uid=self._user(), what=what)


class _RegisterBody(msgspec.Struct, forbid_unknown_fields=True):
    key: str
    byte_size: int
    offset: int = 0


def register_json(shared: SharedMemory, name: str, body: bytes, uid: int) -> None:
    """POST /v2/systemsharedmemory/region/NAME/register with {"key", "offset", "byte_size"}."""
    try:
        request = msgspec.json.decode(body, type=_RegisterBody)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidInput(
            f'the register request needs JSON {{"key": str, "offset": int, "byte_size": int}} '
            f"({exc})"
        ) from None
    shared.register(name, request.key, request.offset, request.byte_size, uid)


def http_peer_uid(scope: Any) -> int:
    """The user of an HTTP client (ASGI scope's client and server addresses)."""
    client, server = scope.get("client"), scope.get("server")
    return client_uid(tuple(client) if client else None, server[1] if server else None)
