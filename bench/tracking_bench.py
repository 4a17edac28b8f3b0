"""What a logged training step costs while the tracking server is away, and how fast the curves
catch up when it returns.

    .venv/bin/python bench/tracking_bench.py [--steps 300]

Three servers on 127.0.0.1, driven through MLflow's own client by the training's
`TrainingCurves`: one that refuses connections (nothing listens), one that accepts and never
answers, and one that answers (a stand-in speaking MLflow's REST protocol for /health and
runs/log-batch). For each: the longest and the median time of a logged step (3 metrics) over
`--steps` steps fed at 10 steps/s, like a fast ImageNet run logging every step; then, for the
refusing one, a server comes up on its port and the time until every metric has arrived.
For comparison, the synchronous client the training used before: one `log_batch` against the
refusing server with MLflow's retries lowered to 1 and a 5 s timeout (its defaults, 7 retries
and 120 s, made it 247 s on a refusing server and 1,208 s on a hanging one).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from components.evaluate.registry import Registry  # noqa: E402
from components.evaluate.tracking import TrainingCurves  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Recorder(BaseHTTPRequestHandler):
    received: list = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.end_headers()

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Recorder.received.extend(body.get("metrics", []))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:  # noqa: ANN002
        pass


def silent(port: int) -> socket.socket:
    server = socket.socket()
    server.bind(("127.0.0.1", port))
    server.listen(64)
    held = []
    threading.Thread(
        target=lambda: [held.append(server.accept()[0]) for _ in iter(int, 1)], daemon=True
    ).start()
    return server


def feed(curves: TrainingCurves, steps: int) -> list[float]:
    times = []
    for step in range(1, steps + 1):
        started = time.perf_counter()
        curves({"type": "log", "step": step, "loss": 1.0, "lr": 0.1, "images_per_second": 1.0})
        times.append(time.perf_counter() - started)
        time.sleep(0.1)
    return times


def row(name: str, times: list[float], then: str) -> None:
    longest, median = max(times) * 1e3, statistics.median(times) * 1e6
    print(f"{name:28s}{longest:16.2f}{median:12.1f}  {then}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    steps = parser.parse_args().steps
    print(f"{steps} logged steps at 10 steps/s, 3 metrics each")
    print(f"{'server':28s}{'longest step ms':>16s}{'median us':>12s}  then")

    port = free_port()
    curves = TrainingCurves(Registry(f"http://127.0.0.1:{port}"), "run")
    times = feed(curves, steps)
    Recorder.received = []
    server = ThreadingHTTPServer(("127.0.0.1", port), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    back = time.perf_counter()
    curves.close(timeout=120)
    caught_up = time.perf_counter() - back
    server.shutdown()
    arrived = len(Recorder.received)
    row(
        "refusing, then back",
        times,
        f"all {arrived}/{3 * steps} metrics arrived {caught_up:.1f} s after it came back",
    )

    port = free_port()
    hang = silent(port)
    curves = TrainingCurves(Registry(f"http://127.0.0.1:{port}"), "run")
    times = feed(curves, steps)
    lost = curves.close(timeout=1)
    hang.close()
    row("accepts, never answers", times, f"{lost} metrics kept, not sent (reported at the end)")

    Recorder.received = []
    up = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=up.serve_forever, daemon=True).start()
    curves = TrainingCurves(Registry(f"http://127.0.0.1:{up.server_address[1]}"), "run")
    times = feed(curves, steps)
    curves.close(timeout=60)
    up.shutdown()
    row("answers", times, f"{len(Recorder.received)}/{3 * steps} metrics arrived")

    from mlflow.entities import Metric

    port = free_port()
    hang = silent(port)
    client = Registry(f"http://127.0.0.1:{port}").client
    call = threading.Thread(
        target=lambda: client.log_batch("run", metrics=[Metric("loss", 1.0, 0, 1)]), daemon=True
    )
    started = time.perf_counter()
    call.start()
    call.join(30)
    waited = time.perf_counter() - started
    hang.close()
    state = "still waiting" if call.is_alive() else "returned"
    print(
        f"before: one synchronous log_batch (MLflow's defaults), server that never answers: "
        f"{state} after {waited:.0f} s"
    )


if __name__ == "__main__":
    main()
