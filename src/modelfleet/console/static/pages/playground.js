// Playground: chat with a route, streaming; or send one prompt to two routes side by side.
import { get, streamChat } from "../api.js";
import { html, useState, useEffect, useRef, ErrorBox, fmt } from "../ui.js";

function Pane({ index, routes, pane, setPane }) {
  const log = useRef(null);
  useEffect(() => { if (log.current) log.current.scrollTop = log.current.scrollHeight; }, [pane.messages]);
  const s = pane.stats;
  return html`<section class="pane" data-pane=${index}>
    <label>Route <select class="route" value=${pane.route} onChange=${(e) => setPane({ route: e.target.value })}>
      ${routes.map((r) => html`<option value=${r}>${r}</option>`)}</select></label>
    <div class="chatlog" ref=${log}>
      ${pane.messages.map((m) => html`<div class=${`msg ${m.role}`}><span class="who">${m.role}</span>
        <span class="content">${m.content}</span></div>`)}
    </div>
    <${ErrorBox} error=${pane.error} />
    <div class="stats">
      <span>deployment <b class="deployment">${s.deployment || "–"}</b></span>
      <span>TTFT <b class="ttft">${fmt.ms(s.ttft)}</b></span>
      <span>tokens/s <b class="tps">${fmt.rate(s.tps)}</b></span>
      <span>usage <b class="usage">${s.usage ? `${s.usage.prompt_tokens} in, ${s.usage.completion_tokens} out` : "–"}</b></span>
    </div>
  </section>`;
}

const emptyPane = (route) => ({ route, messages: [], stats: {}, error: null });

export function Playground({ who }) {
  const [routes, setRoutes] = useState([]);
  const [error, setError] = useState(null);
  const [compare, setCompare] = useState(false);
  const [system, setSystem] = useState("");
  const [temperature, setTemperature] = useState(0.7);
  const [maxTokens, setMaxTokens] = useState(256);
  const [prompt, setPrompt] = useState("");
  const [busy, setBusy] = useState(false);
  const [panes, setPanes] = useState([emptyPane(""), emptyPane("")]);
  const aborts = useRef([]);

  useEffect(() => {
    get("v1/models").then((doc) => {
      const names = doc.data.map((m) => m.id);
      setRoutes(names);
      setPanes([emptyPane(names[0] || ""), emptyPane(names[1] || names[0] || "")]);
    }, setError);
  }, []);

  const update = (i, change) => setPanes((ps) => ps.map((p, j) => (j === i ? { ...p, ...(typeof change === "function" ? change(p) : change) } : p)));

  const run = async (i, text) => {
    const history = [...panes[i].messages, { role: "user", content: text }];
    update(i, { messages: [...history, { role: "assistant", content: "" }], error: null, stats: {} });
    const messages = [...(system.trim() ? [{ role: "system", content: system.trim() }] : []), ...history];
    const abort = new AbortController();
    aborts.current.push(abort);
    try {
      const r = await streamChat(
        {
          model: panes[i].route, messages,
          ...(temperature !== "" ? { temperature: Number(temperature) } : {}), // an emptied field is left out
          ...(maxTokens !== "" ? { max_tokens: Number(maxTokens) } : {}),
        },
        (delta) => update(i, (p) => {
          const ms = p.messages.slice();
          if (!ms.length) return {}; // cleared while streaming
          ms[ms.length - 1] = { role: "assistant", content: ms[ms.length - 1].content + delta };
          return { messages: ms };
        }),
        abort.signal,
      );
      const out = r.usage ? r.usage.completion_tokens : null;
      const seconds = r.ttft === null ? null : (r.ended - r.started - r.ttft) / 1000;
      const tps = out && seconds > 0 ? (out - 1) / seconds : null; // tokens after the first, over the time they took
      update(i, { stats: { deployment: r.deployment, ttft: r.ttft, tps, usage: r.usage } });
    } catch (e) {
      if (e.name === "AbortError") return; // stopped by the person: keep what arrived
      update(i, (p) => ({ error: e, messages: p.messages.filter((m, j) => !(j === p.messages.length - 1 && !m.content)) }));
    }
  };

  const send = async () => {
    const text = prompt.trim();
    if (!text || busy) return;
    setPrompt("");
    setBusy(true);
    await Promise.all((compare ? [0, 1] : [0]).map((i) => run(i, text)));
    aborts.current = [];
    setBusy(false);
  };
  const stop = () => aborts.current.forEach((a) => a.abort());
  const clear = () => { stop(); setPanes((ps) => ps.map((p) => emptyPane(p.route))); };

  return html`<div class="page playground">
    <h1>Playground</h1>
    <${ErrorBox} error=${error} />
    <div class="controls">
      <label>Temperature <input id="temperature" type="number" min="0" max="2" step="0.1" value=${temperature}
        onInput=${(e) => setTemperature(e.target.value)} /></label>
      <label>Max tokens <input id="max-tokens" type="number" min="1" max="32768" value=${maxTokens}
        onInput=${(e) => setMaxTokens(e.target.value)} /></label>
      <label class="check"><input id="compare" type="checkbox" checked=${compare}
        onChange=${(e) => setCompare(e.target.checked)} /> Compare two routes</label>
      <button id="clear" class="quiet" onClick=${clear}>Clear</button>
    </div>
    <label class="wide">System prompt <textarea id="system" rows="2" value=${system}
      onInput=${(e) => setSystem(e.target.value)}></textarea></label>
    <div class=${compare ? "panes two" : "panes"}>
      ${(compare ? [0, 1] : [0]).map((i) => html`<${Pane} index=${i} routes=${routes} pane=${panes[i]}
        setPane=${(c) => update(i, c)} />`)}
    </div>
    <div class="composer">
      <textarea id="prompt" rows="3" placeholder="Ask something (Ctrl+Enter sends)" value=${prompt}
        onInput=${(e) => setPrompt(e.target.value)}
        onKeyDown=${(e) => e.key === "Enter" && (e.ctrlKey || e.metaKey) && send()}></textarea>
      ${busy ? html`<button id="stop" class="danger" onClick=${stop}>Stop</button>`
        : html`<button id="send" onClick=${send} disabled=${!routes.length}>Send</button>`}
    </div>
  </div>`;
}
