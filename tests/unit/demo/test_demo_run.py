"""``streamer demo``'s orchestration pieces that need no broker."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading

import pytest

from streamer.demo.run import wait_until_ready
from streamer.settings import Settings


def test_demo_waits_for_the_worker_ready_endpoint() -> None:
    """The demo sends traffic only once /ready answers 200, so its latency figure is not start-up time."""
    answers = iter([503, 503, 200])

    class Ready(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(next(answers, 200))
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        settings = Settings(metrics_port=server.server_address[1])
        waited = wait_until_ready(settings, worker, timeout=10)
        assert waited is not None and waited >= 0.4  # two 503s, 0.2 s apart
        assert wait_until_ready(Settings(metrics_port=0), worker, timeout=10) is None
    finally:
        worker.kill()
        server.shutdown()
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    dead.wait()
    with pytest.raises(SystemExit, match="exited with code 3"):
        wait_until_ready(Settings(metrics_port=1), dead, timeout=10)
