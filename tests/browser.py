"""A headless Chromium driven over the DevTools protocol: open a page as a person's browser
would (with HTTP basic credentials, JavaScript, the page's own requests), then read what it
shows. Needs /usr/bin/chromium (Debian's `chromium`; `.ci/run` installs it)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Quiet on a closed network: no background fetches, no updates, no sync.
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1400,1000",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """`with Browser(user, password) as browser: text = browser.open(url, wait_for="...")`."""

    def __init__(
        self, username: str | None = None, password: str | None = None, offline: bool = False
    ):
        self.auth = (
            base64.b64encode(f"{username}:{password}".encode()).decode() if username else None
        )
        # Offline: every request to the network goes to a proxy port nothing listens on, as
        # on a cluster without internet access (file:// pages still open).
        self.flags = ["--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"] if (
            offline
        ) else []  # fmt: skip

    def __enter__(self) -> Browser:
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        port = _free_port()
        self.process = subprocess.Popen(
            [CHROMIUM, *FLAGS, *self.flags, f"--remote-debugging-port={port}",
             f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2) as answer:
                    pages = [t for t in json.load(answer) if t["type"] == "page"]
                if pages:
                    self.socket_url = pages[0]["webSocketDebuggerUrl"]
                    return self
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{CHROMIUM} did not start its DevTools endpoint")
            time.sleep(0.3)

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)

    def open(
        self,
        url: str,
        wait_for: str,
        timeout: float = 60,
        screenshot: Path | None = None,
        then: str | None = None,
    ) -> dict:
        """Navigates to `url` and waits until the page's text (its frames' included) holds
        `wait_for`; returns {"status": the document's HTTP status, "text": the text, "then":
        the value of the JavaScript expression `then` evaluated in the page afterwards (a
        promise is awaited), "requested": every URL the page asked for meanwhile}. Raises
        AssertionError with what the page showed if it never does."""
        return asyncio.run(self._open(url, wait_for, timeout, screenshot, then))

    async def _open(self, url, wait_for, timeout, screenshot, then) -> dict:
        import websockets

        async with websockets.connect(self.socket_url, max_size=2**26) as ws:
            counter = 0
            events: list[dict] = []

            async def call(method: str, **params) -> dict:
                nonlocal counter
                counter += 1
                await ws.send(json.dumps({"id": counter, "method": method, "params": params}))
                while True:
                    message = json.loads(await ws.recv())
                    if message.get("id") == counter:
                        if "error" in message:
                            raise RuntimeError(f"{method}: {message['error']}")
                        return message.get("result", {})
                    events.append(message)

            await call("Network.enable")
            await call("Page.enable")
            if self.auth:
                await call(
                    "Network.setExtraHTTPHeaders",
                    headers={"Authorization": f"Basic {self.auth}"},
                )
            await call("Page.navigate", url=url)
            # Text of the page and of every same-origin frame (MLflow shows pages in an iframe).
            script = """(() => {
                const texts = [document.body ? document.body.innerText : ''];
                for (const f of document.querySelectorAll('iframe')) {
                    try { texts.push(f.contentDocument.body.innerText); } catch (e) {}
                    try { texts.push(f.srcdoc || ''); } catch (e) {}
                }
                return texts.join('\\n');
            })()"""
            deadline = time.monotonic() + timeout
            text = ""
            while time.monotonic() < deadline:
                found = await call("Runtime.evaluate", expression=script, returnByValue=True)
                text = found.get("result", {}).get("value") or ""
                if wait_for in text:
                    break
                await asyncio.sleep(0.5)
            status = next(
                (
                    e["params"]["response"]["status"]
                    for e in events
                    if e.get("method") == "Network.responseReceived"
                    and e["params"].get("type") == "Document"
                ),
                None,
            )
            if screenshot is not None:
                shot = await call("Page.captureScreenshot", format="png")
                screenshot.write_bytes(base64.b64decode(shot["data"]))
            if wait_for not in text:
                raise AssertionError(
                    f"{url}: {wait_for!r} never showed (HTTP {status}); the page said:\n"
                    + text[:2000]
                )
            value = None
            if then is not None:
                found = await call(
                    "Runtime.evaluate", expression=then, returnByValue=True, awaitPromise=True
                )
                value = found.get("result", {}).get("value")
            requested = [
                e["params"]["request"]["url"]
                for e in events
                if e.get("method") == "Network.requestWillBeSent"
            ]
            with contextlib.suppress(Exception):
                await call("Page.navigate", url="about:blank")
            return {"status": status, "text": text, "then": value, "requested": requested}
