"""A real headless Chromium for tests, driven over the DevTools protocol on ``--remote-debugging-pipe`` (no
WebDriver, no websocket library): open a page, wait for its load event, evaluate JavaScript in it.

Chromium comes from Debian's packages (``apt-get install chromium``; ``.ci/run`` installs it when missing).
``chromium_or_skip()`` skips a test, saying why, where there is none.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

# Flags a container needs (no sandbox, no GPU) and that keep the browser from reaching the network on its own.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-pipe")


def chromium_or_skip() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium on this machine (apt-get install chromium; .ci/run installs it)")


class Browser:
    """One Chromium process with a fresh profile; ``with Browser(path) as b: b.open(url); b.evaluate(js)``."""

    def __init__(self, executable: str, timeout: float = 60.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        commands_read, self._commands = os.pipe()  # we write commands; Chromium reads fd 3
        self._replies, replies_write = os.pipe()  # Chromium writes fd 4; we read

        def pipes_at_3_and_4() -> None:  # in the child, before exec: the protocol's fixed descriptors
            os.dup2(commands_read, 3)
            os.dup2(replies_write, 4)

        self.process = subprocess.Popen([executable, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, pass_fds=(3, 4),
                                        preexec_fn=pipes_at_3_and_4)  # noqa: PLW1509 - only dup2, no locks
        os.close(commands_read)
        os.close(replies_write)
        self._buffer = b""
        self._next_id = 0
        self.session: str | None = None

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._send("Browser.close", session=False)
        except OSError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._commands, self._replies):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def _send(self, method: str, params: dict | None = None, session: bool = True) -> int:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        return self._next_id

    def _messages(self):
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                yield json.loads(raw)
            chunk = os.read(self._replies, 1 << 16)
            if not chunk:
                raise RuntimeError(f"Chromium closed its DevTools pipe (exit code {self.process.poll()})")
            self._buffer += chunk
        raise TimeoutError(f"no reply from Chromium within {self.timeout} s")

    def call(self, method: str, params: dict | None = None, session: bool = True) -> dict:
        """Send a command and return its result (events that arrive meanwhile are dropped)."""
        ident = self._send(method, params, session)
        for message in self._messages():
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
        raise AssertionError("unreachable")

    def open(self, url: str) -> None:
        """Open ``url`` in a new tab and wait until its load event (every image loaded or failed)."""
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        self.call("Page.enable")
        ident = self._send("Page.navigate", {"url": url})
        navigated = False
        for message in self._messages():
            if message.get("id") == ident:
                if "error" in message or message.get("result", {}).get("errorText"):
                    raise RuntimeError(f"navigating to {url}: {message}")
                navigated = True
            if navigated and message.get("method") == "Page.loadEventFired":
                return

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the open page."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript failed: {result['exceptionDetails']}")
        return result["result"].get("value")


# What a report page shows once a browser has rendered it: the checks of tests that open a report.
REPORT_DOM = """(() => {
  const rows = id => [...document.querySelectorAll(`#${id} tbody tr`)].map(
      tr => [...tr.querySelectorAll('td')].map(td => td.innerText.trim()));
  const images = [...document.images];
  return {title: document.title, heading: document.querySelector('h1')?.innerText,
          decision: document.querySelector('#decision')?.innerText,
          variants: rows('variants'), variantHeader: [...document.querySelectorAll('#variants thead th')].map(
              th => th.innerText.trim()),
          checks: rows('checks'), images: images.length,
          imagesLoaded: images.filter(i => i.complete && i.naturalWidth > 0).length,
          imageWidths: images.map(i => i.naturalWidth)};
})()"""


def render_report(path: str | Path) -> dict:
    """Open a report.html in headless Chromium and return what its rendered DOM shows (REPORT_DOM)."""
    with Browser(chromium_or_skip()) as browser:
        browser.open(Path(path).resolve().as_uri())
        return browser.evaluate(REPORT_DOM)
