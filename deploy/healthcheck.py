"""Container HEALTHCHECK: GET /healthz on the exporter's own listen address.

Written in Python because the image has no curl. The address comes from the same variable
the exporter reads, so a changed port is followed; a wildcard host is probed on loopback.
"""

import os
import sys
import urllib.request

address = os.environ.get("OPENAI_EXPORTER_WEB_LISTEN_ADDRESS") or ":9186"
host, _, port = address.rpartition(":")
host = host.strip("[]")
if host in ("", "0.0.0.0", "::"):
    host = "127.0.0.1"
if ":" in host:
    host = f"[{host}]"

try:
    with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as error:  # any failure means unhealthy; say why in `docker inspect`
    print(f"healthcheck failed: {error}", file=sys.stderr)
    sys.exit(1)
