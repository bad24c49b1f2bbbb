"""The descriptor pool of torchrig's generated gRPC modules (see tools/gen_grpc.py)."""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
