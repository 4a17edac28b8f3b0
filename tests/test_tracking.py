"""Training curves never make the training wait, whatever the tracking server does.

The server is a stand-in that speaks MLflow's REST protocol for the two calls the curves make
(/health and runs/log-batch), driven through MLflow's own client: it refuses connections (not
listening), accepts and never answers, or answers and records what it was sent.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from components.evaluate.registry import Registry
from components.evaluate.tracking import TrainingCurves


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _Recorder(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"OK")

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.extend(body.get("metrics", []))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:  # noqa: ANN002
        pass


def _silent_server(port: int) -> socket.socket:
    """Accepts connections and never answers a byte."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(64)
    held = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return server


def _log_steps(curves: TrainingCurves, steps: range) -> float:
    """Feeds the curves like the training loop does; returns the longest call in seconds."""
    longest = 0.0
    for step in steps:
        started = time.perf_counter()
        curves({"type": "log", "step": step, "loss": 1.0 / step, "lr": 0.1,
                "images_per_second": 100.0})  # fmt: skip
        longest = max(longest, time.perf_counter() - started)
    return longest


@pytest.mark.parametrize("server", ["refusing", "hanging"])
def test_a_logged_step_never_waits_for_the_tracking_server(server: str) -> None:
    """Once a step blocked 247 s on a refusing server and 1,208 s on a hanging one."""
    port = _free_port()
    silent = _silent_server(port) if server == "hanging" else None
    try:
        curves = TrainingCurves(Registry(f"http://127.0.0.1:{port}"), "run")
        longest = _log_steps(curves, range(1, 41))
        time.sleep(3)  # the sender tries meanwhile
        longest = max(longest, _log_steps(curves, range(41, 81)))
        started = time.perf_counter()
        lost = curves.close(timeout=1.0)
        assert time.perf_counter() - started < 1.0 + TrainingCurves.PROBE_SECONDS + 2
    finally:
        if silent is not None:
            silent.close()
    assert longest < 1.0, f"a logged step waited {longest:.2f} s"
    assert lost == 80 * 3 and curves.failures >= 1  # kept until the end, then reported


def test_the_curves_catch_up_when_the_server_returns() -> None:
    port = _free_port()
    curves = TrainingCurves(Registry(f"http://127.0.0.1:{port}"), "run")
    assert _log_steps(curves, range(1, 31)) < 1.0  # nobody listens yet
    time.sleep(1.5)
    _Recorder.received = []
    server = ThreadingHTTPServer(("127.0.0.1", port), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert _log_steps(curves, range(31, 61)) < 1.0
        assert curves.close(timeout=60.0) == 0
    finally:
        server.shutdown()
        server.server_close()
    steps = sorted({(m["key"], int(m["step"])) for m in _Recorder.received})
    assert len(steps) == 60 * 3 and curves.sent == 60 * 3  # every metric of every step, once
    assert curves.failures >= 1


def test_past_its_capacity_the_queue_drops_the_oldest_and_counts_them() -> None:
    curves = TrainingCurves(Registry(f"http://127.0.0.1:{_free_port()}"), "run", capacity=30)
    _log_steps(curves, range(1, 21))  # 60 metrics into 30 places
    assert curves.dropped == 30 and curves.backlog() == 30
    assert curves.close(timeout=0.1) == 60
