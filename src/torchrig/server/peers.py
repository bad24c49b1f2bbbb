"""Which local user is at the other end of a loopback TCP connection.

The kernel knows the owner of every socket. The client's socket is looked up by its
address and port with one sock_diag netlink request (the way `ss` asks; tens of
microseconds), falling back to a scan of /proc/net/tcp{,6} where netlink is unavailable.
Only loopback peers are looked up: a remote client's user means nothing here.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from pathlib import Path

PROC_NET = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
_HEADER = struct.Struct("=IHHII")  # nlmsghdr
_REQUEST = struct.Struct("=BBBBI")  # inet_diag_req_v2 up to its sockid
_UID_OFFSET = _HEADER.size + 4 + 48 + 12  # inet_diag_msg: family..retrans, id, 3 u32, uid


def is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def peer_uid(peer: tuple[str, int] | None, server_port: int | None) -> int | None:
    """The uid owning the client's end of a loopback connection to `server_port`, or None
    (not loopback, or the kernel does not say)."""
    if peer is None or server_port is None or not is_loopback(peer[0]):
        return None
    host, port = peer[0].strip("[]"), peer[1]
    uid = _netlink_uid(host, port, server_port)
    return uid if uid is not None else _proc_uid(host, port, server_port)


def grpc_peer(peer: str) -> tuple[str, int] | None:
    """(host, port) of a gRPC peer string ("ipv4:127.0.0.1:5000", "ipv6:[::1]:5000")."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return None
    host, _, port = rest.rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        return None


def _netlink_uid(host: str, port: int, server_port: int) -> int | None:
    """Ask sock_diag for the client socket (host:port -> host:server_port): over loopback
    the client connects to the address it sends from."""
    ip = ipaddress.ip_address(host)
    family = socket.AF_INET if isinstance(ip, ipaddress.IPv4Address) else socket.AF_INET6
    address = ip.packed.ljust(16, b"\0")
    sockid = struct.pack("!HH", port, server_port) + address + address
    sockid += struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF)  # any interface, no cookie
    body = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF) + sockid
    message = _HEADER.pack(_HEADER.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 1, 0)
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as sock:
            sock.settimeout(1.0)
            sock.send(message + body)
            reply = sock.recv(4096)
    except OSError:
        return None
    if len(reply) < _UID_OFFSET + 4:
        return None
    _, kind, _, _, _ = _HEADER.unpack_from(reply)
    if kind != SOCK_DIAG_BY_FAMILY:  # NLMSG_ERROR: no such socket (or not allowed)
        return None
    (uid,) = struct.unpack_from("=I", reply, _UID_OFFSET)
    return int(uid)


def _proc_uid(host: str, port: int, server_port: int) -> int | None:
    want_local = _endpoint(host, port)
    want_remote = f":{server_port:04X}"
    for table in PROC_NET:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 7 and fields[1] in want_local and fields[2].endswith(want_remote):
                return int(fields[7])
    return None


def _endpoint(host: str, port: int) -> set[str]:
    """The ways /proc/net/tcp{,6} writes an address:port (hex, host byte order words)."""
    ip = ipaddress.ip_address(host)
    forms = set()
    v4 = ip if isinstance(ip, ipaddress.IPv4Address) else ip.ipv4_mapped
    if v4 is not None:
        forms.add(v4.packed[::-1].hex().upper() + f":{port:04X}")
        mapped = b"\0" * 10 + b"\xff\xff" + v4.packed
        forms.add(_v6_words(mapped) + f":{port:04X}")
    if isinstance(ip, ipaddress.IPv6Address):
        forms.add(_v6_words(ip.packed) + f":{port:04X}")
    return forms


def _v6_words(packed: bytes) -> str:
    return "".join(packed[i : i + 4][::-1].hex().upper() for i in range(0, 16, 4))
