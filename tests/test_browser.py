"""The report opened in a real browser: headless Chromium (Debian's ``chromium`` package, which
``make test`` installs where it is missing) driven over the DevTools protocol with websocket-client,
so no browser download and no driver whose version must match the browser's. The report is
conftest's ``tiny_report``, built once per test run.

Screenshots and what the browser saw go to ``$SEGATTACK_TEST_ARTIFACTS`` (default
``test-artifacts/``, git-ignored): ``report-top.png``, ``report-table1.png`` and ``browser-log.json``.
Not under ``reports/``: ``make report`` writes there and refuses a folder holding files it did
not write, so ``make test`` before ``make report`` would stop the report.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("SEGATTACK_TEST_ARTIFACTS", ROOT / "test-artifacts"))
# Headless, offline and quiet: no sandbox (CI runs as root), no GPU, no background traffic of the
# browser's own (updates, sync, QUIC probes), a fresh profile per run.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
VIEWPORT = (1280, 900)
START_TIMEOUT, PAGE_TIMEOUT = 60.0, 120.0

IMAGES_JS = """(async () => {
  const images = Array.from(document.images);
  const decoded = await Promise.all(images.map(img => img.decode().then(() => true, () => false)));
  return images.map((img, i) => ({src: img.src.slice(0, 40), decoded: decoded[i],
                                  width: img.naturalWidth, height: img.naturalHeight}));
})()"""

# The first table after the heading that starts "Table 1", scrolled into view: its size, whether CSS
# shows it and whether it is what the browser hits at its top-left corner (nothing covers it).
TABLE1_JS = """(() => {
  const heading = Array.from(document.querySelectorAll("h1, h2, h3"))
    .find(h => h.textContent.trim().startsWith("Table 1"));
  if (!heading) return {heading: null};
  const table = document.evaluate("following::table[1]", heading, null,
                                  XPathResult.FIRST_ORDERED_NODE_TYPE, null).singleNodeValue;
  if (!table) return {heading: heading.textContent.trim(), rows: 0};
  table.scrollIntoView({block: "start"});
  const box = table.getBoundingClientRect();
  const hit = document.elementFromPoint(Math.max(box.left, 0) + 4, Math.max(box.top, 0) + 4);
  return {heading: heading.textContent.trim(), rows: table.rows.length, header: table.rows[0].innerText,
          width: box.width, height: box.height, shown: table.checkVisibility({checkOpacity: true,
          checkVisibilityCSS: true}), on_top: table.contains(hit)};
})()"""


class DevTools:
    """A DevTools-protocol session on one page: a command waits for its reply, and the events that
    arrive meanwhile are kept, in order, in ``events``."""

    def __init__(self, url: str) -> None:
        try:
            import websocket
        except ImportError:
            pytest.fail("the browser test needs websocket-client (pip install websocket-client)")
        # no Origin header: Chromium refuses DevTools websockets from origins it was not told to allow
        self.ws = websocket.create_connection(url, timeout=PAGE_TIMEOUT, suppress_origin=True)
        self.events: list[dict[str, Any]] = []
        self._id = 0

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, event: str) -> dict[str, Any]:
        """The first ``event`` received (now or before)."""
        deadline = time.monotonic() + PAGE_TIMEOUT
        found = [e for e in self.events if e.get("method") == event]
        while not found and time.monotonic() < deadline:
            self.events.append(json.loads(self.ws.recv()))
            found = [e for e in self.events[-1:] if e.get("method") == event]
        if not found:
            raise TimeoutError(f"no {event} within {PAGE_TIMEOUT:.0f} s")
        return found[0]

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression (a promise is awaited)."""
        reply = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in reply, reply["exceptionDetails"]
        return reply["result"].get("value")

    def screenshot(self, path: Path) -> Image.Image:
        data = base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])
        path.write_bytes(data)
        return Image.open(io.BytesIO(data))


@contextmanager
def browser(executable: str, profile: Path) -> Iterator[DevTools]:
    """Headless Chromium with a fresh profile, and a DevTools session on its blank page."""
    log = (profile.parent / "chromium-stderr.txt").open("w")
    proc = subprocess.Popen(
        [executable, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    session = None
    try:
        active = profile / "DevToolsActivePort"  # the port Chromium chose, written once it listens
        deadline = time.monotonic() + START_TIMEOUT
        while not (active.exists() and active.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(
                    f"Chromium did not start (exit {proc.poll()}): "
                    f"{(profile.parent / 'chromium-stderr.txt').read_text()[-2000:]}"
                )
            time.sleep(0.1)
        port = int(active.read_text().split()[0])
        local = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
        with local.open(f"http://127.0.0.1:{port}/json/list", timeout=START_TIMEOUT) as reply:
            pages = [t for t in json.load(reply) if t["type"] == "page"]
        session = DevTools(pages[0]["webSocketDebuggerUrl"])
        yield session
    finally:
        if session is not None:
            session.ws.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def problems(events: list[dict[str, Any]], page: str) -> tuple[list[str], list[str]]:
    """(console errors and uncaught exceptions, requests for anything but the page or inline data)."""
    errors, requests = [], []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            errors.append(params["exceptionDetails"].get("exception", {}).get("description", str(params)))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            errors.append(f"{params['entry']['source']}: {params['entry']['text']}")
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if url != page and not url.startswith("data:"):
                requests.append(url)
    return errors, requests


def test_report_opens_in_chromium_with_its_figures_and_table_1(chromium, tiny_report, tmp_path):
    page = (tiny_report.out / "index.html").as_uri()  # the tiny report, built once per test run
    with browser(chromium, tmp_path / "profile") as tab:
        for domain in ("Runtime", "Log", "Network", "Page"):
            tab.send(f"{domain}.enable")
        tab.send(
            "Emulation.setDeviceMetricsOverride",
            width=VIEWPORT[0],
            height=VIEWPORT[1],
            deviceScaleFactor=1,
            mobile=False,
        )
        tab.send("Page.navigate", url=page)
        tab.wait_for("Page.loadEventFired")
        images = tab.evaluate(IMAGES_JS)
        top = tab.screenshot(tmp_path / "report-top.png")
        table = tab.evaluate(TABLE1_JS)
        shot = tab.screenshot(tmp_path / "report-table1.png")
        tab.evaluate("1")  # a last round trip: events sent before it are in
    errors, requests = problems(tab.events, page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (tmp_path / "browser-log.json").write_text(
        json.dumps({"page": page, "errors": errors, "requests": requests, "images": images, "table1": table}, indent=1)
    )
    for name in ("report-top.png", "report-table1.png", "browser-log.json"):
        shutil.copy(tmp_path / name, ARTIFACTS / name)

    assert errors == [], errors
    assert requests == [], requests  # the page and its inline data only
    assert len(images) >= 5, images  # the tiny report's figures: examples, loss curves, studies
    small = [i for i in images if not (i["decoded"] and i["width"] >= 100 and i["height"] >= 100)]
    assert small == [], small
    assert table["heading"] and table["rows"] >= 3 and "IoU" in table["header"], table
    assert table["shown"] and table["on_top"] and table["width"] >= 300 and table["height"] >= 40, table
    for screenshot in (top, shot):
        assert screenshot.size == VIEWPORT
        assert len(screenshot.convert("L").getcolors()) > 16  # drawn: not a blank page


HEADLINE_JS = """(() => {
  const heading = Array.from(document.querySelectorAll("h3"))
    .find(h => h.textContent.trim().startsWith("Clean and robust scores"));
  if (!heading) return {heading: null};
  const block = heading.parentElement;
  const tables = block.querySelectorAll("table");
  const table = tables[0], card = block.querySelector("table.protocol");
  table.scrollIntoView({block: "start"});
  const box = table.getBoundingClientRect(), side = card ? card.getBoundingClientRect() : null;
  const hit = document.elementFromPoint(Math.max(box.left, 0) + 4, Math.max(box.top, 0) + 4);
  return {heading: heading.textContent.trim(), rows: table.rows.length, header: table.rows[0].innerText,
          width: box.width, height: box.height, on_top: table.contains(hit),
          card_rows: card ? card.rows.length : 0, card_beside: side ? side.left >= box.right : false,
          card_text: card ? card.innerText : ""};
})()"""


@pytest.fixture(scope="module")
def evaluation_html(chromium, tmp_path_factory) -> Path:
    """A tiny evaluation report built through the CLI, as a user builds one (once a browser is there)."""
    out = tmp_path_factory.mktemp("browser-evaluation")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "segattack",
            "evaluate",
            "--model",
            "mobilenet_v3_large",
            "-p",
            "weights=embedded",
            "-p",
            "num_images=2",
            "-p",
            "size=32",
            "-p",
            "steps=2",
            "--attacks",
            "pgd,apgd,fmn",
            "--eps",
            "2/255,8/255",
            "--out",
            str(out),
            "--cluster",
            "inprocess",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return out / "index.html"


def test_evaluation_report_shows_its_headline_table_protocol_and_curves(chromium, evaluation_html, tmp_path):
    page = evaluation_html.as_uri()
    with browser(chromium, tmp_path / "profile") as tab:
        for domain in ("Runtime", "Log", "Network", "Page"):
            tab.send(f"{domain}.enable")
        tab.send("Emulation.setDeviceMetricsOverride", width=1400, height=900, deviceScaleFactor=1, mobile=False)
        tab.send("Page.navigate", url=page)
        tab.wait_for("Page.loadEventFired")
        images = tab.evaluate(IMAGES_JS)
        table = tab.evaluate(HEADLINE_JS)
        shot = tab.screenshot(tmp_path / "evaluation-headline.png")
        tab.evaluate("1")
    errors, requests = problems(tab.events, page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(tmp_path / "evaluation-headline.png", ARTIFACTS / "evaluation-headline.png")
    assert errors == [] and requests == [], (errors, requests)
    assert len(images) >= 3, images  # robust accuracy and smallest-eps curves, the worst images
    assert all(i["decoded"] and i["width"] >= 200 for i in images), images
    assert table["heading"] and table["rows"] == 3, table  # a header and one row per radius
    assert "worst-case mIoU" in table["header"] and "pgd mIoU" in table["header"], table
    assert table["on_top"] and table["width"] >= 300, table
    assert table["card_rows"] >= 10 and table["card_beside"] and "2, 8" in table["card_text"], table
    assert len(shot.convert("L").getcolors()) > 16
