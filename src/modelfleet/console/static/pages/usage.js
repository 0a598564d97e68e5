// Usage: the ledger over days (per team, route, deployment or variant; requests refused by a team's
// limits, the 429s, counted apart), live rates from /metrics, and each team's limits as the limiter
// counts them now (/v1/limits): budgets as burn-down bars. The admin sees every team; a team key its own.
import { get, parseMetrics } from "../api.js";
import { html, useState, useRef, usePoll, ErrorBox, Bar, fmt, PALETTE } from "../ui.js";
import { Chart } from "../chart.js";

const GROUPS = ["team", "route", "deployment", "variant"];
const METRICS = {
  requests: (r) => r.requests, tokens: (r) => r.prompt_tokens + r.completion_tokens, errors: (r) => r.errors,
  "429s": (r) => r.rate_limited || 0,
};

function usagePath(who, since, by) {
  const base = who.role === "admin" ? "admin/usage" : "v1/usage";
  return `${base}?since=${encodeURIComponent(since)}&by=${by}`;
}

// More lines than colours is a chart nobody can read: the biggest keep their own line, the rest add up.
const MAX_SERIES = PALETTE.length;

// rows (already summed per day and group by the API) -> x (days as unix seconds) and one series per group
// value, in one pass: a ledger of many teams and routes stays quick to draw.
function byDay(rows, group, metric, since) {
  const first = Date.parse(`${since}T00:00:00Z`) / 1000;
  const days = [];
  for (let t = first; t <= Date.now() / 1000; t += 86400) days.push(t);
  const lines = new Map();
  for (const r of rows) {
    const i = Math.round((Date.parse(`${r.day}T00:00:00Z`) / 1000 - first) / 86400);
    if (!(i >= 0 && i < days.length)) continue;
    if (!lines.has(r[group])) lines.set(r[group], new Array(days.length).fill(0));
    lines.get(r[group])[i] += METRICS[metric](r);
  }
  const sum = (values) => values.reduce((a, v) => a + v, 0);
  const ranked = [...lines].sort((a, b) => sum(b[1]) - sum(a[1]) || String(a[0]).localeCompare(String(b[0])));
  // the biggest, then in name order: a line keeps its colour while the ranking shifts
  const kept = (ranked.length > MAX_SERIES ? ranked.slice(0, MAX_SERIES - 1) : ranked.slice())
    .sort((a, b) => String(a[0]).localeCompare(String(b[0])));
  const series = kept.map(([name, values]) => ({ label: name === "-" ? "(open mode)" : name || "(none)", values }));
  const rest = ranked.slice(kept.length); // ranked: what was not kept
  if (rest.length) {
    series.push({ label: `(${rest.length} more ${group}s)`, values: days.map((_, i) => sum(rest.map(([, v]) => v[i]))) });
  }
  return { x: days, series };
}

function sinceDate(span) {
  const n = Number(span.slice(0, -1));
  return new Date(Date.now() - (n - 1) * 86400000).toISOString().slice(0, 10);
}

// Live request rates per route from /metrics deltas, kept for as long as the page is open.
function Live() {
  const samples = useRef([]);
  const live = usePoll(async () => {
    const now = Date.now() / 1000;
    const totals = {};
    for (const m of parseMetrics(await get("metrics"))) {
      if (m.name !== "modelfleet_requests_total") continue;
      const t = (totals[m.labels.route || "-"] ||= { ok: 0, errors: 0, limited: 0 });
      const status = Number(m.labels.status);
      if (status === 429) t.limited += m.value;
      else if (status >= 400) t.errors += m.value;
      else t.ok += m.value;
    }
    samples.current = [...samples.current.slice(-150), { t: now, totals }];
    return samples.current;
  }, 2000);
  const s = live.data || [];
  const x = s.slice(1).map((p) => p.t);
  const all = [...new Set(s.flatMap((p) => Object.keys(p.totals)))].sort();
  const routes = all.filter((r) => r !== "-"); // "-": refused before a route was known, never answered
  const rate = (route, field) => s.slice(1).map((p, i) => {
    const a = (s[i].totals[route] || {})[field] || 0;
    const b = (p.totals[route] || {})[field] || 0;
    return Math.max(0, (b - a) / (p.t - s[i].t));
  });
  const sum = (field) => x.map((_, i) => all.reduce((a, r) => a + rate(r, field)[i], 0));
  const series = [...routes.map((r) => ({ label: `${r} answered/s`, values: rate(r, "ok") })),
    { label: "errors/s", values: sum("errors") }, { label: "429/s", values: sum("limited") }];
  return html`<section class="card"><h2>Live, since this page opened</h2>
    <${ErrorBox} error=${live.error} />
    <${Chart} id="chart-live" title="requests per second by route (answered, errors, 429s)" x=${x.length > 1 ? x : []} series=${series} live=${true} /></section>`;
}

const BUDGETS = { tokens_per_day: "today", tokens_per_month: "this month" };
const NOW = { rpm: "requests in the last minute", tpm: "tokens in the last minute", concurrency: "requests in flight" };

function renews(seconds) {
  const h = Math.floor(seconds / 3600);
  return h >= 48 ? `${Math.floor(h / 24)} days` : h ? `${h} h ${Math.floor((seconds % 3600) / 60)} min` : `${Math.ceil(seconds / 60)} min`;
}

// Each limit as the limiter counts it now: what the next request meets, reservations in flight included.
function Limits({ standings }) {
  const rows = standings.flatMap((s) => Object.entries(s.limits).map(([name, l]) => ({ team: s.team, name, ...l })));
  if (!rows.length) return html`<p class="empty">No team has limits (limits.rpm, tpm, concurrency, tokens_per_day, tokens_per_month).</p>`;
  const budgets = rows.filter((r) => BUDGETS[r.name]);
  const now = rows.filter((r) => NOW[r.name]);
  return html`<div class="budgets">${budgets.map((b) => {
    const frac = b.remaining / b.limit;
    return html`<div class="budget" data-team=${b.team} data-limit=${b.name}>
      <div class="budget-head"><b>${b.team}</b> ${BUDGETS[b.name]}: <span class="left">${fmt.int(b.remaining)}</span>${" "}
        of ${fmt.int(b.limit)} tokens left <span class="renews">(renews in ${renews(b.resets_in)})</span></div>
      <${Bar} fraction=${frac} kind=${frac < 0.1 ? "bad" : frac < 0.3 ? "warn" : "ok"} label=${`${fmt.pct(frac)} left`} />
    </div>`;
  })}
  ${now.map((b) => {
    const frac = b.used / b.limit;
    return html`<div class="limit-now" data-team=${b.team} data-limit=${b.name}>
      <div class="budget-head"><b>${b.team}</b> ${b.name}: <span class="used">${fmt.int(b.used)}</span> of ${fmt.int(b.limit)} ${NOW[b.name]}</div>
      <${Bar} fraction=${frac} kind=${frac > 0.9 ? "bad" : frac > 0.7 ? "warn" : "ok"} label=${`${fmt.pct(frac)} used`} />
    </div>`;
  })}</div>`;
}

export function Usage({ who }) {
  const [span, setSpan] = useState("14d");
  const [group, setGroup] = useState(who.role === "team" ? "route" : "team");
  const [metric, setMetric] = useState("requests");
  const since = sinceDate(span);
  const data = usePoll(async () => {
    // Summed by the API to what the charts draw (a day and a group; the 429 chart and totals by team),
    // not every row of the ledger: a month of many teams is a few hundred rows, not tens of thousands.
    const rows = (by) => get(usagePath(who, since, `day,${by}`)).then((d) => d.data);
    const [grouped, teams, standings] = await Promise.all([
      rows(group), group === "team" ? null : rows("team"),
      // The limiter (Redis, perhaps) may be away while the ledger is not: its error stays in its own card.
      (who.role === "admin" ? get("admin/limits") : who.role === "team" ? get("v1/limits") : Promise.resolve({ data: [] }))
        .then((d) => d.data, (error) => ({ error })),
    ]);
    return { group, since, grouped, teams: teams || grouped, standings };
  }, 5000, [span, group]);
  const d = data.data; // drawn as fetched: until a new grouping arrives, the last one stays on screen
  const chart = d ? byDay(d.grouped, d.group, metric, d.since) : { x: [], series: [] };
  const refused = d ? byDay(d.teams, "team", "429s", d.since) : { x: [], series: [] };
  const total = (f) => (d ? d.teams.reduce((a, r) => a + f(r), 0) : null);
  return html`<div class="page usage">
    <h1>Usage${who.role === "team" ? html` <small>team ${who.team}</small>` : ""}</h1>
    <${ErrorBox} error=${data.error} />
    <div class="controls">
      <label>Since <select id="since" value=${span} onChange=${(e) => setSpan(e.target.value)}>
        ${["1d", "7d", "14d", "30d"].map((s) => html`<option value=${s}>${s}</option>`)}</select></label>
      <label>By <select id="group" value=${group} onChange=${(e) => setGroup(e.target.value)}>
        ${GROUPS.map((g) => html`<option value=${g}>${g}</option>`)}</select></label>
      <label>Show <select id="metric" value=${metric} onChange=${(e) => setMetric(e.target.value)}>
        ${Object.keys(METRICS).map((m) => html`<option value=${m}>${m}</option>`)}</select></label>
    </div>
    <div class="stats-row totals">
      <div class="stat" data-stat="requests"><div class="label">requests</div><div class="value">${fmt.int(total(METRICS.requests))}</div></div>
      <div class="stat" data-stat="tokens"><div class="label">tokens</div><div class="value">${fmt.int(total(METRICS.tokens))}</div></div>
      <div class="stat" data-stat="errors"><div class="label">errors</div><div class="value">${fmt.int(total(METRICS.errors))}</div></div>
      <div class="stat" data-stat="429s"><div class="label">429s (limits)</div><div class="value">${fmt.int(total(METRICS["429s"]))}</div></div>
    </div>
    <section class="card"><${Chart} id="chart-usage" title=${`${metric} per day by ${d ? d.group : group}`} x=${chart.x} series=${chart.series} bars=${chart.series.length === 1} /></section>
    <section class="card"><${Chart} id="chart-429" title="429s per day by team: requests refused by the team's limits" x=${refused.x} series=${refused.series} bars=${refused.series.length === 1} /></section>
    <section class="card"><h2>Limits and budgets, as enforced now</h2>${d && d.standings.error ? html`<${ErrorBox} error=${d.standings.error} />`
      : d ? html`<${Limits} standings=${d.standings} />` : null}</section>
    ${who.role !== "team" ? html`<${Live} />` : null}
    <p class="hint">Days are UTC. The ledger is written every state.flush_interval; errors are failed requests,
      429s the requests a team's limits refused. Limits and budgets come from the limiter itself (GET /v1/limits):
      what the next request meets, tokens reserved by requests still in flight included.</p>
  </div>`;
}
