// A/B: for every route that split its traffic, the split actually served (from the usage ledger,
// which records the variant the split chose) and latency, TTFT and error rates by variant (/metrics).
import { get, parseMetrics } from "../api.js";
import { html, useState, usePoll, ErrorBox, Bar, fmt, PALETTE } from "../ui.js";

// The q-quantile of a Prometheus histogram, interpolated inside its bucket (as histogram_quantile does).
function quantile(buckets, q) {
  const total = buckets.length ? buckets[buckets.length - 1].count : 0;
  if (!total) return null;
  const rank = q * total;
  let prevLe = 0, prevCount = 0;
  for (const b of buckets) {
    if (b.count >= rank) {
      if (!isFinite(b.le)) return prevLe;
      return prevLe + ((b.le - prevLe) * (rank - prevCount)) / Math.max(1, b.count - prevCount);
    }
    prevLe = b.le; prevCount = b.count;
  }
  return null;
}

function latencyOf(metrics, name, route, deployment) {
  const byLe = new Map(); // one series per team and variant: their buckets add up
  for (const m of metrics) {
    if (m.name !== `${name}_bucket` || m.labels.route !== route || m.labels.deployment !== deployment) continue;
    const le = m.labels.le === "+Inf" ? Infinity : Number(m.labels.le);
    byLe.set(le, (byLe.get(le) || 0) + m.value);
  }
  const buckets = [...byLe].map(([le, count]) => ({ le, count })).sort((a, b) => a.le - b.le);
  return { p50: quantile(buckets, 0.5), p95: quantile(buckets, 0.95) };
}

function Variant({ v, i, share, maxP95 }) {
  return html`<div class="variant" data-variant=${v.name}>
    <div class="variant-head"><span class=${`swatch c${i % PALETTE.length}`}></span><b>${v.name}</b>
      <span>${fmt.pct(share)} of ${fmt.int(v.requests)} requests</span>
      <span>errors <b class="error-rate">${fmt.pct(v.requests ? v.errors / v.requests : null)}</b></span>
      <span>latency p50 <b>${fmt.ms(v.p50 == null ? null : v.p50 * 1000)}</b> p95 <b>${fmt.ms(v.p95 == null ? null : v.p95 * 1000)}</b></span>
      <span>TTFT p50 <b>${fmt.ms(v.ttft == null ? null : v.ttft * 1000)}</b></span>
    </div>
    <div class="latency-bars">
      <span>p50</span><${Bar} fraction=${maxP95 ? (v.p50 || 0) / maxP95 : 0} kind="latency" label="p50 latency" />
      <span>p95</span><${Bar} fraction=${maxP95 ? (v.p95 || 0) / maxP95 : 0} kind="latency" label="p95 latency" />
    </div>
  </div>`;
}

function SplitBar({ variants, total }) {
  return html`<div class="split" role="img" aria-label="served split">
    ${variants.map((v, i) => html`<${Segment} frac=${total ? v.requests / total : 0} i=${i} name=${v.name} />`)}
  </div>`;
}

function Segment({ frac, i, name }) {
  // flex-grow through the CSSOM: the CSP forbids style attributes
  const ref = (el) => { if (el) el.style.flexGrow = String(frac); };
  return html`<div class=${`segment c${i % PALETTE.length}`} ref=${ref} title=${`${name}: ${fmt.pct(frac)}`}>${frac > 0.08 ? `${name} ${fmt.pct(frac)}` : ""}</div>`;
}

export function AB({ who }) {
  const [span, setSpan] = useState("7d");
  const data = usePoll(async () => {
    const path = who.role === "admin" ? "admin/usage" : "v1/usage";
    const [rows, text] = await Promise.all([get(`${path}?since=${span}&by=route,variant,deployment`).then((d) => d.data), get("metrics")]);
    return { rows, metrics: parseMetrics(text) };
  }, 3000, [span]);
  const routes = {};
  for (const r of (data.data ? data.data.rows : [])) {
    const route = (routes[r.route] ||= {});
    const v = (route[r.variant] ||= { name: r.variant, requests: 0, errors: 0 });
    v.requests += r.requests;
    v.errors += r.errors;
  }
  const split = Object.entries(routes).filter(([, vs]) => Object.keys(vs).length > 1).sort();
  return html`<div class="page ab">
    <h1>A/B</h1>
    <${ErrorBox} error=${data.error} />
    <div class="controls"><label>Since <select id="ab-since" value=${span} onChange=${(e) => setSpan(e.target.value)}>
      ${["1d", "7d", "30d"].map((s) => html`<option value=${s}>${s}</option>`)}</select></label></div>
    ${data.data && !split.length ? html`<p class="empty">No route has served more than one variant in this span yet.</p>` : null}
    ${split.map(([route, vs]) => {
      const variants = Object.values(vs).sort((a, b) => a.name.localeCompare(b.name)).map((v) => {
        const lat = latencyOf(data.data.metrics, "modelfleet_request_duration_seconds", route, v.name);
        const ttft = latencyOf(data.data.metrics, "modelfleet_time_to_first_token_seconds", route, v.name);
        return { ...v, ...lat, ttft: ttft.p50 };
      });
      const total = variants.reduce((a, v) => a + v.requests, 0);
      const maxP95 = Math.max(0, ...variants.map((v) => v.p95 || 0));
      return html`<section class="card route" data-route=${route}>
        <h2>${route}</h2>
        <${SplitBar} variants=${variants} total=${total} />
        ${variants.map((v, i) => html`<${Variant} v=${v} i=${i} share=${total ? v.requests / total : 0} maxP95=${maxP95} />`)}
      </section>`;
    })}
    <p class="hint">The split counts the variant each request was assigned; latency is measured on the deployment
      that answered (the same unless a fallback served it), since this gateway started.</p>
  </div>`;
}
