"""Code generated from the vendored protos by tools/gen_grpc.py."""
