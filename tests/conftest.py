"""Session-wide test settings."""

from __future__ import annotations

import os

# `torchrig serve` processes started by tests listen for gRPC on an OS-assigned port, not
# on the default 8001, which concurrent test runs (and a developer's server) would share;
# a test that means a fixed gRPC port passes --grpc-port itself
os.environ.setdefault("TORCHRIG_SERVE_GRPC_PORT", "0")
