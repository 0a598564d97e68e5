// Small shared pieces: the Preact + htm binding, polling, formatting, bars and badges.
import { html, useState, useEffect, useRef, useCallback } from "./vendor/preact-htm.mjs";

export { html, useState, useEffect, useRef, useCallback };

// Calls load() now and every `ms` while the page shows; keeps the last good data and the last error.
export function usePoll(load, ms, deps = []) {
  const [state, setState] = useState({ data: null, error: null, at: 0 });
  const tick = useRef(0);
  const refresh = useCallback(async () => {
    const mine = ++tick.current;
    try {
      const data = await load();
      if (mine === tick.current) setState({ data, error: null, at: Date.now() });
    } catch (error) {
      if (mine === tick.current) setState((s) => ({ ...s, error }));
    }
  }, deps);
  useEffect(() => {
    // The next poll is set once this one has settled (slow answers never pile up), and a hidden tab
    // asks for nothing.
    let stopped = false;
    let timer;
    const loop = async () => {
      if (!document.hidden) await refresh();
      if (!stopped && ms) timer = setTimeout(loop, ms);
    };
    loop();
    return () => { stopped = true; clearTimeout(timer); tick.current++; };
  }, [refresh]);
  return { ...state, refresh };
}

export const fmt = {
  int: (n) => (n == null ? "–" : Math.round(n).toLocaleString("en")),
  ms: (n) => (n == null ? "–" : n < 1000 ? `${Math.round(n)} ms` : `${(n / 1000).toFixed(2)} s`),
  pct: (x) => (x == null || !isFinite(x) ? "–" : `${(100 * x).toFixed(x < 0.1 && x > 0 ? 1 : 0)}%`),
  rate: (n) => (n == null || !isFinite(n) ? "–" : n.toFixed(1)),
  // local time, unambiguous: 2027-01-01 00:00
  when: (iso) => (iso ? new Date(iso).toLocaleString("sv-SE", { dateStyle: "short", timeStyle: "short" }) : "–"),
};

export function ErrorBox({ error }) {
  if (!error) return null;
  return html`<div class="error" role="alert">${error.status ? `${error.status}: ` : ""}${error.message}</div>`;
}

const STATE_CLASS = {
  ready: "ok", running: "ok", starting: "warn", degraded: "warn", unhealthy: "bad", down: "bad", stopped: "off",
};
export function Badge({ state }) {
  return html`<span class=${`badge ${STATE_CLASS[state] || "off"}`} data-state=${state}>${state}</span>`;
}

// A horizontal bar; the width is set through the CSSOM (allowed by the CSP), never a style attribute.
export function Bar({ fraction, kind = "", label = "" }) {
  const ref = useRef(null);
  useEffect(() => {
    if (ref.current) ref.current.style.width = `${Math.max(0, Math.min(1, fraction || 0)) * 100}%`;
  }, [fraction]);
  return html`<div class="bar" title=${label}><div class=${`fill ${kind}`} ref=${ref}></div></div>`;
}

export function Stat({ label, value, id }) {
  return html`<div class="stat" data-stat=${id || label}><div class="label">${label}</div><div class="value">${value}</div></div>`;
}

export const PALETTE = ["#3b82f6", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#14b8a6", "#ec4899", "#84cc16"];

// Destructive actions ask first, in a modal <dialog> (window.confirm would freeze the page's polling).
// The shell renders one ConfirmDialog; confirmAction resolves true only when its button is pressed.
let openConfirm = null;
export function confirmAction(message, verb) {
  return openConfirm ? openConfirm(message, verb) : Promise.resolve(false);
}

export function ConfirmDialog() {
  const [ask, setAsk] = useState(null);
  const ref = useRef(null);
  useEffect(() => {
    openConfirm = (message, verb) => new Promise((resolve) => setAsk({ message, verb, resolve }));
    return () => { openConfirm = null; };
  }, []);
  useEffect(() => {
    const d = ref.current;
    if (d && ask && !d.open) d.showModal(); // Cancel comes first, so it has the focus: Enter does no harm
    if (d && !ask && d.open) d.close();
  }, [ask]);
  const answer = (yes) => { if (ask) ask.resolve(yes); setAsk(null); };
  return html`<dialog id="confirm" ref=${ref} onCancel=${(e) => { e.preventDefault(); answer(false); }}>
    <p class="confirm-message">${ask ? ask.message : ""}</p>
    <div class="confirm-actions">
      <button id="confirm-no" class="quiet" onClick=${() => answer(false)}>Cancel</button>
      <button id="confirm-yes" class="danger" onClick=${() => answer(true)}>${ask ? ask.verb : "OK"}</button>
    </div>
  </dialog>`;
}
