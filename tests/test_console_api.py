"""What the console reads, without a browser: 429s in the usage ledger (and its migration, on SQLite and
PostgreSQL), the limiter's own view of each team's limits (/v1/limits), the weights of A/B routes and
/v1/whoami's answer to a wrong key in open mode.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import httpx
import pytest
from conftest import Gateway, Upstream, chat_body, eventually, write_fleet

from modelfleet.config.schema import Limits
from modelfleet.state import LocalCounters, UsageRow, open_store
from modelfleet.state.redis_counters import RedisCounters

ADMIN = "admin-key-0123456789abcdef0123"
KEY = "lim-key-0123456789abcdef012345"
OLD_USAGE = """CREATE TABLE usage (
    day TEXT NOT NULL, team TEXT NOT NULL, route TEXT NOT NULL, deployment TEXT NOT NULL,
    variant TEXT NOT NULL, requests BIGINT NOT NULL, errors BIGINT NOT NULL,
    prompt_tokens BIGINT NOT NULL, completion_tokens BIGINT NOT NULL,
    PRIMARY KEY (day, team, route, deployment, variant))"""  # as released before rate_limited
OLD_ROW = "INSERT INTO usage VALUES ('2026-11-01', 'ops', 'chat', 'up', 'up', 7, 3, 70, 140)"


async def _migrated(url: str) -> list[dict]:
    store = open_store(url)
    await store.init()  # adds the column to the old table
    await store.add_usage([UsageRow("2026-11-01", "ops", "chat", "up", "up", 2, 0, 20, 40, rate_limited=2)])
    await store.close()
    again = open_store(url)
    await again.init()  # a second start finds the column and changes nothing
    rows = await again.usage(since_day="2026-11-01", by=("team",))
    await again.close()
    return rows


MIGRATED = [{"team": "ops", "requests": 9, "errors": 3, "rate_limited": 2, "prompt_tokens": 90,
             "completion_tokens": 180, "total_tokens": 270}]  # fmt: skip


def test_an_older_sqlite_ledger_gets_the_rate_limited_column_and_keeps_its_rows(tmp_path):
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as old:
        old.execute(OLD_USAGE)
        old.execute(OLD_ROW)
    assert asyncio.run(_migrated(f"sqlite:///{db}")) == MIGRATED


def test_an_older_postgres_ledger_gets_the_rate_limited_column_and_keeps_its_rows(postgres):
    import asyncpg

    async def old_table() -> None:
        conn = await asyncpg.connect(postgres.url)
        await conn.execute("DROP TABLE IF EXISTS usage")
        await conn.execute(OLD_USAGE)
        await conn.execute(OLD_ROW)
        await conn.close()

    asyncio.run(old_table())
    assert asyncio.run(_migrated(postgres.url)) == MIGRATED

    async def concurrent_starts() -> None:  # two gateways migrating the same database at once: both start
        conn = await asyncpg.connect(postgres.url)
        await conn.execute("ALTER TABLE usage DROP COLUMN rate_limited")
        await conn.close()
        stores = [open_store(postgres.url) for _ in range(2)]
        await asyncio.gather(*(s.init() for s in stores))
        for s in stores:
            await s.close()

    asyncio.run(concurrent_starts())


def test_the_limiters_view_is_the_same_in_memory_and_in_redis(redis_server):
    limits = Limits(rpm=10, tpm=5000, concurrency=4, tokens_per_day=9000, tokens_per_month=90000)

    async def run(counters) -> tuple[dict, dict]:
        team = f"peek-{type(counters).__name__}"
        verdicts = [await counters.admit(team, limits, 100, f"lease-{i}") for i in range(3)]
        during = await counters.peek(team)
        for v in verdicts[:2]:
            counters.settle(team, limits, v, 40)  # reserved 100, used 40
        await asyncio.sleep(0.2)  # Redis settlements are sent without waiting for the reply
        after = await counters.peek(team)
        await counters.aclose()
        return during, after

    local, redis = asyncio.run(run(LocalCounters())), asyncio.run(run(RedisCounters(redis_server.url)))
    assert local == redis
    assert local[0] == {"rpm": 3, "tpm": 300, "concurrency": 3, "tokens_per_day": 300, "tokens_per_month": 300}
    assert local[1] == {"rpm": 3, "tpm": 180, "concurrency": 1, "tokens_per_day": 180, "tokens_per_month": 180}
    assert asyncio.run(LocalCounters().peek("nobody")) == dict.fromkeys(local[0], 0)


@pytest.fixture
def limited(tmp_path, start):
    slow, busy = start(Upstream, "--chunks", "30", "--chunk-delay", "0.1"), start(Upstream, "--status", "429")
    fleet = write_fleet(
        tmp_path,
        f"""\
state: {{store: "sqlite:///{tmp_path}/mf.db", flush_interval: 1h}}
auth: {{admin_key: {ADMIN}}}
teams:
  lim: {{keys: ["{KEY}"], routes: [chat, busy], limits: {{rpm: 3, tokens_per_day: 100000}}}}
deployments:
  slow: {{kind: openai, urls: ['{slow.url}']}}
  full: {{kind: openai, urls: ['{busy.url}']}}
routes:
  chat: {{deployments: [slow]}}
  busy: {{deployments: [full]}}
""",
    )
    return start(Gateway, fleet)


def test_429s_from_a_teams_limits_are_counted_apart_from_errors(limited):
    gw = limited
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=gw.url, headers=auth, timeout=30) as c:
        statuses = [c.post("/chat/completions", json=chat_body("chat", max_tokens=5)).status_code for _ in range(2)]
        statuses.append(c.post("/chat/completions", json=chat_body("busy", max_tokens=5)).status_code)  # upstream
        statuses += [c.post("/chat/completions", json=chat_body("chat", max_tokens=5)).status_code for _ in range(2)]
        assert statuses == [200, 200, 429, 429, 429]  # the third is the upstream's 429, the last two the rpm's
        rows = {r["route"]: r for r in c.get("/usage", params={"by": "route"}).json()["data"]}
    assert rows["chat"]["requests"] == 4 and rows["chat"]["rate_limited"] == 2 and rows["chat"]["errors"] == 0
    assert rows["busy"]["requests"] == 1 and rows["busy"]["rate_limited"] == 0 and rows["busy"]["errors"] == 1
    admin = httpx.get(gw.base + "/admin/usage", params={"by": "day,team"}, headers={"Authorization": f"Bearer {ADMIN}"})
    assert [(r["team"], r["rate_limited"]) for r in admin.json()["data"]] == [("lim", 2)]


def test_limits_show_what_the_limiter_will_enforce_reservations_in_flight_included(limited):
    gw = limited
    auth = {"Authorization": f"Bearer {KEY}"}

    def stream() -> None:  # 30 tokens at 0.1 s each: in flight for about 3 s, 500 tokens reserved meanwhile
        with httpx.stream("POST", gw.url + "/chat/completions", headers=auth, timeout=30,
                          json={**chat_body("chat", max_tokens=500), "stream": True}) as r:  # fmt: skip
            r.read()

    t = threading.Thread(target=stream)
    t.start()
    try:

        def standing() -> dict:
            doc = httpx.get(gw.url + "/limits", headers=auth).json()["data"]
            return doc[0]["limits"] if doc and doc[0]["limits"]["rpm"]["used"] else {}

        now = eventually(standing, 10, "the stream admitted")
        day = now["tokens_per_day"]
        assert day["used"] >= 500 and day["remaining"] == 100000 - day["used"] and 0 < day["resets_in"] <= 86400
        assert now["rpm"] == {"limit": 3, "used": 1, "remaining": 2, "per": "minute", "resets_in": None}
        ledger = httpx.get(gw.url + "/usage", headers=auth).json()["data"]
        assert ledger == []  # the ledger learns of a request only when it is done
    finally:
        t.join(30)
    after = httpx.get(gw.url + "/limits", headers=auth).json()["data"][0]["limits"]["tokens_per_day"]
    spent = httpx.get(gw.url + "/usage", headers=auth).json()["data"][0]["total_tokens"]
    assert after["used"] == spent < 500  # settled to what the deployment reported
    admin = httpx.get(gw.base + "/admin/limits", headers={"Authorization": f"Bearer {ADMIN}"}).json()["data"]
    assert [t["team"] for t in admin] == ["lim"] and admin[0]["limits"]["tokens_per_day"]["used"] == spent
    assert httpx.get(gw.base + "/admin/limits", headers=auth).status_code == 401
    assert httpx.get(gw.url + "/limits").status_code == 401  # teams exist: a key is needed
    assert httpx.get(gw.url + "/limits", headers={"Authorization": "Bearer wrong-key-0123456789"}).status_code == 401


def test_whoami_in_open_mode_refuses_a_wrong_key_and_tells_the_weights(tmp_path, start):
    up = start(Upstream)
    fleet = write_fleet(
        tmp_path,
        f"""\
state: {{store: "sqlite:///{tmp_path}/mf.db"}}
auth: {{admin_key: {ADMIN}}}
deployments:
  a: {{kind: openai, urls: ['{up.url}']}}
  b: {{kind: openai, urls: ['{up.url}']}}
routes:
  chat: {{deployments: [a]}}
  ab: {{deployments: {{a: 80, b: 20}}}}
  solo: {{deployments: {{a: 1, b: 0}}}}
""",
    )
    gw = start(Gateway, fleet)
    # The fleet page without the admin key: each deployment's state in the server's one word, from /readyz.
    running = {"a": "running", "b": "running"}
    eventually(lambda: httpx.get(gw.base + "/readyz").json()["deployments"] == running, 10, "both running")
    who = httpx.get(gw.url + "/whoami")
    assert who.status_code == 200 and who.json()["role"] == "open"
    assert who.json()["splits"] == {"ab": {"a": 80, "b": 20}}  # a weight of 0 splits nothing
    admin = httpx.get(gw.url + "/whoami", headers={"Authorization": f"Bearer {ADMIN}"}).json()
    assert admin["role"] == "admin" and admin["splits"] == {"ab": {"a": 80, "b": 20}}
    wrong = httpx.get(gw.url + "/whoami", headers={"Authorization": "Bearer not-the-admin-key-0123"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert "open mode" in wrong.json()["error"]["message"] and "not-the-admin" not in wrong.text
    # As before, open mode's OpenAI routes take any key (clients send placeholders), and /v1/limits has none.
    chat = httpx.post(gw.url + "/chat/completions", json=chat_body(), headers={"Authorization": "Bearer sk-anything"})
    assert chat.status_code == 200
    assert httpx.get(gw.url + "/limits").json()["data"] == []
