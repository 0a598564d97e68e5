// Fleet: every deployment and replica, live. Admin status (/admin/deployments) when the key opens it;
// otherwise what /readyz says; the numbers come from /metrics either way (the engine's own readings,
// load, queue and KV cache, where a deployment has load_metrics).
import { get, post, parseMetrics, ApiError } from "../api.js";
import { html, useState, useEffect, useRef, usePoll, ErrorBox, Badge, Stat, fmt, confirmAction } from "../ui.js";

const FOLLOW_SECONDS = 1800; // as the CLI's --timeout: 30 minutes
const GOAL = { start: "running", stop: "stopped" };

async function readiness() {
  try {
    return await get("readyz");
  } catch (e) {
    if (e instanceof ApiError && e.status === 503 && e.doc && e.doc.not_ready) return e.doc; // not ready: still the facts
    throw e;
  }
}

// One shape for both sources: [{name, kind?, desired?, observed, reason?, schedule?, wakes, error?, replicas}]
function assemble(status, ready, metrics) {
  const by = (name) => metrics.filter((m) => m.name === name);
  const replicaNumbers = (dep, rep) => {
    const pick = (n) => by(n).find((m) => m.labels.deployment === dep && m.labels.replica === rep);
    const load = pick("modelfleet_replica_engine_load");
    const waiting = pick("modelfleet_replica_engine_queue_depth");
    const kv = pick("modelfleet_replica_engine_kv_cache_usage");
    return {
      waiting: waiting ? waiting.value : null, kv: kv ? kv.value : null,
      ready: (pick("modelfleet_replica_ready") || {}).value === 1,
      inflight: (pick("modelfleet_replica_in_flight") || {}).value || 0,
      load: load ? load.value : null,
      served: (pick("modelfleet_replica_requests_total") || {}).value || 0,
      failed: (pick("modelfleet_replica_failures_total") || {}).value || 0,
    };
  };
  const queue = (dep) => ((by("modelfleet_queue_depth").find((m) => m.labels.deployment === dep)) || {}).value || 0;
  const wakes = (dep) => ((by("modelfleet_wakes_total").find((m) => m.labels.deployment === dep)) || {}).value || 0;
  if (status) {
    return status.map((d) => ({
      ...d, queue: queue(d.name),
      replicas: d.replicas.map((r) => ({ ...r, ...replicaNumbers(d.name, r.name), state: r.state })),
    }));
  }
  const names = [...new Set(by("modelfleet_replica_ready").map((m) => m.labels.deployment))];
  return names.map((name) => {
    const notReady = (ready && ready.not_ready && ready.not_ready[name]) || [];
    const replicas = by("modelfleet_replica_ready").filter((m) => m.labels.deployment === name).map((m) => {
      const nr = notReady.find((r) => r.replica === m.labels.replica);
      return { name: m.labels.replica, state: nr ? nr.state : "ready", reason: nr ? nr.reason : "",
        ...replicaNumbers(name, m.labels.replica) };
    });
    const observed = (ready && ready.deployments && ready.deployments[name]) || "down"; // the server's one word
    return { name, observed, replicas, queue: queue(name), wakes: wakes(name) };
  });
}

function Deployment({ d, admin, pending, act }) {
  const p = pending[d.name];
  const inflight = d.replicas.reduce((a, r) => a + r.inflight, 0);
  return html`<section class="card deployment" data-deployment=${d.name} data-observed=${d.observed}>
    <div class="card-head">
      <h2>${d.name}</h2>${d.kind ? html`<span class="kind">${d.kind}</span>` : null}
      <${Badge} state=${d.observed} />
      ${admin && d.managed ? html`<span class="actions">
        <button id=${`start-${d.name}`} disabled=${!!p || d.observed === "running"} onClick=${() => act(d.name, "start")}>Start</button>
        <button id=${`stop-${d.name}`} class="danger" disabled=${!!p || d.observed === "stopped"} onClick=${() => act(d.name, "stop")}>Stop</button>
      </span>` : null}
    </div>
    ${p ? html`<div class="progress" role="status">${p.message}</div>` : null}
    ${d.error ? html`<div class="error">${d.error}</div>` : null}
    <div class="facts">
      ${d.desired ? html`<span>desired <b>${d.desired}</b>${d.reason ? ` (${d.reason})` : ""}</span>` : null}
      ${d.schedule ? html`<span class="schedule">schedule window <b>${d.schedule.window}</b>, next boundary ${fmt.when(d.schedule.until)}</span>`
        : d.desired ? html`<span class="schedule">no schedule</span>` : null}
      ${d.wake_on_request !== undefined ? html`<span>wake on request <b>${d.wake_on_request ? "on" : "off"}</b></span>` : null}
      <span>wakes <b class="wakes">${fmt.int(d.wakes)}</b></span>
    </div>
    <div class="stats-row">
      <${Stat} label="in flight" id="inflight" value=${fmt.int(inflight)} />
      <${Stat} label="queue" id="queue" value=${fmt.int(d.queue)} />
      <${Stat} label="replicas ready" id="ready" value=${`${d.replicas.filter((r) => r.state === "ready").length}/${d.replicas.length}`} />
    </div>
    <table class="replicas">
      <thead><tr><th>replica</th><th>state</th><th>why</th><th>in flight</th><th>engine load</th><th>engine queue</th><th>KV cache</th><th>served</th><th>failed</th></tr></thead>
      <tbody>${d.replicas.map((r) => html`<tr data-replica=${r.name}>
        <td>${r.name}</td><td><${Badge} state=${r.state} /></td><td class="reason">${r.reason || ""}</td>
        <td>${fmt.int(r.inflight)}</td><td>${r.load == null ? "–" : r.load.toFixed(2)}</td>
        <td class="engine-waiting">${fmt.int(r.waiting)}</td><td class="kv-cache">${fmt.pct(r.kv)}</td>
        <td>${fmt.int(r.served)}</td><td>${fmt.int(r.failed)}</td></tr>`)}</tbody>
    </table>
  </section>`;
}

export function Fleet({ who }) {
  const admin = who && who.role === "admin";
  const [pending, setPending] = useState({});
  const [error, setError] = useState(null);
  const fleet = usePoll(async () => {
    const [status, ready, text] = await Promise.all([
      admin ? get("admin/deployments").then((d) => d.data) : null,
      admin ? null : readiness(),
      get("metrics"),
    ]);
    return assemble(status, ready, parseMetrics(text));
  }, Object.keys(pending).length ? 1000 : 2000, [admin, Object.keys(pending).length > 0]);

  const mounted = useRef(true);
  useEffect(() => () => { mounted.current = false; }, []);

  // Like `modelfleet deployments start|stop`: ask, then follow the deployment until it gets there.
  const act = async (name, verb) => {
    if (verb === "stop" && !(await confirmAction(`Stop deployment ${name}? Its replicas stop, and its routes fail over `
      + "or refuse until it is started again.", `Stop ${name}`))) return;
    setError(null);
    const since = Date.now();
    setPending((p) => ({ ...p, [name]: { verb, message: `${verb} requested…` } }));
    try {
      await post(`admin/deployments/${encodeURIComponent(name)}/${verb}`);
      for (;;) {
        if (!mounted.current) return; // the person left the page: stop following
        const status = (await get("admin/deployments")).data.find((d) => d.name === name);
        const took = Math.round((Date.now() - since) / 1000);
        if (status.observed === GOAL[verb]) break;
        if (status.error) throw new Error(status.error);
        if (status.observed === "down") throw new Error(`${name} is down: ${status.replicas.map((r) => r.reason).join("; ")}`);
        if (took > FOLLOW_SECONDS) throw new Error(`${name} is not ${GOAL[verb]} after ${took}s; it may still get there`);
        const reasons = [...new Set(status.replicas.map((r) => r.reason).filter(Boolean))].join("; ");
        setPending((p) => ({ ...p, [name]: { verb, message: `${name}: ${status.observed}${reasons ? ` (${reasons})` : ""} ${took}s` } }));
        await new Promise((r) => setTimeout(r, 1000));
      }
    } catch (e) {
      setError(e);
    }
    setPending((p) => { const q = { ...p }; delete q[name]; return q; });
    fleet.refresh();
  };

  return html`<div class="page fleet">
    <h1>Fleet</h1>
    ${!admin && who && who.admin_api ? html`<p class="hint">Type the admin key above to see schedules and to start and stop deployments.</p>` : null}
    <${ErrorBox} error=${error || fleet.error} />
    <div class="cards">${(fleet.data || []).map((d) => html`<${Deployment} d=${d} admin=${admin} pending=${pending} act=${act} />`)}</div>
    ${fleet.at ? html`<p class="updated">updated ${new Date(fleet.at).toLocaleTimeString("en-GB")}</p>` : null}
  </div>`;
}
