"""A WSGI app served on a real local port in a background thread, for tests of HTTP clients and adapters."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from werkzeug.serving import make_server


@contextlib.contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 (threaded, a free port) and yield its base URL; stop it afterwards."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), name="test-wsgi-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
