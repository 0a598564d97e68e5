// Keys & teams (admin): teams from the fleet file and the store, their keys (ids only), a new key
// shown once with a copy button, and revoking.
import { get, post, del } from "../api.js";
import { html, useState, usePoll, ErrorBox, confirmAction } from "../ui.js";

function NewKey({ made, onDone }) {
  const [copied, setCopied] = useState("");
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(made.key);
      setCopied("copied");
    } catch {
      setCopied("select the key and copy it"); // no clipboard permission (plain http, or a locked-down browser)
    }
  };
  return html`<div class="newkey" role="status">
    <p>New key for team <b>${made.team}</b> (id ${made.id}). It is shown once: copy it now.</p>
    <code id="new-key">${made.key}</code>
    <button id="copy-key" onClick=${copy}>Copy</button> <span class="copied">${copied}</span>
    <button class="quiet" onClick=${onDone}>Done</button>
  </div>`;
}

function TeamKeys({ team, onMade, setError, version, onDeleted }) {
  const keys = usePoll(() => get(`admin/teams/${encodeURIComponent(team.name)}/keys`).then((d) => d.data), 0, [team.name, version]);
  const revoke = async (id, shown) => {
    if (!(await confirmAction(`Revoke key ${shown} of team ${team.name}? Every request with it is refused at once.`,
      "Revoke key"))) return;
    try { await del(`admin/keys/${encodeURIComponent(id)}`); keys.refresh(); } catch (e) { setError(e); }
  };
  const create = async () => {
    try { onMade(await post(`admin/teams/${encodeURIComponent(team.name)}/keys`)); keys.refresh(); } catch (e) { setError(e); }
  };
  const remove = async () => {
    if (!(await confirmAction(`Delete team ${team.name}? Its keys are revoked with it.`, `Delete ${team.name}`))) return;
    try { await del(`admin/teams/${encodeURIComponent(team.name)}`); onDeleted(); } catch (e) { setError(e); }
  };
  const live = (keys.data || []).filter((k) => !k.revoked_at);
  return html`<section class="card team" data-team=${team.name}>
    <div class="card-head"><h2>${team.name}</h2><span class="kind">${team.source}</span>
      <span class="actions"><button class="create-key" onClick=${create}>New key</button>
        ${team.source === "api" ? html`<button class="danger delete-team" onClick=${remove}>Delete team</button>` : null}</span></div>
    <div class="facts">
      <span>routes <b>${Array.isArray(team.routes) ? team.routes.join(", ") : team.routes}</b></span>
      ${Object.entries(team.limits || {}).map(([k, v]) => html`<span>${k} <b>${v}</b></span>`)}
    </div>
    <table class="keys"><thead><tr><th>key</th><th>created</th><th></th></tr></thead>
      <tbody>${live.map((k) => html`<tr data-key=${k.id}><td><code>${k.key}</code></td>
        <td>${k.created_at ? new Date(k.created_at * 1000).toLocaleString("en-GB") : ""}</td>
        <td><button class="danger revoke" onClick=${() => revoke(k.id, k.key)}>Revoke</button></td></tr>`)}</tbody></table>
    ${keys.data && !live.length ? html`<p class="empty">No live key made here${team.source === "fleet"
      ? " (keys written in the fleet file are not listed)" : ""}.</p>` : null}
  </section>`;
}

export function Keys({ who }) {
  const [error, setError] = useState(null);
  const [made, setMade] = useState(null);
  const [draft, setDraft] = useState({ name: "", routes: "", rpm: "", tokens_per_day: "" });
  const teams = usePoll(() => get("admin/teams").then((d) => d.data), 0, []);
  const field = (k) => (e) => setDraft({ ...draft, [k]: e.target.value });
  const createTeam = async () => {
    setError(null);
    const limits = {};
    for (const k of ["rpm", "tokens_per_day"]) if (draft[k]) limits[k] = Number(draft[k]);
    const picked = draft.routes.split(",").map((s) => s.trim()).filter(Boolean);
    try {
      await post("admin/teams", { name: draft.name.trim(), routes: picked.length ? picked : "*", limits });
      setDraft({ name: "", routes: "", rpm: "", tokens_per_day: "" });
      teams.refresh();
    } catch (e) { setError(e); }
  };
  return html`<div class="page keys">
    <h1>Keys & teams</h1>
    <${ErrorBox} error=${error || teams.error} />
    ${made ? html`<${NewKey} made=${made} onDone=${() => setMade(null)} />` : null}
    <section class="card">
      <h2>New team</h2>
      <div class="controls">
        <label>Name <input id="team-name" value=${draft.name} onInput=${field("name")} /></label>
        <label>Routes <input id="team-routes" placeholder=${`all, or some of: ${(who.routes || []).join(", ")}`}
          value=${draft.routes} onInput=${field("routes")} /></label>
        <label>rpm <input id="team-rpm" type="number" min="1" value=${draft.rpm} onInput=${field("rpm")} /></label>
        <label>tokens/day <input id="team-tpd" type="number" min="1" value=${draft.tokens_per_day} onInput=${field("tokens_per_day")} /></label>
        <button id="create-team" onClick=${createTeam} disabled=${!draft.name.trim()}>Create team</button>
      </div>
      <p class="hint">Teams of the fleet file are changed in the file; here they can get keys.</p>
    </section>
    ${(teams.data || []).map((t) => html`<${TeamKeys} team=${t} onMade=${setMade} setError=${setError} version=${made ? made.id : ""}
      onDeleted=${teams.refresh} />`)}
  </div>`;
}
