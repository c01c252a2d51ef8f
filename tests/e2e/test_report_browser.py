"""The HTML report of a real scan, opened in headless Chromium: it loads without console
errors, the verdict is visible, every chart is a non-empty SVG, every gallery image decodes,
and a screenshot is not blank. User strings (class names, paths) that look like markup
render as text in HTML and are escaped in summary.md and junit.xml.

Chromium is driven through the DevTools protocol over ``--remote-debugging-pipe`` (no extra
Python dependency, no port). ``.ci/run`` installs Chromium; where it is absent locally the
browser tests skip with the reason, unless ``ROBAUDIT_REQUIRE_BROWSER=1`` (set by ``.ci/run``)
turns the absence into a failure.
"""

from __future__ import annotations

import base64
import contextlib
import html as html_lib
import io
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

pytestmark = pytest.mark.slow

EVIL_CLASS = "<script>alert(1)</script>"
# one class named exactly EVIL_CLASS; the others carry markup, table pipes, mentions and emphasis
CLASS_NAMES = [
    EVIL_CLASS if i == 1 else f"<script>alert({i})</script> a|b *c{i}* @team #{i} [x](y)"
    for i in range(10)
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    explicit = os.environ.get("ROBAUDIT_CHROMIUM")
    if explicit:
        return explicit
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def require_chromium() -> str:
    path = find_chromium()
    if path is None:
        reason = (
            "headless Chromium not found (looked for " + ", ".join(BROWSERS) + " and "
            "$ROBAUDIT_CHROMIUM); install it with `apt-get install chromium` (.ci/run does)"
        )
        if os.environ.get("ROBAUDIT_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def chromium() -> str:
    """The browser binary (module scope, so a missing browser skips before the scan runs)."""
    return require_chromium()


class DevTools:
    """A minimal DevTools-protocol client over Chromium's ``--remote-debugging-pipe``
    (fd 3: commands in, fd 4: replies and events out; JSON messages ended by NUL)."""

    def __init__(self, binary: str, profile: Path, timeout: float = 60.0) -> None:
        self.timeout = timeout
        to_r, self._to_w = os.pipe()
        self._from_r, from_w = os.pipe()
        args = [
            "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions",
            "--disable-background-networking", "--disable-sync", "--hide-scrollbars",
            "--window-size=1200,900", f"--user-data-dir={profile}", "about:blank",
        ]
        # a tiny launcher puts our pipe ends on fds 3 and 4, where Chromium expects them
        launcher = (
            "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
            "os.execv(sys.argv[3], sys.argv[3:])"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", launcher, str(to_r), str(from_w), binary, *args],
            pass_fds=(to_r, from_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        os.close(to_r)
        os.close(from_w)
        self._buf = b""
        self._next = 0
        self.events: list[dict[str, Any]] = []

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from Chromium")
            ready, _, _ = select.select([self._from_r], [], [], left)
            if ready:
                chunk = os.read(self._from_r, 1 << 20)
                if not chunk:
                    err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                    raise RuntimeError(f"Chromium closed the pipe: {err[-2000:]}")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        msg: dict[str, Any] = json.loads(raw)
        if msg.get("method") == "Page.javascriptDialogOpening":  # it would block the page
            self._post("Page.handleJavaScriptDialog", {"accept": False}, msg.get("sessionId"))
        return msg

    def _post(self, method: str, params: dict[str, Any], session: str | None) -> int:
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._to_w, json.dumps(msg).encode() + b"\0")
        return self._next

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        """Run one command and return its result (events seen meanwhile are kept)."""
        sent = self._post(method, params or {}, session)
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == sent:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        for e in self.events:
            if e.get("method") == method:
                return e
        while True:
            e = self._read_message(deadline)
            self.events.append(e)
            if e.get("method") == method:
                return e

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.send("Browser.close")
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_w)
        os.close(self._from_r)
        if self.proc.stderr:
            self.proc.stderr.close()


PROBE = """(() => {
  const big = document.querySelector('#verdict .verdict .big');
  const box = big ? big.getBoundingClientRect() : null;
  const style = big ? getComputedStyle(big) : null;
  const svgs = [...document.querySelectorAll('svg')].map(s => {
    const b = s.getBoundingClientRect();
    const sec = s.closest('section');
    return {section: sec ? sec.id : null, width: b.width, height: b.height,
            polylines: s.querySelectorAll('polyline').length,
            points: s.querySelectorAll('circle').length,
            title: (s.querySelector('title') || {}).textContent || ''};
  });
  const imgs = [...document.querySelectorAll('#gallery img')].map(i => ({
    complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}));
  return {verdict: big ? big.textContent.trim() : null,
          verdictVisible: !!box && box.width > 0 && box.height > 0 && box.top >= 0 &&
                          box.bottom <= window.innerHeight && style.visibility !== 'hidden' &&
                          style.display !== 'none' && parseFloat(style.opacity) > 0,
          svgs, imgs, scripts: document.scripts.length,
          text: document.body.innerText, html: document.documentElement.outerHTML};
})()"""


def open_report(binary: str, page: Path, tmp: Path) -> tuple[dict[str, Any], bytes, list[dict[str, Any]]]:
    """Load ``page`` in headless Chromium: (DOM probe, PNG screenshot, every event seen)."""
    tools = DevTools(binary, tmp / "profile")
    try:
        target = tools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = tools.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            tools.send(f"{domain}.enable", session=session)
        tools.send("Emulation.setDeviceMetricsOverride",
                   {"width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session)
        tools.send("Page.navigate", {"url": page.resolve().as_uri()}, session)
        tools.wait_for("Page.loadEventFired")
        probe = tools.send(
            "Runtime.evaluate", {"expression": PROBE, "returnByValue": True}, session
        )["result"]["value"]
        shot = tools.send("Page.captureScreenshot", {"format": "png"}, session)["data"]
        return probe, base64.b64decode(shot), list(tools.events)
    finally:
        tools.close()


def console_errors(events: list[dict[str, Any]]) -> list[str]:
    """Console errors, uncaught exceptions and error log entries (failed loads included)."""
    out = []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append(f"console.{p['type']}: {p.get('args')}")
        elif m == "Runtime.exceptionThrown":
            out.append(f"exception: {p.get('exceptionDetails', {}).get('text')}")
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        elif m == "Page.javascriptDialogOpening":
            out.append(f"dialog: {p.get('message')}")
    return out


# ----------------------------------------------------------------------------- the scan


@pytest.fixture(scope="module")
def evil_scan(
    tmp_path_factory: pytest.TempPathFactory, tiny_config: Any, cli: Any, plain_model_path: Path
) -> tuple[Path, dict[str, Any]]:
    """The plain sample model, from a path with ``<b>`` in it and with markup class names,
    scanned with FGSM, PGD and a small black-box Square run (so the query chart exists)."""
    tmp = tmp_path_factory.mktemp("browser")
    folder = tmp / "<b>models"
    folder.mkdir()
    model = folder / "digits <b>cnn.pt"
    shutil.copyfile(plain_model_path, model)
    cfg = tiny_config(
        tmp,
        model={"class_names": CLASS_NAMES},
        attacks=[
            {"name": "fgsm", "norm": "linf", "eps": [0.1, 0.2]},
            {"name": "pgd", "norm": "linf", "eps": [0.1, 0.2], "steps": 3},
            {"name": "square", "norm": "linf", "eps": [0.2], "queries": 40},
        ],
        gate={"min_robust_accuracy": [{"norm": "linf", "eps": 0.1, "value": 0.9}]},
        report={"examples": 2},
    )
    out = tmp / "out"
    result = cli("scan", model, "--config", cfg, "--out", out, "--quiet")
    assert result.exit_code == 1, result.output  # the plain model fails this gate
    doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert doc["model"]["path"] == str(model)
    return out, doc


def test_scan_wrote_every_format(evil_scan: tuple[Path, dict[str, Any]], validate_report: Any) -> None:
    out, doc = evil_scan
    assert {p.name for p in out.iterdir()} == {
        "report.json", "report.html", "results.csv", "summary.md", "junit.xml"
    }
    validate_report(doc)
    assert any(a.get("query_curve") for a in doc["attacks"]), "square left no query curve"
    assert doc["examples"], "no gallery examples to check"


def test_report_renders_in_headless_chromium(
    chromium: str, evil_scan: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    binary = chromium
    out, doc = evil_scan
    probe, shot, events = open_report(binary, out / "report.html", tmp_path)
    assert console_errors(events) == []
    # the verdict is the first thing a reviewer sees
    assert probe["verdict"] == "FAIL"
    assert probe["verdictVisible"], "the verdict is not visible in the first screen"
    assert probe["scripts"] == 0
    # every chart: one eps chart per norm, one query chart per black-box threat
    charts = [s for s in probe["svgs"] if s["section"] in ("charts", "black-box")]
    norms = {t["norm"] for t in doc["threats"]}
    curves = {a["threat_key"] for a in doc["attacks"] if a.get("query_curve")}
    assert len([s for s in charts if s["section"] == "charts"]) == len(norms)
    assert len([s for s in charts if s["section"] == "black-box"]) == len(curves) >= 1
    for s in charts:
        assert s["width"] > 100 and s["height"] > 100, s
        assert s["polylines"] >= 1 and s["points"] >= 2, s
        assert s["title"], s
    # every gallery image was decoded by the browser, and decodes in PIL from the DOM
    assert len(probe["imgs"]) == 3 * len(doc["examples"])
    assert all(i["complete"] and i["width"] > 0 and i["height"] > 0 for i in probe["imgs"])
    srcs = re.findall(r'<img src="data:image/png;base64,([^"]+)"', probe["html"])
    assert len(srcs) == len(probe["imgs"])
    for src in srcs:
        raw = base64.b64decode(src, validate=True)
        assert raw.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(raw)) as im:
            im.load()
            assert im.width > 0 and im.height > 0
    # a screenshot that shows something
    path = tmp_path / "report.png"
    path.write_bytes(shot)
    with Image.open(path) as im:
        rgb = im.convert("RGB")
        assert rgb.size == (1200, 900)
        colours = rgb.getcolors(maxcolors=1 << 20)
        assert colours is None or len(colours) > 1, "the screenshot has one colour"
        assert rgb.getextrema() != ((255, 255), (255, 255), (255, 255)), "the screenshot is all white"
        # the FAIL banner's red (#cf222e) is on screen
        assert any(r > 180 and g < 80 and b < 80 for _, (r, g, b) in colours or [])


def test_markup_in_user_strings_renders_as_text_in_chromium(
    chromium: str, evil_scan: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    binary = chromium
    out, doc = evil_scan
    probe, _, events = open_report(binary, out / "report.html", tmp_path)
    assert not [e for e in events if e.get("method") == "Page.javascriptDialogOpening"]
    assert probe["scripts"] == 0
    assert EVIL_CLASS in probe["text"]  # shown as the literal text
    assert doc["model"]["path"] in probe["text"]
    assert "<b>" not in probe["html"].replace("&lt;b&gt;", "")  # no bold element was made


def test_markup_in_user_strings_is_escaped_in_the_html_source(
    evil_scan: tuple[Path, dict[str, Any]]
) -> None:
    out, doc = evil_scan
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<script" not in page.lower() and "<b>" not in page
    assert html_lib.escape(EVIL_CLASS, quote=False) in page
    assert html_lib.escape(doc["model"]["path"], quote=False) in page


def _md_cells(row: str) -> list[str]:
    """A Markdown table row split on unescaped pipes."""
    return re.split(r"(?<!\\)\|", row.strip().strip("|"))


def test_markup_in_user_strings_is_escaped_in_summary_md(
    evil_scan: tuple[Path, dict[str, Any]]
) -> None:
    out, doc = evil_scan
    md = (out / "summary.md").read_text(encoding="utf-8")
    for active in ("<", ">", "@", "#", "[", "*"):  # only ever backslash-escaped
        assert not re.search(r"(?<!\\)" + re.escape(active), md.replace("→", "").replace("**", "")
                             .replace("## ", "").replace("- ", "")), active
    assert r"\<b\>" in md  # the model path, escaped
    table = [line for line in md.splitlines() if line.startswith("| ")]
    header = _md_cells(table[0])
    assert len(table) == 1 + len(doc["threats"])
    for row in table[1:]:
        assert len(_md_cells(row)) == len(header), row  # a class name's | did not split a cell
    weakest = [_md_cells(row)[-1].strip() for row in table[1:]]
    assert any(r"\<script\>alert\(" in w for w in weakest), weakest


def test_markup_in_user_strings_is_escaped_in_junit(evil_scan: tuple[Path, dict[str, Any]]) -> None:
    out, doc = evil_scan
    text = (out / "junit.xml").read_text(encoding="utf-8")
    assert "<script" not in text and "<b>" not in text
    root = ET.fromstring(text)  # well-formed
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["model.path"] == doc["model"]["path"]  # the exact string survives escaping
    suite_out = root.find("testsuite/system-out")
    assert suite_out is not None and "<script>alert(" in (suite_out.text or "")
    failures = list(root.iter("failure"))
    assert failures and all(f.get("message") for f in failures)
