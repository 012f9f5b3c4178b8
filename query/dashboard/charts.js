// YottaStore dashboard: line and bar charts drawn as SVG, with axes, a legend and a hover
// read-out. Hand-written (no library) so the page needs nothing but what the binary serves.
//
// Charts.draw(container, spec) replaces the container's content with a chart:
//   spec.series   [{name, points: [[x, y], ...]}]  x: ms since the epoch (time) or a number
//   spec.kind     "line" | "bar"
//   spec.xTime    x values are times (axis labels in UTC)
//   spec.yFormat  y value -> label (default: compact number)
//   spec.yBinary  y values are bytes: ticks at round multiples of KiB, MiB, ...
//   spec.height   pixels (default 240)
//   spec.xDomain  [min, max] of the x axis of a line chart (default: the data's range)
//   spec.empty    text shown when no series has a point
// The SVG carries data-points (points drawn) and each mark data-x / data-y, which the browser
// test reads. At most MAX_POINTS points per series are drawn (evenly thinned beyond that), so a
// huge answer cannot freeze the page.
"use strict";

const Charts = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const MAX_POINTS = 2000;
  const MAX_SERIES = 12;
  const PALETTE = ["#3b6ef5", "#12a594", "#f29d38", "#e5484d", "#8e4ec6", "#0091ff",
                   "#30a46c", "#d6409f", "#ad7f58", "#5b5bd6", "#99a1ad", "#f76b15"];

  function el(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (parent) parent.appendChild(node);
    return node;
  }

  function compact(value) {
    const abs = Math.abs(value);
    if (abs >= 1e9) return trim(value / 1e9) + "G";
    if (abs >= 1e6) return trim(value / 1e6) + "M";
    if (abs >= 1e4) return trim(value / 1e3) + "k";
    if (abs === 0 || abs >= 1) return trim(value);
    return String(Number(value.toPrecision(2)));
  }
  function trim(value) {
    return String(Math.round(value * 100) / 100);
  }

  // Round tick steps (1, 2, 5 x 10^n) so that about `count` ticks span [min, max].
  // minStep: 1 for values that are whole (bytes), so no tick reads 0.5 B.
  function niceTicks(min, max, count, minStep = 0) {
    if (!(max > min)) max = min + 1;
    const rough = (max - min) / Math.max(1, count);
    const power = Math.pow(10, Math.floor(Math.log10(rough)));
    const step = Math.max(minStep, [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough) || rough);
    // From the step at or below min to the first at or above max, so the top has headroom.
    const ticks = [];
    for (let v = Math.floor(min / step) * step; ; v += step) {
      ticks.push(Number(v.toPrecision(12)));
      if (v >= max - step * 1e-9 || ticks.length > 50) break;
    }
    return ticks;
  }

  const TIME_STEPS_MS = [1e3, 2e3, 5e3, 10e3, 15e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3, 1800e3,
                         3600e3, 7200e3, 10800e3, 21600e3, 43200e3, 86400e3, 7 * 86400e3, 30 * 86400e3];
  function timeTicks(min, max, count) {
    const rough = (max - min) / Math.max(1, count);
    const step = TIME_STEPS_MS.find((s) => s >= rough) || Math.ceil(rough / 86400e3) * 86400e3;
    const ticks = [];
    for (let t = Math.ceil(min / step) * step; t <= max; t += step) ticks.push(t);
    return { ticks, step };
  }
  function pad2(n) { return String(n).padStart(2, "0"); }
  function timeLabel(ms, spanMs) {
    const d = new Date(ms);
    const hm = pad2(d.getUTCHours()) + ":" + pad2(d.getUTCMinutes());
    if (spanMs >= 3 * 86400e3) return (d.getUTCMonth() + 1) + "/" + d.getUTCDate();
    if (spanMs >= 86400e3) return (d.getUTCMonth() + 1) + "/" + d.getUTCDate() + " " + hm;
    if (spanMs >= 600e3) return hm;
    return hm + ":" + pad2(d.getUTCSeconds());
  }
  function timeFull(ms) {
    const d = new Date(ms);
    return d.toISOString().replace("T", " ").replace(/\.000Z$|Z$/, "") + " UTC";
  }

  // At most `max` points, evenly spaced, always keeping the last.
  function thin(points, max) {
    if (points.length <= max) return points;
    const out = [];
    const stride = points.length / max;
    for (let i = 0; i < max - 1; i++) out.push(points[Math.floor(i * stride)]);
    out.push(points[points.length - 1]);
    return out;
  }

  function draw(container, spec) {
    container.replaceChildren();
    container.classList.add("chart");
    const yFormat = spec.yFormat || compact;
    const series = (spec.series || []).slice(0, MAX_SERIES).map((s, i) => ({
      name: s.name,
      color: PALETTE[i % PALETTE.length],
      points: thin(s.points.filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1])), MAX_POINTS),
    }));
    const all = series.flatMap((s) => s.points);
    if (all.length === 0) {
      const empty = document.createElement("div");
      empty.className = "chart-empty";
      empty.textContent = spec.empty || "No data points";
      container.appendChild(empty);
      return;
    }

    const width = Math.max(320, container.clientWidth || 640);
    const height = spec.height || 240;
    const margin = { top: 12, right: 16, bottom: 28, left: 56 };
    const plotW = width - margin.left - margin.right;
    const plotH = height - margin.top - margin.bottom;

    const xs = all.map((p) => p[0]);
    const ys = all.map((p) => p[1]);
    let yMin = Math.min(0, ...ys);
    let yMax = Math.max(...ys);
    if (yMax === yMin) yMax = yMin + 1;
    // Byte values tick at round numbers of their binary unit (256 KiB, not 262.1 KiB).
    const unit = spec.yBinary ? Math.pow(1024, Math.max(0, Math.floor(Math.log(Math.max(1, yMax)) / Math.log(1024)))) : 1;
    const yTicks = niceTicks(yMin / unit, yMax / unit, 4, spec.yBinary && unit === 1 ? 1 : 0).map((t) => t * unit);
    yMin = Math.min(yMin, yTicks[0]);
    yMax = Math.max(yMax, yTicks[yTicks.length - 1]);
    const yPix = (v) => margin.top + plotH - ((v - yMin) / (yMax - yMin)) * plotH;

    // Bars: one band per distinct x (buckets are categories); lines: a continuous x scale.
    const bands = [...new Set(xs)].sort((a, b) => a - b);
    const bandIndex = new Map(bands.map((x, i) => [x, i]));
    // spec.xDomain fixes the x range of a line chart (a sliding time window).
    let xMin = spec.xDomain && spec.kind !== "bar" ? spec.xDomain[0] : Math.min(...xs);
    let xMax = spec.xDomain && spec.kind !== "bar" ? spec.xDomain[1] : Math.max(...xs);
    if (xMax === xMin) { xMin -= 1; xMax += 1; }
    const bandW = plotW / bands.length;
    const xPix = spec.kind === "bar"
      ? (x) => margin.left + (bandIndex.get(x) + 0.5) * bandW
      : (x) => margin.left + ((x - xMin) / (xMax - xMin)) * plotW;

    const svg = el("svg", {
      width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
      "aria-label": spec.label || "chart", "data-kind": spec.kind, "data-points": String(all.length),
    });
    const grid = el("g", { class: "grid" }, svg);
    for (const t of yTicks) {
      const y = yPix(t);
      el("line", { x1: margin.left, x2: width - margin.right, y1: y, y2: y }, grid);
      el("text", { x: margin.left - 8, y: y + 4, "text-anchor": "end", class: "tick" }, grid).textContent = yFormat(t);
    }
    const axis = el("g", { class: "axis" }, svg);
    el("line", { x1: margin.left, x2: width - margin.right, y1: yPix(Math.max(yMin, 0)), y2: yPix(Math.max(yMin, 0)) }, axis);
    const span = xMax - xMin;
    let xTickValues;
    if (spec.xTime) {
      xTickValues = spec.kind === "bar" ? bands : timeTicks(xMin, xMax, Math.max(2, Math.floor(plotW / 90))).ticks;
    } else {
      xTickValues = spec.kind === "bar" ? bands : niceTicks(xMin, xMax, Math.max(2, Math.floor(plotW / 90)));
    }
    // Keep x labels apart: about one per 80 px.
    const labelEvery = Math.max(1, Math.ceil(xTickValues.length / Math.max(1, Math.floor(plotW / 80))));
    xTickValues.forEach((x, i) => {
      if (i % labelEvery !== 0) return;
      if (spec.kind !== "bar" && (x < xMin || x > xMax)) return;
      const label = spec.xTime ? timeLabel(x, span) : compact(x);
      el("text", { x: xPix(x), y: height - 8, "text-anchor": "middle", class: "tick" }, axis).textContent = label;
    });

    const marks = el("g", { class: "marks" }, svg);
    series.forEach((s, si) => {
      const group = el("g", { class: "series", "data-series": s.name }, marks);
      if (spec.kind === "bar") {
        const inner = bandW * 0.8;
        const w = Math.max(1, inner / series.length);
        for (const [x, y] of s.points) {
          const left = margin.left + bandIndex.get(x) * bandW + bandW * 0.1 + si * w;
          const top = Math.min(yPix(y), yPix(Math.max(yMin, 0)));
          const h = Math.max(1, Math.abs(yPix(y) - yPix(Math.max(yMin, 0))));
          el("rect", { class: "bar", x: left, y: top, width: Math.max(1, w - 1), height: h, rx: Math.min(3, w / 4),
                       fill: s.color, "data-x": x, "data-y": y }, group);
        }
      } else {
        const sorted = [...s.points].sort((a, b) => a[0] - b[0]);
        const d = sorted.map((p, i) => `${i ? "L" : "M"}${xPix(p[0]).toFixed(1)},${yPix(p[1]).toFixed(1)}`).join("");
        if (series.length === 1) {
          const base = yPix(Math.max(yMin, 0)).toFixed(1);
          const area = `${d}L${xPix(sorted[sorted.length - 1][0]).toFixed(1)},${base}L${xPix(sorted[0][0]).toFixed(1)},${base}Z`;
          el("path", { d: area, class: "area", fill: s.color }, group);
        }
        el("path", { d, class: "line", stroke: s.color }, group);
        const r = sorted.length > 150 ? 1.5 : 3;
        for (const [x, y] of sorted) {
          el("circle", { class: "point", cx: xPix(x), cy: yPix(y), r, fill: s.color, "data-x": x, "data-y": y }, group);
        }
      }
    });

    // Hover read-out: the x nearest the pointer, every series' value there.
    const cursor = el("line", { class: "cursor", y1: margin.top, y2: margin.top + plotH, visibility: "hidden" }, svg);
    const hit = el("rect", { x: margin.left, y: margin.top, width: plotW, height: plotH, class: "hit" }, svg);
    const tip = document.createElement("div");
    tip.className = "chart-tip";
    tip.hidden = true;
    const byX = new Map();
    series.forEach((s) => s.points.forEach(([x, y]) => {
      if (!byX.has(x)) byX.set(x, []);
      byX.get(x).push([s, y]);
    }));
    const sortedX = [...byX.keys()].sort((a, b) => a - b);
    hit.addEventListener("mousemove", (event) => {
      const box = svg.getBoundingClientRect();
      const px = event.clientX - box.left;
      let best = sortedX[0];
      for (const x of sortedX) if (Math.abs(xPix(x) - px) < Math.abs(xPix(best) - px)) best = x;
      cursor.setAttribute("x1", xPix(best));
      cursor.setAttribute("x2", xPix(best));
      cursor.setAttribute("visibility", "visible");
      tip.replaceChildren();
      const head = document.createElement("div");
      head.className = "chart-tip-head";
      head.textContent = spec.xTime ? timeFull(best) : String(best);
      tip.appendChild(head);
      for (const [s, y] of byX.get(best)) {
        const row = document.createElement("div");
        const swatch = document.createElement("span");
        swatch.className = "swatch";
        swatch.style.background = s.color;
        row.append(swatch, `${s.name}: ${yFormat(y)}`);
        tip.appendChild(row);
      }
      tip.hidden = false;
      const left = Math.min(xPix(best) + 12, width - 180);
      tip.style.left = `${Math.max(0, left)}px`;
      tip.style.top = `${margin.top}px`;
    });
    hit.addEventListener("mouseleave", () => {
      cursor.setAttribute("visibility", "hidden");
      tip.hidden = true;
    });

    container.appendChild(svg);
    container.appendChild(tip);
    if (series.length > 1 || spec.legend) {
      const legend = document.createElement("div");
      legend.className = "chart-legend";
      for (const s of series) {
        const item = document.createElement("span");
        const swatch = document.createElement("span");
        swatch.className = "swatch";
        swatch.style.background = s.color;
        item.append(swatch, s.name);
        legend.appendChild(item);
      }
      if ((spec.series || []).length > MAX_SERIES) {
        const more = document.createElement("span");
        more.textContent = `(+${spec.series.length - MAX_SERIES} more series not drawn)`;
        legend.appendChild(more);
      }
      container.appendChild(legend);
    }
  }

  return { draw, compact, timeFull, PALETTE };
})();
