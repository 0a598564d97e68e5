// Every call the console makes: relative URLs (so a proxy prefix works) and the key from sessionStorage,
// sent only as an Authorization header, never in a URL.
const STORE = "modelfleet.key";
export const root = new URL("../", document.baseURI);

export const key = {
  get: () => sessionStorage.getItem(STORE) || "",
  set: (k) => (k ? sessionStorage.setItem(STORE, k) : sessionStorage.removeItem(STORE)),
};

export class ApiError extends Error {
  constructor(status, doc) {
    const message = doc && doc.error ? doc.error.message : typeof doc === "string" && doc ? doc : `HTTP ${status}`;
    super(message);
    this.status = status;
    this.code = doc && doc.error ? doc.error.code : null;
    this.doc = doc;
  }
}

function headers(json) {
  const h = {};
  const k = key.get();
  if (k) h.Authorization = "Bearer " + k;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

export async function request(path, { method = "GET", body, signal } = {}) {
  const r = await fetch(new URL(path, root), {
    method, signal, cache: "no-store",
    headers: headers(body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let doc = text;
  try { doc = JSON.parse(text); } catch { /* metrics and plain text stay text */ }
  if (!r.ok) throw new ApiError(r.status, doc);
  return doc;
}

export const get = (path) => request(path);
export const post = (path, body = {}) => request(path, { method: "POST", body });
export const del = (path) => request(path, { method: "DELETE" });

// A streamed chat completion: calls onDelta(text) per content chunk, returns what the stream told.
export async function streamChat(body, onDelta, signal) {
  const started = performance.now();
  const r = await fetch(new URL("v1/chat/completions", root), {
    method: "POST", signal, cache: "no-store", headers: headers(true),
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
  });
  const out = { deployment: r.headers.get("X-Modelfleet-Deployment"), ttft: null, usage: null, started, ended: null };
  if (!r.ok) {
    let doc = null;
    try { doc = await r.json(); } catch { /* not JSON */ }
    throw new ApiError(r.status, doc);
  }
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of frame.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") continue;
        const doc = JSON.parse(data);
        if (doc.error) throw new ApiError(502, doc);
        if (doc.usage) out.usage = doc.usage;
        const delta = doc.choices && doc.choices[0] && doc.choices[0].delta;
        if (delta && delta.content) {
          if (out.ttft === null) out.ttft = performance.now() - started;
          onDelta(delta.content);
        }
      }
    }
  }
  out.ended = performance.now();
  return out;
}

// The Prometheus text format, enough of it for the console: [{name, labels, value}].
export function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line[0] === "#") continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}
