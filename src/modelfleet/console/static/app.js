// The console's shell: who the key is, the navigation, and the page in view (hash routes: #/fleet).
import { render } from "./vendor/preact-htm.mjs";
import { get, key } from "./api.js";
import { html, useState, useEffect, ErrorBox, ConfirmDialog } from "./ui.js";
import { Playground } from "./pages/playground.js";
import { Fleet } from "./pages/fleet.js";
import { Usage } from "./pages/usage.js";
import { AB } from "./pages/ab.js";
import { Keys } from "./pages/keys.js";

// Which pages a key opens: the API would refuse the rest anyway; the console just does not offer them.

// With teams, the admin key opens /admin only: chatting takes a team key.
const PAGES = [
  { id: "playground", title: "Playground", view: Playground, shows: (w) => w.role === "open" || w.role === "team" || (w.role === "admin" && !w.teams) },
  { id: "fleet", title: "Fleet", view: Fleet, shows: (w) => w.role === "open" || w.role === "admin" },
  { id: "usage", title: "Usage", view: Usage, shows: (w) => w.role !== "none" },
  { id: "ab", title: "A/B", view: AB, shows: (w) => w.role === "open" || w.role === "admin" },
  { id: "keys", title: "Keys & teams", view: Keys, shows: (w) => w.role === "admin" },
];

const currentPage = () => (location.hash.replace(/^#\/?/, "") || "playground");

function KeyBox({ who, onChange }) {
  const [draft, setDraft] = useState("");
  const use = () => { key.set(draft.trim()); setDraft(""); onChange(); };
  const forget = () => { key.set(""); onChange(); };
  const label = !who || who.role === "none" ? "no key" : who.role === "admin" ? "admin" : who.role === "team" ? `team ${who.team}` : "open mode";
  return html`<div class="keybox">
    <span class="who" data-role=${who ? who.role : "none"}>${label}</span>
    <input type="password" id="key" placeholder="API key or admin key" autocomplete="off" value=${draft}
      onInput=${(e) => setDraft(e.target.value)} onKeyDown=${(e) => e.key === "Enter" && use()} />
    <button id="use-key" onClick=${use}>Use key</button>
    ${key.get() ? html`<button id="forget-key" class="quiet" onClick=${forget}>Forget</button>` : null}
  </div>`;
}

function App() {
  const [page, setPage] = useState(currentPage());
  const [who, setWho] = useState(null);
  const [error, setError] = useState(null);
  const [generation, setGeneration] = useState(0);

  const identify = async () => {
    try {
      setWho(await get("v1/whoami"));
      setError(null);
    } catch (e) {
      setWho(null);
      setError(e);
    }
    setGeneration((g) => g + 1);
  };
  useEffect(() => { identify(); }, []);
  useEffect(() => {
    const onHash = () => setPage(currentPage());
    addEventListener("hashchange", onHash);
    return () => removeEventListener("hashchange", onHash);
  }, []);

  const allowed = PAGES.filter((p) => who && p.shows(who));
  const current = allowed.find((p) => p.id === page) || allowed[0];
  return html`<header>
      <a class="brand" href="#/playground">modelfleet</a>
      <nav>${allowed.map((p) => html`<a href=${`#/${p.id}`} id=${`nav-${p.id}`}
        class=${current && p.id === current.id ? "active" : ""}>${p.title}</a>`)}</nav>
      <${KeyBox} who=${who} onChange=${identify} />
    </header>
    <main data-identified=${generation > 0 ? "yes" : null}>
      ${error ? html`<${ErrorBox} error=${error} />
        <p class="hint">${error.status === 401 ? "This key is not accepted. Type a team key or the admin key above." : ""}</p>`
        : null}
      ${who && who.role === "none" ? html`<p class="hint" id="needs-key">This gateway has teams: type a team key
        (for the playground and its usage) or the admin key (for everything) above.</p>` : null}
      ${current ? html`<${current.view} who=${who} key=${`${current.id}-${generation}`} />` : null}
    </main>
    <${ConfirmDialog} />`;
}

render(html`<${App} />`, document.getElementById("app"));
