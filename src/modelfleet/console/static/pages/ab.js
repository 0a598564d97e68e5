// A/B: for every weighted route, the configured weights (from /v1/whoami) next to the split actually
// served (from the usage ledger, which records the variant the split chose), and latency, TTFT and
// error rates by variant (/metrics).
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
      <span class="configured-share">weight <b class="weight">${v.weight == null ? "–" : v.weight}</b>${" "}
        (configured <b class="configured">${fmt.pct(v.configured)}</b>)</span>
      <span>served <b class="served">${fmt.pct(share)}</b> of ${fmt.int(v.requests)} requests</span>
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

function SplitBar({ variants, total, configured = false }) {
  return html`<div class=${`split${configured ? " configured" : ""}`} role="img" aria-label=${configured ? "configured weights" : "served split"}>
    ${variants.map((v, i) => html`<${Segment} frac=${configured ? v.configured || 0 : total ? v.requests / total : 0} i=${i} name=${v.name}
      label=${!configured} />`)}
  </div>`;
}

function Segment({ frac, i, name, label }) {
  // flex-grow through the CSSOM: the CSP forbids style attributes
  const ref = (el) => { if (el) el.style.flexGrow = String(frac); };
  return html`<div class=${`segment c${i % PALETTE.length}`} ref=${ref} title=${`${name}: ${fmt.pct(frac)}`}>${label && frac > 0.08 ? `${name} ${fmt.pct(frac)}` : ""}</div>`;
}

export function AB({ who }) {
  const [span, setSpan] = useState("7d");
  const data = usePoll(async () => {
    const path = who.role === "admin" ? "admin/usage" : "v1/usage";
    const [rows, text] = await Promise.all([get(`${path}?since=${span}&by=route,variant,deployment`).then((d) => d.data), get("metrics")]);
    return { rows, metrics: parseMetrics(text) };
  }, 3000, [span]);
  // Keyed by names from the ledger: maps without a prototype, so no name ("__proto__") can reach Object's.
  const routes = Object.create(null);
  const splits = Object.assign(Object.create(null), who.splits);
  const variant = (route, name) => ((routes[route] ||= Object.create(null))[name] ||= { name, requests: 0, errors: 0, weight: null, configured: null });
  for (const [route, weights] of Object.entries(splits)) {
    const sum = Object.values(weights).reduce((a, w) => a + w, 0);
    for (const [name, w] of Object.entries(weights)) Object.assign(variant(route, name), { weight: w, configured: w / sum });
  }
  for (const r of (data.data ? data.data.rows : [])) {
    const v = variant(r.route, r.variant);
    v.requests += r.requests;
    v.errors += r.errors;
  }
  // Every weighted route, traffic or not; and a route that served more than one variant (its weights changed).
  const split = Object.entries(routes).filter(([route, vs]) => splits[route] || Object.keys(vs).length > 1).sort();
  return html`<div class="page ab">
    <h1>A/B</h1>
    <${ErrorBox} error=${data.error} />
    <div class="controls"><label>Since <select id="ab-since" value=${span} onChange=${(e) => setSpan(e.target.value)}>
      ${["1d", "7d", "30d"].map((s) => html`<option value=${s}>${s}</option>`)}</select></label></div>
    ${data.data && !split.length ? html`<p class="empty">No route splits its traffic (a route with two or more weighted deployments).</p>` : null}
    ${split.map(([route, vs]) => {
      const variants = Object.values(vs).sort((a, b) => a.name.localeCompare(b.name)).map((v) => {
        const metrics = data.data ? data.data.metrics : []; // the weights are known before the first poll
        const lat = latencyOf(metrics, "modelfleet_request_duration_seconds", route, v.name);
        const ttft = latencyOf(metrics, "modelfleet_time_to_first_token_seconds", route, v.name);
        return { ...v, ...lat, ttft: ttft.p50 };
      });
      const total = variants.reduce((a, v) => a + v.requests, 0);
      const maxP95 = Math.max(0, ...variants.map((v) => v.p95 || 0));
      return html`<section class="card route" data-route=${route}>
        <h2>${route}</h2>
        ${total ? null : html`<p class="empty">No traffic in this span yet.</p>`}
        <${SplitBar} variants=${variants} total=${total} />
        <${SplitBar} variants=${variants} total=${total} configured=${true} />
        ${variants.map((v, i) => html`<${Variant} v=${v} i=${i} share=${total ? v.requests / total : 0} maxP95=${maxP95} />`)}
      </section>`;
    })}
    <p class="hint">The upper bar is the split served, the lower one the weights configured (routes.*.deployments).
      The split counts the variant each request was assigned; latency is measured on the deployment
      that answered (the same unless a fallback served it), since this gateway started.</p>
  </div>`;
}
