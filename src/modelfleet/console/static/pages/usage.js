// Usage: the ledger over days (per team, route, deployment or variant), live rates from /metrics,
// and token budgets as burn-down bars. The admin sees every team; a team key only its own.
import { get, parseMetrics } from "../api.js";
import { html, useState, useRef, usePoll, ErrorBox, Bar, fmt } from "../ui.js";
import { Chart } from "../chart.js";

const GROUPS = ["team", "route", "deployment", "variant"];
const METRICS = { requests: (r) => r.requests, tokens: (r) => r.prompt_tokens + r.completion_tokens, errors: (r) => r.errors };

const today = () => new Date().toISOString().slice(0, 10);
const monthStart = () => today().slice(0, 8) + "01";

function usagePath(who, since, by) {
  const base = who.role === "admin" ? "admin/usage" : "v1/usage";
  return `${base}?since=${encodeURIComponent(since)}&by=${by}`;
}

// rows -> x (days as unix seconds) and one series per group value
function byDay(rows, group, metric, since) {
  const days = [];
  const first = new Date(`${since}T00:00:00Z`).getTime() / 1000;
  for (let t = first; t <= Date.now() / 1000; t += 86400) days.push(t);
  const names = [...new Set(rows.map((r) => r[group]))].sort();
  const series = names.map((name) => ({
    label: name === "-" ? "(open mode)" : name || "(none)",
    values: days.map((t) => rows.filter((r) => r[group] === name && Date.parse(`${r.day}T00:00:00Z`) / 1000 === t)
      .reduce((a, r) => a + METRICS[metric](r), 0)),
  }));
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
  const routes = [...new Set(s.flatMap((p) => Object.keys(p.totals)))].filter((r) => r).sort();
  const rate = (route, field) => s.slice(1).map((p, i) => {
    const a = (s[i].totals[route] || {})[field] || 0;
    const b = (p.totals[route] || {})[field] || 0;
    return Math.max(0, (b - a) / (p.t - s[i].t));
  });
  const sum = (field) => x.map((_, i) => routes.reduce((a, r) => a + rate(r, field)[i], 0));
  const series = [...routes.map((r) => ({ label: `${r} answered/s`, values: rate(r, "ok") })),
    { label: "errors/s", values: sum("errors") }, { label: "429/s", values: sum("limited") }];
  return html`<section class="card"><h2>Live, since this page opened</h2>
    <${ErrorBox} error=${live.error} />
    <${Chart} id="chart-live" title="requests per second by route (answered, errors, 429s)" x=${x.length > 1 ? x : []} series=${series} live=${true} /></section>`;
}

function Budgets({ teams, month }) {
  const day = today();
  const spent = (team, from) => month.filter((r) => r.team === team && r.day >= from)
    .reduce((a, r) => a + r.prompt_tokens + r.completion_tokens, 0);
  const rows = teams.flatMap((t) => [["tokens_per_day", day, "today"], ["tokens_per_month", monthStart(), "this month"]]
    .filter(([limit]) => t.limits && t.limits[limit])
    .map(([limit, from, label]) => ({ team: t.name, label, limit: t.limits[limit], used: spent(t.name, from) })));
  if (!rows.length) return html`<p class="empty">No team has a token budget (limits.tokens_per_day or tokens_per_month).</p>`;
  return html`<div class="budgets">${rows.map((b) => {
    const left = Math.max(0, b.limit - b.used);
    const frac = left / b.limit;
    return html`<div class="budget" data-team=${b.team}>
      <div class="budget-head"><b>${b.team}</b> ${b.label}: ${fmt.int(left)} of ${fmt.int(b.limit)} tokens left</div>
      <${Bar} fraction=${frac} kind=${frac < 0.1 ? "bad" : frac < 0.3 ? "warn" : "ok"} label=${`${fmt.pct(frac)} left`} />
    </div>`;
  })}</div>`;
}

export function Usage({ who }) {
  const [span, setSpan] = useState("14d");
  const [group, setGroup] = useState(who.role === "team" ? "route" : "team");
  const [metric, setMetric] = useState("requests");
  const since = sinceDate(span);
  const data = usePoll(async () => {
    const [rows, month, teams] = await Promise.all([
      get(usagePath(who, since, "day,team,route,deployment,variant")).then((d) => d.data),
      get(usagePath(who, monthStart(), "day,team")).then((d) => d.data),
      who.role === "admin" ? get("admin/teams").then((d) => d.data)
        : who.role === "team" ? [{ name: who.team, limits: who.limits }] : [],
    ]);
    return { rows, month, teams };
  }, 5000, [span]);
  const d = data.data;
  const chart = d ? byDay(d.rows, group, metric, since) : { x: [], series: [] };
  const total = (f) => (d ? d.rows.reduce((a, r) => a + f(r), 0) : null);
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
      <div class="stat" data-stat="errors"><div class="label">errors (incl. 429s)</div><div class="value">${fmt.int(total(METRICS.errors))}</div></div>
    </div>
    <section class="card"><${Chart} id="chart-usage" title=${`${metric} per day by ${group}`} x=${chart.x} series=${chart.series} bars=${chart.series.length === 1} /></section>
    <section class="card"><h2>Budgets</h2>${d ? html`<${Budgets} teams=${d.teams} month=${d.month} />` : null}</section>
    ${who.role !== "team" ? html`<${Live} />` : null}
    <p class="hint">Days are UTC. The ledger is written every state.flush_interval; errors count every refused or failed request, 429s among them.</p>
  </div>`;
}
