"""The HTTP server: the ASGI app, metrics, logging and shutdown."""
