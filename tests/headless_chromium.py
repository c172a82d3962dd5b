"""A real browser for the tests: headless Chromium (the Debian package), driven over the DevTools protocol.

Chromium started with ``--remote-debugging-pipe`` reads DevTools commands on its file descriptor 3 and
writes answers and events on 4, each a JSON object ended by a NUL byte: no websocket, no port, no library.
A page is opened in a tab of its own, its script runs, and the test asks it questions in JavaScript
(``evaluate``), clicks, and takes a screenshot of the whole page.

The flags keep Chromium from reaching for a network this machine does not have (without them it waits on
it), and a fresh profile folder per browser keeps runs apart.
"""
from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars"]


def chromium_path() -> str | None:
    return next(filter(None, (shutil.which(name) for name in ("chromium", "chromium-browser"))), None)


class BrowserError(Exception):
    pass


class Chromium:
    """One headless Chromium, stopped on leaving the ``with`` block."""

    def __init__(self, timeout_s: float = 60.0):
        self.timeout_s = timeout_s
        self.next_id, self.buffer, self.events = 0, b"", []

    def __enter__(self) -> "Chromium":
        """Start Chromium and wait for its first answer. A browser that dies while starting (seen once here, on a
        machine short of memory) is started once more; its log goes into the error if that fails too."""
        executable = chromium_path()
        if executable is None:
            raise BrowserError("chromium is not installed (apt-get install chromium)")
        for attempt in (1, 2):
            self._start(executable)
            try:
                self.send("Browser.getVersion")
                return self
            except (BrowserError, OSError):   # no answer, or the pipe already closed (a broken pipe)
                self._stop()
                if attempt == 2:
                    raise

    def _start(self, executable: str) -> None:
        self.next_id, self.buffer, self.events = 0, b"", []
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self.log = open(Path(self.profile) / "chromium.log", "w+")   # the browser's own messages, for errors
        commands_read, self.commands = os.pipe()      # we write commands; Chromium reads them on fd 3
        self.answers, answers_write = os.pipe()       # Chromium writes on fd 4; we read

        def on_fds_3_and_4():   # in the child, before exec: the two pipe ends at 3 and 4, nothing else open
            # copies first: a pipe end may already be 3 or 4, and dup2 onto itself would leave it close-on-exec
            reading, writing = os.dup(commands_read), os.dup(answers_write)
            os.dup2(reading, 3)
            os.dup2(writing, 4)
            os.closerange(5, os.sysconf("SC_OPEN_MAX"))

        self.process = subprocess.Popen(
            [executable, *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log,
            preexec_fn=on_fds_3_and_4, close_fds=False, start_new_session=True)
        os.close(commands_read)
        os.close(answers_write)

    def __exit__(self, *exc) -> None:
        self._stop()

    def _stop(self) -> None:
        try:
            self.send("Browser.close", wait=False)
            self.process.wait(timeout=10)
        except Exception:
            self.process.kill()
            self.process.wait()
        finally:
            os.close(self.commands)
            os.close(self.answers)
            self.log.close()
            shutil.rmtree(self.profile, ignore_errors=True)

    # --- the protocol -----------------------------------------------------------------------
    def _message(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("Chromium did not answer in time")
            ready, _, _ = select.select([self.answers], [], [], left)
            if ready:
                chunk = os.read(self.answers, 1 << 20)
                if not chunk:
                    raise BrowserError(f"Chromium ended (exit status {self.process.poll()}): {self.log_tail()}")
                self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def log_tail(self) -> str:
        self.log.seek(0)
        return " | ".join(self.log.read().strip().splitlines()[-5:])

    def send(self, method: str, params: dict | None = None, session: str | None = None, wait: bool = True) -> dict:
        self.next_id += 1
        command = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            command["sessionId"] = session
        os.write(self.commands, json.dumps(command).encode() + b"\0")
        if not wait:
            return {}
        deadline = time.monotonic() + self.timeout_s
        while True:
            message = self._message(deadline)
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for_event(self, method: str, session: str) -> dict:
        deadline = time.monotonic() + self.timeout_s
        while True:
            for index, event in enumerate(self.events):
                if event.get("method") == method and event.get("sessionId") == session:
                    return self.events.pop(index)
            self.events.append(self._message(deadline))

    def open(self, url: str, width: int = 1280, height: int = 900) -> "Tab":
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        tab = Tab(self, session)
        for domain in ("Page", "Runtime", "Log"):
            tab.send(f"{domain}.enable")
        tab.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                        "mobile": False})
        tab.send("Page.navigate", {"url": url})
        self.wait_for_event("Page.loadEventFired", session)
        return tab


class Tab:
    def __init__(self, browser: Chromium, session: str):
        self.browser, self.session = browser, session

    def log_tail(self) -> str:
        self.log.seek(0)
        return " | ".join(self.log.read().strip().splitlines()[-5:])

    def send(self, method: str, params: dict | None = None) -> dict:
        return self.browser.send(method, params, session=self.session)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (awaited when it is a promise)."""
        answer = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in answer:
            raise BrowserError(f"the page's JavaScript failed: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def console(self) -> list[str]:
        """What the page logged: console calls, and the browser's own messages (a refused script, an image
        that did not load, a Content-Security-Policy violation)."""
        lines = []
        for event in self.browser.events:
            if event.get("sessionId") != self.session:
                continue
            if event.get("method") == "Log.entryAdded":
                entry = event["params"]["entry"]
                lines.append(f"{entry.get('level')}: {entry.get('text')}")
            elif event.get("method") == "Runtime.consoleAPICalled":
                params = event["params"]
                lines.append(f"{params.get('type')}: " + " ".join(str(arg.get("value", arg.get("description", "")))
                                                                  for arg in params.get("args", [])))
            elif event.get("method") == "Runtime.exceptionThrown":
                lines.append(f"exception: {event['params']['exceptionDetails'].get('text')}")
        return lines

    def screenshot(self, path: Path, height: int | None = None) -> Path:
        """The whole page (or its top ``height`` pixels) as a PNG."""
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], height or size["height"]),
                "scale": 1}
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip})
        path.write_bytes(base64.b64decode(data["data"]))
        return path
