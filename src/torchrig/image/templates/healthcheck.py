#!/opt/venv/bin/python
"""torchrig serve image healthcheck: healthy once the server is ready on the port it serves.

It asks /v2/health/ready on the port clients reach (TORCHRIG_SERVE_PORT, 8000 by default)
over the loopback interface, which a server listening on 0.0.0.0 or 127.0.0.1 answers alike.
Exit 0: ready; exit 1: not (yet) ready, with the reason on stderr.
"""

import os
import sys
import urllib.error
import urllib.request

port = os.environ.get("TORCHRIG_SERVE_PORT", "8000").strip() or "8000"
url = f"http://127.0.0.1:{port}/v2/health/ready"
try:
    with urllib.request.urlopen(url, timeout=4) as response:
        status = response.status
except urllib.error.HTTPError as exc:
    status = exc.code
except OSError as exc:
    print(f"torchrig-healthcheck: {url}: {exc}", file=sys.stderr)
    sys.exit(1)
if status != 200:
    print(f"torchrig-healthcheck: {url} answered {status}", file=sys.stderr)
    sys.exit(1)
sys.exit(0)
