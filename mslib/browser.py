"""Open pages in headless Chromium and report what a reader's browser would complain about.

Talks the Chrome DevTools Protocol over a WebSocket (``websocket-client``, a Jupyter dependency): per page,
the console errors and uncaught exceptions, the resources that failed to load, and every ``<img>`` that did
not load; optionally a screenshot. Used by the site's test; ``python -m mslib.browser PAGE...`` runs it by hand.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BROKEN_IMAGES_JS = ("Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)"
                    ".map(i => i.getAttribute('src'))")


def chromium_path() -> str | None:
    """The Chromium (or Chrome) executable on PATH, if any."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


@dataclass
class PageReport:
    url: str
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, failed loads
    broken_images: list[str] = field(default_factory=list)
    title: str = ""


class Browser:
    """A headless Chromium with one page target, driven over CDP; use as a context manager."""

    def __init__(self, executable: str | None = None, width: int = 1280, height: int = 900, timeout: float = 60.0):
        self.executable = executable or chromium_path()
        if not self.executable:
            raise FileNotFoundError("no chromium on PATH (Debian: apt-get install chromium)")
        self.size, self.timeout = (width, height), timeout

    def __enter__(self) -> "Browser":
        import websocket

        self._profile = tempfile.mkdtemp(prefix="mslib-chromium-")
        args = [self.executable, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-dev-shm-usage", "--remote-debugging-port=0", f"--user-data-dir={self._profile}",
                f"--window-size={self.size[0]},{self.size[1]}", "about:blank"]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port_file, deadline = Path(self._profile) / "DevToolsActivePort", time.monotonic() + self.timeout
        while not port_file.is_file() or not port_file.read_text().strip():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                err = self._proc.stderr.read() if self._proc.poll() is not None else "timed out"
                self.__exit__(None, None, None)
                raise RuntimeError(f"chromium did not start: {err.strip()[-500:]}")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=self.timeout) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        self._ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=self.timeout,
                                               suppress_origin=True)
        self._id = 0
        for domain in ("Page", "Runtime", "Log", "Network"):
            self._call(f"{domain}.enable")
        return self

    def __exit__(self, *exc) -> None:
        if getattr(self, "_ws", None) is not None:
            self._ws.close()
        if getattr(self, "_proc", None) is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        shutil.rmtree(self._profile, ignore_errors=True)

    def _call(self, method: str, events: list | None = None, **params):
        self._id += 1
        self._ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self._ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if events is not None and "method" in msg:
                events.append(msg)

    def _wait_event(self, name: str, events: list) -> None:
        deadline = time.monotonic() + self.timeout
        try:
            while not any(e["method"] == name for e in events):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no {name} within {self.timeout} s")
                self._ws.settimeout(max(0.1, deadline - time.monotonic()))
                msg = json.loads(self._ws.recv())
                if "method" in msg:
                    events.append(msg)
        finally:
            self._ws.settimeout(self.timeout)  # the calls after it get the whole timeout again

    def open(self, url: str, screenshot: Path | None = None) -> PageReport:
        """Load ``url``, wait for its load event (and a moment for late errors), report what went wrong."""
        events: list = []
        self._call("Page.navigate", events, url=url)
        self._wait_event("Page.loadEventFired", events)
        time.sleep(0.3)
        self._call("Runtime.evaluate", events, expression="1")  # drains the events sent meanwhile
        report = PageReport(url)
        for e in events:
            p = e.get("params", {})
            if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                report.errors.append("console: " + " ".join(str(a.get("value", a.get("description", "")))
                                                             for a in p.get("args", [])))
            elif e["method"] == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                report.errors.append("exception: " + d.get("exception", {}).get("description", d.get("text", "")))
            elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                entry = p["entry"]
                report.errors.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())
            elif e["method"] == "Network.loadingFailed" and not p.get("canceled"):
                report.errors.append(f"failed to load: {p.get('errorText')} ({p.get('type')})")
        result = self._call("Runtime.evaluate", expression=BROKEN_IMAGES_JS, returnByValue=True)
        report.broken_images = result.get("result", {}).get("value") or []
        report.title = self._call("Runtime.evaluate", expression="document.title",
                                  returnByValue=True).get("result", {}).get("value", "")
        if screenshot is not None:
            shot = self._call("Page.captureScreenshot", format="png", captureBeyondViewport=False)
            Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
        return report


def site_pages(root: Path) -> list[Path]:
    """Every HTML page of a built Sphinx site (its search page, which needs no checking, left out)."""
    return sorted(p for p in Path(root).rglob("*.html")
                  if not re.match(r"(search|genindex)\.html$", p.name) and "_static" not in p.parts)


def main(argv: list[str] | None = None) -> int:
    pages = [Path(a) for a in (argv if argv is not None else sys.argv[1:])]
    bad = 0
    with Browser() as b:
        for page in pages:
            r = b.open(page.resolve().as_uri())
            for msg in r.errors + [f"broken image: {s}" for s in r.broken_images]:
                print(f"{page}: {msg}")
                bad += 1
    print(f"{len(pages)} pages, {bad} problems")
    return 1 if bad else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
