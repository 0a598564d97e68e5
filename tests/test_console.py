"""The console at /ui, in a real browser: Debian's chromium driven by Playwright (no browser download).

Against a running gateway with fake upstreams (and, in the slow test, the embedded engine). Each test
saves screenshots of the pages it visits; the folder is printed (MODELFLEET_TEST_ARTIFACTS moves it).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
import threading
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
        self.page.wait_for_selector("main[data-identified]", timeout=10_000)

    def go(self, page: str) -> None:
        self.page.click(f"#nav-{page}")
        self.page.wait_for_selector(f".page.{page}")

    def use_key(self, key: str, role: str) -> None:
        self.page.fill("#key", key)
        self.page.click("#use-key")
        self.page.wait_for_selector(f".who[data-role='{role}']")

    def confirm(self, yes: bool = True) -> str:
        """Answer the confirmation a destructive action asks first; returns its question."""
        dialog = self.page.locator("dialog#confirm[open]")
        dialog.wait_for()
        question = dialog.locator(".confirm-message").inner_text()
        dialog.locator("#confirm-yes" if yes else "#confirm-no").click()
        expect(self.page.locator("dialog#confirm[open]")).to_have_count(0)
        return question

    def legend(self, chart: str) -> set[str]:
        labels = self.page.locator(f"#{chart} .u-legend .u-series .u-label").all_inner_texts()
        return {t for t in labels if t != "Time"}

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
    for bad in [
        "/ui/../pyproject.toml",
        "/ui/%2e%2e/serve.py",
        "/ui/missing.js",
        "/ui/__init__.py",
        "/ui/%00.js",
        "/ui/index.html/",
    ]:
        assert httpx.get(gw.base + bad).status_code == 404, bad
    # Nothing on the page writes a style attribute or inline script: the CSP would block it.
    static = Path(__file__).resolve().parent.parent / "src/modelfleet/console/static"
    for f in [*static.glob("*.js"), *static.glob("pages/*.js")]:
        assert not re.search(r"\bstyle=", f.read_text()), f


def test_open_mode_streams_token_by_token_and_compares_two_routes(tmp_path, start, console):
    a, b = fake(start), fake(start, "--waiting", "3", "--kv-cache", "0.42")  # quant's engine readings
    fleet = write_fleet(
        tmp_path,
        f"""\
state: {{store: "sqlite:///{tmp_path}/mf.db", flush_interval: 200ms}}
deployments:
  base: {{kind: openai, urls: ['{a.url}']}}
  quant: {{kind: openai, urls: ['{b.url}'], load_metrics: {{interval: 250ms}}}}
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

    # Stop: the stream is cut where it is; what arrived stays, and no error is shown.
    page.uncheck("#compare")
    page.click("#clear")
    page.fill("#prompt", "A long one")
    page.click("#send")
    expect(answer).not_to_have_text("", timeout=10_000)
    page.click("#stop")
    page.wait_for_selector("#send")
    cut = answer.inner_text()
    page.wait_for_timeout(500)
    assert answer.inner_text() == cut and 0 < len(cut.split()) < 12
    assert page.locator("[data-pane='0'] .error").count() == 0

    # Traffic for the A/B page: the ab route splits between base and quant.
    with httpx.Client(base_url=gw.url, timeout=30) as c:
        for _ in range(16):
            c.post("/chat/completions", json=chat_body("ab", max_tokens=4)).raise_for_status()
    tab.go("fleet")
    page.wait_for_selector("[data-deployment='base'][data-observed='running']")
    page.wait_for_selector("[data-deployment='quant'][data-observed='running']")
    quant = page.locator("[data-deployment='quant'] [data-replica]")
    expect(quant.locator(".kv-cache")).to_have_text("42%")
    expect(quant.locator(".engine-waiting")).to_have_text("3")
    assert page.locator("[data-deployment='base'] [data-replica] .kv-cache").inner_text() == NONE  # not scraped
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
    for variant in ("base", "quant"):  # the configured weights, next to the split served
        assert route.locator(f"[data-variant='{variant}'] .weight").inner_text() == "50"
        assert route.locator(f"[data-variant='{variant}'] .configured").inner_text() == "50%"
        assert route.locator(f"[data-variant='{variant}'] .served").inner_text().endswith("%")
    assert route.locator(".split.configured .segment").count() == 2
    tab.shot("ab")
    assert tab.errors == []

    # A wrong key in open mode is said to be wrong, not quietly taken for open mode; Forget goes back.
    tab.use_key("not-the-admin-key-0123456789", "none")
    assert "401" in page.locator(".error").inner_text() and "open mode" in page.locator(".error").inner_text()
    assert page.locator("nav a").count() == 0
    page.click("#forget-key")
    page.wait_for_selector(".who[data-role='open']")
    assert tab.errors and all("401" in e for e in tab.errors), tab.errors  # only the refusal itself


def teams_fleet(tmp_path, a: Upstream, b: Upstream) -> Path:
    return write_fleet(
        tmp_path,
        f"""\
state: {{store: "sqlite:///{tmp_path}/mf.db", flush_interval: 200ms}}
auth: {{admin_key: {ADMIN}}}
teams:
  ops: {{keys: ["{OPS_KEY}"], routes: [chat, ab], limits: {{tokens_per_day: 100000, rpm: 6}}}}
deployments:
  base: {{kind: openai, urls: ['{a.url}']}}
  quant: {{kind: openai, urls: ['{b.url}']}}
routes:
  chat: {{deployments: [base]}}
  small: {{deployments: [quant]}}
  ab: {{deployments: {{base: 75, quant: 25}}}}
""",
    )


def test_a_team_key_sees_only_its_own_the_admin_sees_all_and_a_revoked_key_is_refused(tmp_path, start, console):
    gw = start(Gateway, teams_fleet(tmp_path, fake(start), fake(start)))
    with httpx.Client(base_url=gw.url, timeout=30, headers={"Authorization": f"Bearer {OPS_KEY}"}) as c:
        for model in ["chat", "ab", "ab", "ab", "ab", "ab"]:
            c.post("/chat/completions", json=chat_body(model, max_tokens=4)).raise_for_status()
        refused = [c.post("/chat/completions", json=chat_body("chat", max_tokens=4)) for _ in range(2)]
        assert [r.status_code for r in refused] == [429, 429]  # limits.rpm: 6
        limiter = c.get("/limits").json()["data"][0]["limits"]["tokens_per_day"]

    admin = console(gw.base)
    admin.open()
    assert admin.page.locator(".who").inner_text() == "no key"
    admin.page.locator("#needs-key").wait_for()
    admin.use_key(ADMIN, "admin")
    page = admin.page
    assert page.locator("nav a").all_inner_texts() == ["Fleet", "Usage", "A/B", "Keys & teams"]
    assert "admin-key" not in page.url  # the key lives in sessionStorage, never in a URL
    admin.go("fleet")
    page.wait_for_selector("[data-deployment='base'][data-observed='running']")
    assert "not managed" in page.locator("[data-deployment='base']").inner_text()
    admin.shot("fleet-admin")

    # Keys & teams: a new team, a key shown once, with a copy button.
    admin.go("keys")
    page.wait_for_selector(".team[data-team='ops']")
    page.fill("#team-name", "eval")
    page.fill("#team-routes", "small")
    page.fill("#team-tpd", "50000")
    page.click("#create-team")
    team = page.locator(".team[data-team='eval']")
    team.wait_for()
    team.locator(".create-key").click()
    key = page.locator("#new-key").inner_text()
    assert re.fullmatch(r"\S{20,}", key)
    page.click("#copy-key")
    expect(page.locator(".copied")).not_to_have_text("")
    expect(team.locator("tbody tr")).to_have_count(1)
    admin.shot("keys")

    # The team's own view: its route only, its usage only, its budget.
    mine = console(gw.base)
    mine.open()
    mine.use_key(key, "team")
    tp = mine.page
    assert tp.locator(".who").inner_text() == "team eval"
    assert tp.locator("nav a").all_inner_texts() == ["Playground", "Usage"]
    assert tp.locator("[data-pane='0'] .route option").all_inner_texts() == ["small"]
    tp.fill("#prompt", "Hi")
    tp.click("#send")
    expect(tp.locator("[data-pane='0'] .deployment")).to_have_text("quant", timeout=15_000)
    mine.go("usage")
    tp.wait_for_selector("#chart-usage .u-legend")
    assert mine.legend("chart-usage") == {"small"}
    tp.select_option("#group", "team")
    expect(tp.locator("#chart-usage .u-title")).to_have_text("requests per day by team")  # fetched by team
    assert mine.legend("chart-usage") == {"eval"}
    assert tp.locator(".budget").count() == 1 and "eval" in tp.locator(".budget").inner_text()
    assert tp.locator("#chart-live").count() == 0  # /metrics is every team's: not shown to a team key
    mine.shot("usage-team")
    assert mine.errors == []

    # The admin sees every team.
    admin.go("usage")
    page.wait_for_selector("#chart-usage .u-legend")
    expect(page.locator(".budget")).to_have_count(2)
    assert admin.legend("chart-usage") == {"ops", "eval"}
    # 429s: counted apart from errors, per team over time.
    assert page.locator("[data-stat='429s'] .value").inner_text() == "2"
    assert page.locator("[data-stat='errors'] .value").inner_text() == "0"
    assert admin.legend("chart-429") == {"ops", "eval"}
    page.select_option("#metric", "429s")
    page.wait_for_selector("#chart-usage .u-legend")
    # The budget bar is the limiter's count (/v1/limits), the rpm window too.
    ops_budget = page.locator(".budget[data-team='ops'][data-limit='tokens_per_day']")
    assert ops_budget.locator(".left").inner_text().replace(",", "") == str(limiter["remaining"])
    assert "renews in" in ops_budget.inner_text()
    expect(page.locator(".limit-now[data-team='ops'][data-limit='rpm'] .used")).to_have_text("6")
    admin.shot("usage-admin")
    admin.go("ab")
    route = page.locator(".card.route[data-route='ab']")
    route.wait_for()
    assert route.locator("[data-variant='base'] .configured").inner_text() == "75%"
    assert route.locator("[data-variant='quant'] .configured").inner_text() == "25%"
    admin.shot("ab-admin")

    # Revoked: the key stops working at once, and the page says so.
    admin.go("keys")
    page.locator(".team[data-team='eval'] .revoke").click()
    page.locator("dialog#confirm[open]").wait_for()
    admin.shot("keys-confirm")
    assert "Revoke key" in admin.confirm(yes=False)  # cancelled: nothing happens
    assert page.locator(".team[data-team='eval'] tbody tr").count() == 1
    assert httpx.get(gw.url + "/whoami", headers={"Authorization": f"Bearer {key}"}).json()["team"] == "eval"
    page.locator(".team[data-team='eval'] .revoke").click()
    admin.confirm()
    expect(page.locator(".team[data-team='eval'] tbody tr")).to_have_count(0)
    page.locator(".team[data-team='eval'] .delete-team").click()
    assert "Delete team eval" in admin.confirm()
    expect(page.locator(".team[data-team='eval']")).to_have_count(0)
    assert page.locator(".team[data-team='ops'] .delete-team").count() == 0  # the fleet file's: edit the file
    assert admin.errors == []
    mine.page.reload()
    mine.page.wait_for_selector("main[data-identified]")
    assert "401" in mine.page.locator(".error").inner_text()
    assert mine.page.locator("nav a").count() == 0
    mine.shot("revoked")
    assert mine.errors and all("401" in e for e in mine.errors), mine.errors  # only the refusal itself
    for secret in (key, ADMIN, OPS_KEY):  # keys travel in headers only: never in a URL or a log line
        assert secret not in gw.output
    who = httpx.get(gw.url + "/whoami", headers={"Authorization": f"Bearer {OPS_KEY}"}).json()
    assert who["role"] == "team" and who["team"] == "ops" and who["routes"] == ["ab", "chat"]
    assert httpx.get(gw.url + "/whoami").json()["role"] == "none"
    refused = httpx.post(
        gw.url + "/chat/completions", json=chat_body("small"), headers={"Authorization": f"Bearer {key}"}
    )
    assert refused.status_code == 401


@pytest.mark.slow
def test_a_stopped_deployment_shows_stopped_and_starting_it_from_the_page_makes_it_ready(tmp_path, start, console):
    fleet = write_fleet(
        tmp_path,
        f"""\
state: {{store: "sqlite:///{tmp_path}/mf.db"}}
auth: {{admin_key: {ADMIN}}}
deployments:
  engine:
    kind: llama-cpp
    threads: 1
    schedule: {{start: "1 0 1 1 *", stop: "0 0 1 1 *", timezone: UTC}}   # on all year but a minute
routes:
  chat: {{deployments: [engine]}}
""",
    )
    gw = start(Gateway, fleet)
    tab = console(gw.base)
    tab.open("fleet")
    tab.use_key(ADMIN, "admin")
    page = tab.page
    card = page.locator("[data-deployment='engine']")
    expect(card).to_have_attribute("data-observed", "running", timeout=30_000)
    assert re.fullmatch(
        r"schedule window running, next boundary \d{4}-\d\d-\d\d \d\d:\d\d", card.locator(".schedule").inner_text()
    )

    card.locator("#stop-engine").click()
    assert "Stop deployment engine?" in tab.confirm(yes=False)
    page.wait_for_timeout(1000)  # a cancelled stop asks nothing of the gateway
    assert card.get_attribute("data-observed") == "running" and card.locator(".progress").count() == 0
    card.locator("#stop-engine").click()
    tab.page.locator("dialog#confirm[open]").wait_for()
    tab.shot("fleet-confirm-stop")
    tab.confirm()
    expect(card).to_have_attribute("data-observed", "stopped", timeout=60_000)
    expect(card.locator(".progress")).to_have_count(0)
    expect(card.locator("[data-replica] .badge")).to_have_text("stopped")
    assert "stop by the admin API" in card.inner_text()
    tab.shot("fleet-stopped")

    card.locator("#start-engine").click()
    expect(card.locator(".progress")).to_contain_text("engine: ", timeout=10_000)  # the progress line, as the CLI's
    tab.shot("fleet-starting")
    expect(card).to_have_attribute("data-observed", "running", timeout=120_000)
    expect(card.locator("[data-replica] .badge")).to_have_text("ready")
    assert "start by the admin API" in card.inner_text()
    tab.shot("fleet-started")
    ready = httpx.post(gw.url + "/chat/completions", json=chat_body(max_tokens=4, temperature=0), timeout=60)
    assert ready.status_code == 200
    assert tab.errors == []


class PrefixProxy:
    """What an ingress with a path prefix does: {base}/llm/... goes to the gateway's /..., streams included."""

    def __init__(self, gateway: str, prefix: str = "/llm") -> None:
        from aiohttp import ClientSession, web

        async def forward(request: web.Request) -> web.StreamResponse:
            path = request.path_qs.removeprefix(prefix) or "/"
            headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
            async with (
                ClientSession(auto_decompress=False) as session,
                session.request(
                    request.method, gateway + path, headers=headers, data=await request.read(), allow_redirects=False
                ) as up,
            ):
                skip = ("content-length", "transfer-encoding", "connection")
                out = web.StreamResponse(
                    status=up.status, headers={k: v for k, v in up.headers.items() if k.lower() not in skip}
                )
                await out.prepare(request)
                async for chunk in up.content.iter_any():
                    await out.write(chunk)
                await out.write_eof()
                return out

        app = web.Application()
        app.router.add_route("*", prefix + "/{tail:.*}", forward)
        self.runner = web.AppRunner(app)
        self.loop = asyncio.new_event_loop()
        up = threading.Event()

        def serve() -> None:  # its own loop on its own thread: Playwright's sync API owns the main thread's
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.runner.setup())
            self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", 0).start())
            up.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        assert up.wait(10), "the prefix proxy did not start"
        self.base = f"http://127.0.0.1:{self.runner.addresses[0][1]}{prefix}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.mark.slow
def test_modelfleet_serve_with_no_config_behind_a_path_prefix_streams_from_the_embedded_engine(
    tmp_path, start, console
):
    # The built-in fleet, open mode: what a laptop runs (its store in a fresh data directory).
    gw = start(Gateway, None, env={"XDG_DATA_HOME": str(tmp_path)})
    proxy = PrefixProxy(gw.base)
    try:
        tab = console(proxy.base)
        tab.open()
        page = tab.page
        assert page.url.startswith(proxy.base + "/ui/")
        assert page.locator(".who").inner_text() == "open mode"
        assert page.locator("[data-pane='0'] .route option").all_inner_texts() == ["smollm2"]
        page.fill("#max-tokens", "24")
        page.fill("#temperature", "0")
        page.fill("#prompt", "What is the capital of France?")
        page.click("#send")
        pane = page.locator("[data-pane='0']")
        expect(pane.locator(".deployment")).to_have_text("smollm2", timeout=60_000)
        assert pane.locator(".msg.assistant .content").inner_text().strip()
        assert float(pane.locator(".tps").inner_text()) > 0
        tab.shot("playground-engine")
        tab.go("fleet")
        page.wait_for_selector("[data-deployment='smollm2'][data-observed='running']")
        tab.shot("fleet-engine")
        tab.go("usage")
        page.wait_for_selector("#chart-usage .u-legend")
        tab.go("ab")
        page.locator(".page.ab .empty").wait_for()  # one deployment, nothing split
        assert tab.errors == []
    finally:
        proxy.stop()
