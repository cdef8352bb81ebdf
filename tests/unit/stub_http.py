"""An HTTP endpoint on loopback, served from a thread, for the unit tests that play
a provider's part (its discovery document, its keys, its token endpoint)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable
from contextlib import contextmanager

# (method, path) -> (HTTP status, the JSON body, or None for no body)
Answer = Callable[[str, str], tuple[int, object]]


@contextmanager
def stub_http(answer: Answer):
    """The running server (its .url is http://127.0.0.1:PORT) until the block ends."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status, body = answer(self.command, self.path)
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
