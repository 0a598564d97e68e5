"""Cost: hours from schedules (hand-computed, DST weeks included), dollars, and chargeback from a real ledger."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import httpx
import pytest
from conftest import Gateway, Upstream, chat_body, cli, write_fleet

from modelfleet.config import parse_fleet
from modelfleet.config.schema import Schedule
from modelfleet.cost import estimate, hours_between, load_prices, month_period

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
# Mon 2026-03-23 00:00 to Mon 2026-03-30 00:00 in Berlin: clocks go 02:00 -> 03:00 on Sun 2026-03-29.
SPRING = (datetime(2026, 3, 23, tzinfo=BERLIN), datetime(2026, 3, 30, tzinfo=BERLIN))
# Mon 2026-10-19 to Mon 2026-11-02 in Berlin: clocks go 03:00 -> 02:00 on Sun 2026-10-25.
AUTUMN = (datetime(2026, 10, 19, tzinfo=BERLIN), datetime(2026, 11, 2, tzinfo=BERLIN))


def sched(start: str | None, stop: str | None, tz: str = "Europe/Berlin", idle: str | None = None) -> Schedule:
    return Schedule(start=start, stop=stop, timezone=tz, idle_stop_after=idle)


def test_a_week_with_the_spring_dst_change():
    # The week has 7 x 24 - 1 = 167 real hours.
    assert hours_between(None, *SPRING).always_on == 167
    # 01:00-05:00 every night: 4 h, but 3 h on Sunday (02:00-03:00 does not exist): 6 x 4 + 3 = 27.
    assert hours_between(sched("0 1 * * *", "0 5 * * *"), *SPRING).most == 27
    # 22:00-06:00: Monday 00:00-06:00 (running since Sunday's start) = 6, five nights of 8, Saturday night
    # 22:00 CET -> 06:00 CEST = 7, Sunday 22:00-24:00 = 2: 6 + 40 + 7 + 2 = 55.
    overnight = hours_between(sched("0 22 * * *", "0 6 * * *"), *SPRING)
    assert overnight.most == 55
    # Office hours keep 11 wall-clock hours a day, DST or not: 5 x 11 = 55.
    assert hours_between(sched("0 7 * * MON-FRI", "0 18 * * MON-FRI"), *SPRING).most == 55


def test_two_weeks_with_the_autumn_dst_change():
    assert hours_between(None, *AUTUMN).always_on == 14 * 24 + 1
    # Monday 00:00-06:00 = 6, 12 nights of 8, the night of 24-25 October = 9, Sunday 1 November 22-24 = 2.
    assert hours_between(sched("0 22 * * *", "0 6 * * *"), *AUTUMN).most == 6 + 12 * 8 + 9 + 2
    assert hours_between(sched("0 7 * * MON-FRI", "0 18 * * MON-FRI"), *AUTUMN).most == 10 * 11


def test_a_schedule_in_another_timezone_across_its_own_dst_change():
    # New York springs forward on Sun 2026-03-08; a window 01:00-04:00 that Sunday lasts 2 real hours.
    week = (datetime(2026, 3, 2, tzinfo=NEW_YORK), datetime(2026, 3, 9, tzinfo=NEW_YORK))
    assert hours_between(sched("0 1 * * *", "0 4 * * *", "America/New_York"), *week).most == 6 * 3 + 2


def test_an_idle_stop_makes_a_range():
    # 8 windows in the spring week (see above), each cut to 30 minutes at the least: 4 h; at most 55 h.
    h = hours_between(sched("0 22 * * *", "0 6 * * *", idle="30m"), *SPRING)
    assert (h.least, h.most, h.always_on) == (4, 55, 167)
    # No schedule but an idle stop: one window, the whole period at most, 30 minutes at the least.
    h = hours_between(sched(None, None, idle="30m"), *SPRING)
    assert (h.least, h.most) == (0.5, 167)


def test_a_schedule_with_only_a_stop_counts_as_running_up_to_each_stop():
    # Nothing in it starts the deployment (people and requests do), so it may run up to every stop:
    # the whole week at most. With an idle stop, at least 1 h of each of the 8 windows the 7 stops cut.
    h = hours_between(sched(None, "0 20 * * *", idle="1h"), *SPRING)
    assert (h.least, h.most, h.always_on) == (8, 167, 167)
    assert hours_between(sched(None, "0 20 * * *"), *SPRING).most == 167  # never 0


@pytest.mark.parametrize(
    ("start", "stop"), [("0 7 * * MON-FRI", "0 18 * * MON-FRI"), ("0 22 * * *", "0 6 * * *"), ("0 8 * * *", None)]
)
def test_cost_windows_are_the_control_planes_windows(start, stop):
    from datetime import timedelta

    from modelfleet.control.schedules import window
    from modelfleet.cost import running_intervals

    schedule = sched(start, stop)
    intervals = running_intervals(schedule, *SPRING)
    at = SPRING[0].astimezone(UTC) + timedelta(minutes=15)
    while at < SPRING[1]:
        running = any(a <= at < b for a, b in intervals)
        assert running == (window(schedule, at.timestamp()).state == "running"), at
        at += timedelta(minutes=30)


def test_months_in_utc():
    assert month_period("2026-12") == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert hours_between(None, *month_period("2026-02")).always_on == 28 * 24
    with pytest.raises(ValueError, match="2026-11"):
        month_period("December")


FLEET = """\
teams:
  nlp: {tags: {team: nlp}}
deployments:
  office:        # 2 x ml.g5.2xlarge in us-east-1 ($1.515/h), 07-18 on weekdays in Berlin
    kind: sagemaker
    endpoint: office
    container: messages
    create: {image: img, role_arn: arn:aws:iam::1:role/r, instance_type: ml.g5.2xlarge, instance_count: 2,
             tags: {team: nlp}}
    schedule: {start: "0 7 * * MON-FRI", stop: "0 18 * * MON-FRI", timezone: Europe/Berlin, idle_stop_after: 1h}
  nightly:       # 1 x g6.xlarge in eu-central-1, 22-06 in Berlin
    kind: openai
    urls: [http://10.0.0.1:8000/v1]
    runs_on: {instance_type: g6.xlarge, region: eu-central-1, tags: {team: research}}
    schedule: {start: "0 22 * * *", stop: "0 6 * * *", timezone: Europe/Berlin}
  local: {kind: llama-cpp}
routes:
  chat: {deployments: [office]}
  night: {deployments: [nightly]}
  local: {deployments: [local]}
"""


def test_dollars_per_deployment_and_team_for_the_spring_week():
    prices = load_prices()
    fleet = parse_fleet(FLEET, env={})
    cost = estimate(fleet, *SPRING, prices)
    office, nightly, local = cost.deployments
    assert office.hourly == 1.515 and office.billing.count == 2
    assert office.most_usd == pytest.approx(1.515 * 2 * 55)  # 166.65
    assert office.least_usd == pytest.approx(1.515 * 2 * 5)  # 5 windows, at least 1 h each
    assert office.always_on_usd == pytest.approx(1.515 * 2 * 167)
    g6 = prices.hourly("ec2", "eu-central-1", "g6.xlarge")
    assert nightly.most_usd == pytest.approx(g6 * 55)
    assert local.hourly is None and local.most_usd == 0 and "not billed" in local.note
    teams = cost.by_team()
    assert teams["nlp"]["scheduled"] == pytest.approx(166.65)
    assert teams["research"]["scheduled"] == pytest.approx(g6 * 55)


def test_the_cli_table_json_and_chart(tmp_path):
    path = write_fleet(tmp_path, FLEET)
    done = cli("cost", "-f", str(path), "--month", "2026-03", "--json")
    doc = json.loads(done.stdout)
    office = next(d for d in doc["deployments"] if d["deployment"] == "office")
    # March 2026: 22 weekdays x 11 h = 242 h; 744 h in the month (UTC).
    assert office["hours"] == {"always_on": 744, "scheduled": 242, "least": 22}
    assert office["usd"]["scheduled"] == round(1.515 * 2 * 242, 2)
    assert doc["prices"]["as_of"] == "2026-11-23"

    table = cli("cost", "-f", str(path), "--month", "2026-03", "--chart", str(tmp_path / "cost.png"))
    assert "office" in table.stdout and "733.26" in table.stdout and "as of 2026-11-23" in table.stdout
    assert (tmp_path / "cost.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    prices = cli("cost", "prices")
    assert "as of 2026-11-23" in prices.stdout and "transcribed" in prices.stdout.lower()
    assert "--refresh" in cli("cost", "prices", "--help").stdout


ADMIN = "admin-key-0123456789abcdef"
KEYS = {"quant": "quant-key-0123456789abcdef", "eval": "eval-key-0123456789abcdefg"}


@pytest.fixture
def ledger_gateway(tmp_path):
    up = Upstream()
    path = write_fleet(tmp_path, f"""\
state: {{store: "sqlite:///{tmp_path}/modelfleet.db", flush_interval: 100ms}}
auth: {{admin_key: {ADMIN}}}
teams:
  quant: {{keys: ["{KEYS["quant"]}"]}}
  eval: {{keys: ["{KEYS["eval"]}"]}}
deployments:
  busy: {{kind: openai, urls: ["{up.url}"], runs_on: {{instance_type: g5.xlarge, region: us-east-1}}}}
  unused: {{kind: openai, urls: ["{up.url}"], runs_on: {{instance_type: c7i.large, region: us-east-1}}}}
routes:
  chat: {{deployments: [busy]}}
  spare: {{deployments: [unused]}}
""")  # fmt: skip
    gw = Gateway(path)
    yield gw, path
    gw.stop()
    up.stop()


def test_chargeback_shares_add_up_to_the_cost_from_a_ledger_written_by_real_requests(ledger_gateway):
    gw, path = ledger_gateway
    sent = {"quant": 3, "eval": 1}
    for team, n in sent.items():
        for _ in range(n):
            r = httpx.post(gw.url + "/chat/completions", json=chat_body("chat"),
                           headers={"Authorization": f"Bearer {KEYS[team]}"}, timeout=30)  # fmt: skip
            assert r.status_code == 200, r.text
    used = {t: 0 for t in sent}
    admin = {"Authorization": f"Bearer {ADMIN}"}
    for row in httpx.get(gw.base + "/admin/usage", params={"by": "team"}, headers=admin).json()["data"]:
        used[row["team"]] = row["total_tokens"]
    assert all(used.values())

    # The admin API: 3 days, so two whole days before today ran with nobody using them (idle).
    api = httpx.get(gw.base + "/admin/cost", params={"since": "3d"}, headers=admin).json()
    start, end = (datetime.fromisoformat(api["period"][k]) for k in ("start", "end"))
    hours = (end - start).total_seconds() / 3600
    assert 48 < hours <= 72
    totals = {d["deployment"]: d["usd"] for d in api["deployments"]}
    assert totals["busy"] == pytest.approx(1.006 * hours, abs=1e-4)  # always on: price x hours
    rows = {(r["deployment"], r["team"]): r for r in api["rows"]}
    for dep in ("busy", "unused"):
        assert sum(r["usd"] for (d, _), r in rows.items() if d == dep) == pytest.approx(totals[dep], abs=1e-5)
    assert rows[("unused", "(idle)")]["usd"] == pytest.approx(totals["unused"], abs=1e-5)
    today_hours = (end - end.replace(hour=0, minute=0, second=0, microsecond=0)).total_seconds() / 3600
    today = 1.006 * today_hours
    for team in sent:
        assert rows[("busy", team)]["tokens"] == used[team]
        share = used[team] / sum(used.values())
        assert rows[("busy", team)]["usd"] == pytest.approx(today * share, abs=1e-3)
    assert rows[("busy", "(idle)")]["usd"] == pytest.approx(1.006 * (hours - today_hours), abs=1e-3)

    # The CLI reads the same ledger from the store: the same split (its `now` is a moment later).
    done = cli("cost", "-f", str(path), "--chargeback", "--since", "3d", "--json")
    doc = json.loads(done.stdout)
    cli_rows = {(r["deployment"], r["team"]): r for r in doc["rows"]}
    assert set(cli_rows) == set(rows)
    for key, row in rows.items():
        assert cli_rows[key]["tokens"] == row["tokens"]
        assert cli_rows[key]["share"] == pytest.approx(row["share"], abs=1e-3)
    busy_total = next(d["usd"] for d in doc["deployments"] if d["deployment"] == "busy")
    assert sum(r["usd"] for (d, _), r in cli_rows.items() if d == "busy") == pytest.approx(busy_total, abs=1e-5)
    table = cli("cost", "-f", str(path), "--chargeback", "--since", "3d")
    assert "quant" in table.stdout and "(idle)" in table.stdout


class PriceListAnswers:
    """Answers in the shape of the AWS Price List API's get_products (moto has no `pricing` service).

    This checks how `refresh` asks and reads; it is not the real API, which needs credentials and network.
    """

    def __init__(self) -> None:
        self.asked: list[dict[str, str]] = []

    def get_products(self, *, ServiceCode: str, Filters: list[dict[str, str]], MaxResults: int) -> dict:
        asked = {f["Field"]: f["Value"] for f in Filters} | {"service": ServiceCode}
        self.asked.append(asked)
        if asked["instanceType"] != "g5.xlarge":
            return {"PriceList": []}
        dims = {"SKU.TERM.DIM": {"unit": "Hrs", "pricePerUnit": {"USD": "1.0100000000"}}}
        product = {"product": {"sku": "SKU"}, "terms": {"OnDemand": {"SKU.TERM": {"priceDimensions": dims}}}}
        return {"PriceList": [json.dumps(product)], "FormatVersion": "aws_v1"}


def test_refresh_asks_the_price_list_api_for_every_entry_and_keeps_what_it_cannot_price():
    from modelfleet.cost.prices import PriceTable, refresh

    base = PriceTable({"as_of": "2026-01-01", "ec2": {"us-east-1": {"g5.xlarge": 1.006}},
                       "sagemaker": {"eu-central-1": {"ml.g5.xlarge": 1.7}}}, "test")  # fmt: skip
    api = PriceListAnswers()
    doc = refresh(base, api, "2026-11-23")
    assert doc["ec2"]["us-east-1"]["g5.xlarge"] == 1.01
    assert doc["sagemaker"]["eu-central-1"]["ml.g5.xlarge"] == 1.7 and doc["not_refreshed"] == [
        "sagemaker/eu-central-1/ml.g5.xlarge"
    ]
    assert doc["as_of"] == "2026-11-23" and "Price List API" in doc["source"]
    ec2 = {"location": "US East (N. Virginia)", "instanceType": "g5.xlarge", "operatingSystem": "Linux",
           "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used", "service": "AmazonEC2"}  # fmt: skip
    assert api.asked[1] == ec2
    assert api.asked[0] == {"location": "EU (Frankfurt)", "instanceType": "ml.g5.xlarge", "component": "Hosting",
                            "service": "AmazonSageMaker"}  # fmt: skip
    refused = cli("cost", "prices", "--refresh", check=False)
    assert refused.returncode == 2 and "-o FILE" in refused.stderr


@pytest.mark.slow
def test_admin_cost_is_priced_off_the_event_loop(tmp_path, start):
    # 40 deployments, each with its own schedule, priced over 400 days: seconds of CPU work. Meanwhile the
    # gateway keeps answering: the pricing runs in a worker thread, not on the event loop.
    import threading
    import time

    deps = "\n".join(
        f'  d{i}: {{kind: openai, urls: ["http://127.0.0.1:{2000 + i}/v1"], runs_on: {{instance_type: g5.xlarge}},'
        f' schedule: {{start: "{i} 7 * * MON-FRI", stop: "{i} 19 * * MON-FRI", timezone: Europe/Berlin}}}}'
        for i in range(40)
    )
    path = write_fleet(tmp_path, f"""\
state: {{store: "sqlite:///{tmp_path}/modelfleet.db"}}
auth: {{admin_key: {ADMIN}}}
deployments:
{deps}
routes:
  chat: {{deployments: [d0]}}
""")  # fmt: skip
    gw = start(Gateway, path, wait_ready=False)  # listening is enough: no upstream behind these URLs
    answer: dict[str, httpx.Response] = {}

    def ask() -> None:
        answer["cost"] = httpx.get(gw.base + "/admin/cost", params={"since": "400d"},
                                   headers={"Authorization": f"Bearer {ADMIN}"}, timeout=300)  # fmt: skip

    asking = threading.Thread(target=ask)
    began = time.monotonic()
    asking.start()
    slowest = 0.0
    while asking.is_alive():
        t = time.monotonic()
        assert httpx.get(gw.base + "/healthz", timeout=60).status_code == 200
        slowest = max(slowest, time.monotonic() - t)
        time.sleep(0.02)
    took = time.monotonic() - began
    assert answer["cost"].status_code == 200 and len(answer["cost"].json()["deployments"]) == 40
    assert took > 0.5, "the pricing was too quick to show anything"
    assert slowest < took / 2, (slowest, took)
