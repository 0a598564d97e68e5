// A uPlot chart as a component: x is unix seconds, each series one line (or bars).
import uPlot from "./vendor/uPlot.esm.js";
import { html, useEffect, useRef, PALETTE } from "./ui.js";

export function Chart({ id, title, x, series, bars = false, live = false, height = 220, yLabel = "" }) {
  const box = useRef(null);
  useEffect(() => {
    const el = box.current;
    if (!el || !x.length) return undefined;
    const opts = {
      title, width: Math.max(320, el.clientWidth || 600), height,
      // live: the last one to five minutes; days: the whole span, padded half a day so bars fit
      scales: { x: { time: true, range: (_, min, max) => (live ? [max - Math.max(60, Math.min(300, max - min)), max] : [min - 43200, max + 43200]) }, y: { range: (_, min, max) => [0, Math.max(1, max * 1.1)] } },
      axes: [{}, { label: yLabel, size: 60 }],
      series: [{}, ...series.map((s, i) => ({
        label: s.label, stroke: PALETTE[i % PALETTE.length], width: 2,
        fill: bars ? PALETTE[i % PALETTE.length] + "99" : undefined,
        paths: bars ? uPlot.paths.bars({ size: [0.8 / Math.max(1, series.length), 64], align: 0 }) : undefined,
        points: { show: x.length < 40 },
      }))],
    };
    const plot = new uPlot(opts, [x, ...series.map((s) => s.values)], el);
    const resize = () => plot.setSize({ width: Math.max(320, el.clientWidth), height });
    addEventListener("resize", resize);
    return () => { removeEventListener("resize", resize); plot.destroy(); };
  }, [JSON.stringify([x, series, title])]);
  return html`<div class="chart" id=${id} ref=${box}>${x.length ? null : html`<p class="empty">${title}: no data yet</p>`}</div>`;
}
