"""The V2 (Open Inference Protocol) gRPC transport: `inference.GRPCInferenceService`.

Generated from the vendored protos by tools/gen_grpc.py (`generated/`); the service
(`service.py`) serves the REST server's data plane; `server.py` runs it beside uvicorn.
"""

from torchrig.server.grpc.server import GrpcTransport, attach

__all__ = ["GrpcTransport", "attach"]
