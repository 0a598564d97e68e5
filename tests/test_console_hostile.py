"""The console against a hostile world: markup in every string it shows, names that are JavaScript's own,
a ledger too big to send whole, framing by another page, requests from another origin, odd paths under /ui.

A real gateway on 127.0.0.1 with fake upstreams, and Debian's chromium (the fixtures of test_console.py).
Strings the fleet file cannot hold (its names are letters, digits and ._:/-) are written into the usage
ledger directly, as a store shared with other gateways, the CLI or an older version could hold them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import test_console
from conftest import Gateway, Upstream, eventually, write_fleet
from test_console import ADMIN, expect

from modelfleet.state import UsageRow, open_store

browser, console = test_console.browser, test_console.console  # the same chromium, the same tabs

XSS = "<img src=x onerror=\"window.__xss='{}'\">"
TEAM, ROUTE, DEPLOYMENT = XSS.format("team"), XSS.format("route"), "</script><script>window.__xss='dep'</script>"


def _today() -> str:
    return datetime.datetime.now(datetime.UTC).date().isoformat()


def _seed(url: str, rows: list[UsageRow]) -> None:
    async def run() -> None:
        store = open_store(url)
        await store.init()
        await store.add_usage(rows)
        await store.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # Playwright's sync API owns this thread's loop
        pool.submit(asyncio.run, run()).result()


def test_markup_in_names_answers_and_errors_is_shown_as_text_and_no_name_reaches_objects_prototype(
    tmp_path, start, console
):
    reply = XSS.format("reply") + "<b>bold</b>"
    good = start(Upstream, "--reply", reply)
    bad = start(Upstream, "--status", "400", "--error-message", XSS.format("error"))
    store = f"sqlite:///{tmp_path}/mf.db"
    day = _today()
    _seed(store, [
        UsageRow(day, TEAM, ROUTE, DEPLOYMENT, DEPLOYMENT, 5, 1, 10, 20, rate_limited=1),
        # Object.prototype.error would make every object look like an error reply: the playground would break
        UsageRow(day, "-", "__proto__", "good", "error", 3, 0, 10, 20),
        UsageRow(day, "-", "__proto__", "good", "constructor", 3, 0, 10, 20),
    ])  # fmt: skip
    fleet = write_fleet(
        tmp_path,
        f"""\
state: {{store: "{store}", flush_interval: 200ms}}
deployments:
  good: {{kind: openai, urls: ['{good.url}']}}
  bad: {{kind: openai, urls: ['{bad.url}']}}
routes:
  chat: {{deployments: [good]}}
  broken: {{deployments: [bad]}}
""",
    )
    gw = start(Gateway, fleet)
    tab = console(gw.base)
    tab.open("usage")
    page = tab.page
    page.wait_for_selector("#chart-usage .u-legend")
    assert TEAM in tab.legend("chart-usage") and TEAM in tab.legend("chart-429")
    for group, name in [("route", ROUTE), ("deployment", DEPLOYMENT), ("variant", "error")]:
        page.select_option("#group", group)
        expect(page.locator("#chart-usage .u-title")).to_have_text(f"requests per day by {group}")
        assert name in tab.legend("chart-usage"), group
    tab.shot("hostile-usage")

    tab.go("ab")
    card = page.locator(".card.route[data-route='__proto__']")
    card.wait_for()
    assert card.locator("h2").inner_text() == "__proto__"
    assert [card.locator(".variant").nth(i).get_attribute("data-variant") for i in range(2)] == ["constructor", "error"]
    assert page.evaluate("() => ({}).error === undefined && typeof ({}).constructor === 'function'")
    tab.shot("hostile-ab")

    tab.go("playground")
    page.fill("#prompt", "Hello")
    page.click("#send")
    pane = page.locator("[data-pane='0']")
    expect(pane.locator(".deployment")).to_have_text("good", timeout=15_000)
    assert pane.locator(".msg.assistant .content").inner_text() == reply
    page.select_option("[data-pane='0'] .route", "broken")
    page.fill("#prompt", "Hello again")
    page.click("#send")
    expect(pane.locator(".error")).to_contain_text("<img src=x onerror=", timeout=15_000)
    tab.shot("hostile-playground")

    assert page.locator("main img, main script, .content b").count() == 0  # every string stayed text
    assert page.evaluate("() => window.__xss") is None
    assert all("400" in e for e in tab.errors), tab.errors  # only the broken route's refusal


def test_a_large_ledger_is_summed_by_the_api_and_drawn_as_a_few_lines(tmp_path, start, console):
    teams, routes, days = 60, 10, 30
    start_day = datetime.datetime.now(datetime.UTC).date()
    rows = [
        UsageRow((start_day - datetime.timedelta(days=d)).isoformat(), f"team-{t:02}", f"route-{r}", v, v,
                 10 + t, 1, 100, 200, rate_limited=t % 3)
        for d in range(days) for t in range(teams) for r in range(routes) for v in ("base", "quant")
    ]  # fmt: skip
    store = f"sqlite:///{tmp_path}/mf.db"
    _seed(store, rows)
    up = start(Upstream)
    fleet = write_fleet(tmp_path, f"state: {{store: '{store}'}}\n"
                                  f"deployments: {{up: {{kind: openai, urls: ['{up.url}']}}}}\n"
                                  "routes: {chat: {deployments: [up]}}\n")  # fmt: skip
    gw = start(Gateway, fleet)
    tab = console(gw.base)
    sizes: dict[str, int] = {}
    tab.page.on("response", lambda r: "/usage?" in r.url and sizes.setdefault(r.url, len(r.body())))
    tab.open("usage")
    page = tab.page
    page.wait_for_selector("#chart-usage .u-legend", timeout=20_000)
    in_span = [r for r in rows if r.day >= (start_day - datetime.timedelta(days=13)).isoformat()]  # the 14d default
    expect(page.locator("[data-stat='requests'] .value")).to_have_text(f"{sum(r.requests for r in in_span):,}")
    assert page.locator("[data-stat='429s'] .value").inner_text() == f"{sum(r.rate_limited for r in in_span):,}"
    # The eight biggest teams have a line each (as many as there are colours); the other 53 share one.
    legend = tab.legend("chart-usage")
    assert len(legend) == 8 and "(53 more teams)" in legend and "team-59" in legend and "team-00" not in legend
    page.select_option("#group", "route")
    expect(page.locator("#chart-usage .u-title")).to_have_text("requests per day by route")
    assert len(tab.legend("chart-usage")) == 8
    tab.shot("usage-large-ledger")
    assert sizes and max(sizes.values()) < 200_000, sizes  # the whole ledger would be about 7 MB
    assert tab.errors == []


def test_framing_other_origins_and_odd_paths_under_ui(tmp_path, start, console):
    up = start(Upstream)
    fleet = write_fleet(tmp_path, f"auth: {{admin_key: {ADMIN}}}\n"
                                  f"deployments: {{up: {{kind: openai, urls: ['{up.url}']}}}}\n"
                                  "routes: {chat: {deployments: [up]}}\n")  # fmt: skip
    gw = start(Gateway, fleet)
    for path in ["/ui", "/ui/", "/ui/app.js", "/ui/pages/fleet.js", "/ui/vendor/uPlot.min.css"]:
        h = httpx.get(gw.base + path).headers
        assert h["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in h["content-security-policy"], path
        assert h["x-content-type-options"] == "nosniff", path
    for bad in ["/ui/..%2f..%2fpyproject.toml", "/ui/%2e%2e/%2e%2e/pyproject.toml", "/ui/..%5c..%5cpyproject.toml",
                "/ui//etc/passwd", "/ui/%2fetc%2fpasswd", "/ui/vendor/README.md", "/ui/pages/", "/ui/APP.JS",
                "/ui/app.js%00", "/ui/serve.py", "/ui/static/app.js"]:  # fmt: skip
        with httpx.Client() as c:  # as sent: no client-side normalisation of the dots
            r = c.send(c.build_request("GET", gw.base + bad, extensions={"raw_path": bad.encode()}))
        assert r.status_code == 404 and "text/html" not in r.headers["content-type"], bad

    # Another origin's page (served from 127.0.0.1 too: chromium refuses a public page's calls to a local
    # address before CSP or CORS could be tested). The console will not show in its frame, while a path
    # without the headers does (so the headers are what refuse it); and what it sends carries no key (the
    # key is in the console's sessionStorage, sent only as a header): every admin action is refused.
    tab = console(gw.base)
    tab.open()
    tab.use_key(ADMIN, "admin")
    evil = OtherOrigin(f"<iframe src='{gw.base}/ui/'></iframe><iframe src='{gw.base}/healthz'></iframe>")
    try:
        page = console(evil.base).page
        page.goto(evil.base)
        expect(page.locator("iframe")).to_have_count(2)
        framed = eventually(lambda: len(page.frames) == 3 and all(f.url != "about:blank" for f in page.frames)
                            and [f.url for f in page.frames[1:]], 10, "both frames navigated")  # fmt: skip
        assert framed == ["chrome-error://chromewebdata/", gw.base + "/healthz"]  # the console's is refused
        status = page.evaluate(
            """async (base) => {
                const out = [];
                for (const [method, path] of [["POST", "admin/deployments/up/stop"], ["POST", "admin/teams"],
                                              ["GET", "admin/teams"], ["GET", "v1/whoami"]]) {
                  try {
                    const r = await fetch(base + "/" + path, {method, body: method === "POST" ? "{}" : undefined,
                      credentials: "include"});
                    out.push(r.status);
                  } catch (e) { out.push("unreadable"); }
                }
                return out;
            }""",
            gw.base,
        )
    finally:
        evil.stop()
    # No answer is readable by the other origin (no CORS unless server.cors lists it); what it sent reached
    # the gateway without a key, and was refused.
    assert status == ["unreadable"] * 4, status
    assert re.search(r"POST /admin/deployments/up/stop 401", gw.output) and re.search(
        r"POST /admin/teams 401", gw.output
    )
    admin = {"Authorization": f"Bearer {ADMIN}"}
    assert httpx.get(gw.base + "/admin/deployments", headers=admin).json()["data"][0]["desired"] == "running"
    assert httpx.get(gw.base + "/admin/teams", headers=admin).json()["data"] == []


class OtherOrigin:
    """One HTML page from 127.0.0.1 on another port: another origin, on the same (local) network."""

    def __init__(self, html: str) -> None:
        body = html.encode()

        class Page(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def test_the_vendored_libraries_are_the_files_their_readme_names():
    # A changed byte in a vendored library (a hand edit, a bad merge) runs with the admin key: it must be the
    # release the table names, or the table must say what it is now.
    vendor = Path(test_console.__file__).resolve().parent.parent / "src/modelfleet/console/static/vendor"
    table = re.findall(r"^\| ([\w.-]+) \|.*\| ([0-9a-f]{64}) \|$", (vendor / "README.md").read_text(), re.M)
    assert {name for name, _ in table} == {"preact-htm.mjs", "uPlot.esm.js", "uPlot.min.css"}
    for name, digest in table:
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
