"""A run whose data is hostile throughout (class folders, paths, span names and reasons that are
markdown links, images, raw HTML and bare URLs), published by the flow's own artifact functions
and opened in the real Prefect UI in headless Chromium: every page shows the names as text, and
holds no link, image or script the pipeline did not make, and the browser asks no other host
for anything."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.browser import CHROMIUM, Browser
from tests.test_e2e import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium"),
]
REPO = Path(__file__).resolve().parent.parent
# Every <a> and <img> on the page, and the page's own text.
PROBE = """(() => [
  ...[...document.querySelectorAll('a')].map(a => 'a ' + (a.getAttribute('href') || '')),
  ...[...document.querySelectorAll('img, image, iframe, script[src]')].map(
      e => e.tagName + ' ' + (e.getAttribute('src') || e.getAttribute('href') || '')),
])()"""


@pytest.fixture
def prefect_ui(tmp_path: Path):
    """A Prefect server of its own (its UI included) on a free port."""
    port = free_port()
    home = tmp_path / "prefect"
    home.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
        "PREFECT_HOME": str(home),
        "PREFECT_PROFILES_PATH": str(home / "profiles.toml"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_API_URL": f"http://127.0.0.1:{port}/api",
    }
    prefect = str(REPO / ".venv" / "bin" / "prefect")
    server = subprocess.Popen(
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "no server"
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}", env
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(home, ignore_errors=True)


def test_hostile_names_render_as_text_in_the_prefect_ui(prefect_ui, tmp_path: Path) -> None:
    base, env = prefect_ui
    published = subprocess.run(
        [sys.executable, "-c", "from tests.test_markdown import publish_hostile_run as p; p()"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert published.returncode == 0, published.stderr[-3000:]
    code = (
        "from prefect import get_client\n"
        "with get_client(sync_client=True) as c:\n"
        "    for a in c.read_artifacts():\n"
        "        print(a.id, a.key, a.flow_run_id)\n"
    )
    listed = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    rows = [line.split() for line in listed.stdout.splitlines()]
    keys = {key for _, key, _ in rows}
    assert {"ingest-counts", "ingest-quarantine", "validation-anomalies", "validation-drift",
            "evaluation", "registered-model", "run-summary"} <= keys, listed.stdout  # fmt: skip
    pages = [(f"{base}/artifacts/artifact/{id_}", "Session expired") for id_, _, _ in rows]
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with Browser() as browser:
        for number, (url, wait_for) in enumerate(pages):
            shown = browser.open(url, wait_for, screenshot=shots / f"{number}.png", then=PROBE)
            # The UI's own links, scripts and pictures are relative to it; the only absolute
            # links are the MLflow links the pipeline made.
            strangers = [
                element
                for element in shown["then"]
                if not element.split(" ", 1)[1].startswith(("/", "#", "http://mlflow:5000/"))
                and element != "a "
            ]
            assert not strangers, (url, strangers)
            ours = (base, f"blob:{base}", "data:")
            elsewhere = [r for r in shown["requested"] if not r.startswith(ours)]
            assert not elsewhere, (url, elsewhere)
