"""The console at /ui, in a real browser: Debian's chromium driven by Playwright (no browser download).

Against a running gateway with fake upstreams (and, in the slow test, the embedded engine). Each test
saves screenshots of the pages it visits; the folder is printed (MODELFLEET_TEST_ARTIFACTS moves it).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Gateway, Upstream, _missing, chat_body, write_fleet

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture says what is missing
    expect = None

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]  # fmt: skip
NONE = "\u2013"  # what the page shows for a number it does not have yet
ADMIN = "admin-key-0123456789abcdef0123"
OPS_KEY = "ops-key-0123456789abcdef0123456"
ARTIFACTS = Path(os.environ.get("MODELFLEET_TEST_ARTIFACTS", Path(tempfile.gettempdir()) / "modelfleet-artifacts"))


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if expect is None:
        _missing("playwright is not installed (pip install -e '.[test]')")
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        _missing("chromium is not installed (apt-get install chromium)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Console:
    """One browser tab on the console; collects every console error and uncaught exception."""

    def __init__(self, browser, base: str, shots: Path) -> None:
        self.context = browser.new_context(viewport={"width": 1360, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(f"{m.text} @ {m.location}"))
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.base = base
        self.shots = shots

    def open(self, page: str = "") -> None:
        self.page.goto(f"{self.base}/ui/#/{page}")
        self.page.wait_for_selector(".who[data-role]:not([data-role='none'])", timeout=10_000)

    def go(self, page: str) -> None:
        self.page.click(f"#nav-{page}")
        self.page.wait_for_selector(f".page.{page}")

    def use_key(self, key: str) -> None:
        self.page.fill("#key", key)
        self.page.click("#use-key")

    def shot(self, name: str) -> None:
        self.page.wait_for_timeout(300)  # let charts lay out
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def console(browser, request) -> Iterator:
    shots = ARTIFACTS / "console" / request.node.name
    shots.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {shots}")
    tabs: list[Console] = []

    def open_tab(base: str) -> Console:
        tab = Console(browser, base, shots)
        tabs.append(tab)
        return tab

    yield open_tab
    for tab in tabs:
        tab.close()


def fake(start, *flags: str) -> Upstream:
    return start(Upstream, "--chunks", "12", "--chunk-delay", "0.08", *flags)


def test_headers_static_files_and_the_redirect(tmp_path, start):
    up = fake(start)
    fleet = write_fleet(tmp_path, f"deployments: {{up: {{kind: openai, urls: ['{up.url}']}}}}\n"
                                  "routes: {chat: {deployments: [up]}}\n")  # fmt: skip
    gw = start(Gateway, fleet)
    r = httpx.get(gw.base + "/ui")
    assert r.status_code == 308 and r.headers["location"] == "ui/"  # relative: a proxy prefix survives
    r = httpx.get(gw.base + "/ui/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "no-referrer"
    assert 'src="app.js"' in r.text and "<script>" not in r.text and "style=" not in r.text
    js = httpx.get(gw.base + "/ui/app.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    for bad in ["/ui/../pyproject.toml", "/ui/%2e%2e/serve.py", "/ui/missing.js", "/ui/__init__.py"]:
        assert httpx.get(gw.base + bad).status_code == 404, bad
    # Nothing on the page writes a style attribute or inline script: the CSP would block it.
    static = Path(__file__).resolve().parent.parent / "src/modelfleet/console/static"
    for f in [*static.glob("*.js"), *static.glob("pages/*.js")]:
        assert not re.search(r"\bstyle=", f.read_text()), f


def test_open_mode_streams_token_by_token_and_compares_two_routes(tmp_path, start, console):
    a, b = fake(start), fake(start)
    fleet = write_fleet(
        tmp_path,
        f"""\
state: {{store: "sqlite:///{tmp_path}/mf.db", flush_interval: 200ms}}
deployments:
  base: {{kind: openai, urls: ['{a.url}']}}
  quant: {{kind: openai, urls: ['{b.url}']}}
routes:
  chat: {{deployments: [base]}}
  chat-quant: {{deployments: [quant]}}
  ab: {{deployments: {{base: 50, quant: 50}}}}
""",
    )
    gw = start(Gateway, fleet)
    tab = console(gw.base)
    tab.open()
    page = tab.page
    assert page.locator(".who").inner_text() == "open mode"
    page.fill("#system", "You are terse.")
    page.fill("#temperature", "0.2")
    page.fill("#max-tokens", "12")
    page.fill("#prompt", "Hello there")
    page.click("#send")
    # Token by token: the answer is seen growing, several lengths before it is complete.
    seen: list[int] = []
    answer = page.locator("[data-pane='0'] .msg.assistant .content").last
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if answer.count():
            n = len(answer.inner_text())
            if not seen or n != seen[-1]:
                seen.append(n)
        if page.locator("[data-pane='0'] .deployment").inner_text() != NONE:
            break
        page.wait_for_timeout(20)
    assert len([n for n in seen if n > 0]) >= 4, seen
    assert seen == sorted(seen)
    pane = page.locator("[data-pane='0']")
    assert pane.locator(".deployment").inner_text() == "base"
    assert pane.locator(".ttft").inner_text().endswith("ms")
    assert float(pane.locator(".tps").inner_text()) > 0
    assert re.fullmatch(r"\d+ in, \d+ out", pane.locator(".usage").inner_text())
    tab.shot("playground")

    # Compare: one prompt, two routes side by side.
    page.check("#compare")
    page.select_option("[data-pane='0'] .route", "chat")
    page.select_option("[data-pane='1'] .route", "chat-quant")
    page.fill("#prompt", "Compare me")
    page.click("#send")
    expect(page.locator("[data-pane='1'] .deployment")).to_have_text("quant", timeout=15_000)
    page.wait_for_selector("#send:not([disabled])")
    assert page.locator("[data-pane='0'] .deployment").inner_text() == "base"
    tab.shot("playground-compare")

    # Traffic for the A/B page: the ab route splits between base and quant.
    with httpx.Client(base_url=gw.url, timeout=30) as c:
        for _ in range(16):
            c.post("/chat/completions", json=chat_body("ab", max_tokens=4)).raise_for_status()
    tab.go("fleet")
    page.wait_for_selector("[data-deployment='base'][data-observed='running']")
    page.wait_for_selector("[data-deployment='quant'][data-observed='running']")
    tab.shot("fleet-open-mode")
    tab.go("usage")
    page.wait_for_selector("#chart-usage .u-legend")
    expect(page.locator("[data-stat='requests'] .value")).not_to_have_text(NONE)
    assert int(page.locator("[data-stat='requests'] .value").inner_text().replace(",", "")) >= 18
    page.wait_for_selector("#chart-live .u-legend", timeout=10_000)
    tab.shot("usage-open-mode")
    tab.go("ab")
    route = page.locator(".card.route[data-route='ab']")
    route.wait_for()
    assert route.locator(".variant").count() == 2
    assert "ms" in route.locator("[data-variant='base']").inner_text()
    tab.shot("ab")
    assert tab.errors == []
