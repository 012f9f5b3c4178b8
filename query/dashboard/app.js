// YottaStore dashboard. Everything it shows comes from `POST /sql` (JSON answers) on the server
// that served it: the system tables for the pages, the user's text for the SQL box.
//
// Hash routes (#/overview, #/topics, #/zones, #/groups, #/views, #/sql) select a page; a timer
// polls every few seconds (pausable) and redraws the visible page. Throughput is not a table:
// it is computed here from successive polls of system.partitions (records from the high
// watermarks, bytes from the stored sizes) and kept in a bounded ring.
//
// Each page's <section> gets data-loaded="true" after its first successful render and
// data-error when its last refresh failed; the browser test waits on these.
"use strict";

(() => {
  const RING_SAMPLES_MAX = 180;       // throughput history: 6 minutes at the default 2 s
  const TABLE_ROWS_MAX = 1000;        // rows drawn in an SQL result table (the rest counted)
  const ZONE_CELLS_DENSE = 512;       // past this many zones, smaller cells
  const CHART_SERIES_TOPICS_MAX = 8;  // topics drawn in a throughput chart; the rest summed
  const POLL_TIMEOUT_MS = 15000;      // one poll's query, at most

  const $ = (id) => document.getElementById(id);

  // ---- SQL over HTTP ----------------------------------------------------------------------

  class SqlError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  // The answer of POST /sql: {columns: [{name, type}], rows: [{...}], row_count, truncated}.
  // A row object has no key for a NULL column (Arrow's JSON writer leaves them out), so the
  // pages test for a missing value with `== null`, which covers undefined as well.
  // timeoutMs: the page's own polls give up after POLL_TIMEOUT_MS (a stuck answer must not stop
  // the refreshes behind it); what the user runs waits for the server's own query timeout.
  async function sql(text, timeoutMs) {
    let response;
    try {
      response = await fetch("/sql", {
        method: "POST",
        headers: { "Content-Type": "text/plain; charset=utf-8", Accept: "application/json" },
        body: text,
        cache: "no-store",
        signal: timeoutMs ? AbortSignal.timeout(timeoutMs) : undefined,
      });
    } catch (error) {
      const why = error.name === "TimeoutError" ? `no answer within ${timeoutMs / 1000} s` : error.message;
      throw new SqlError(`The server did not answer (${why}).`, 0);
    }
    const body = await response.text();
    let answer;
    try {
      answer = JSON.parse(body);
    } catch (_) {
      throw new SqlError(`HTTP ${response.status}: ${body.slice(0, 300) || response.statusText}`, response.status);
    }
    if (!response.ok || answer.error !== undefined) {
      throw new SqlError(answer.error || `HTTP ${response.status}`, response.status);
    }
    return answer;
  }

  // ---- formatting -------------------------------------------------------------------------

  const intFormat = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  function fmtInt(value) {
    return value === null || value === undefined ? "–" : intFormat.format(value);
  }
  function fmtBytes(bytes) {
    if (bytes === null || bytes === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let value = Math.abs(bytes);
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    // Whole bytes except below 10 B (a rate of 0.5 B/s), 3 significant digits above.
    const digits = unit === 0 ? (value < 10 && value % 1 ? 1 : 0) : value >= 100 ? 0 : value >= 10 ? 1 : 2;
    // "60 KiB", not "60.0 KiB": trailing zeros say nothing.
    const text = value.toFixed(digits).replace(/\.0+$|(\.\d*[1-9])0+$/, "$1");
    return `${bytes < 0 ? "-" : ""}${text} ${units[unit]}`;
  }
  function fmtRate(value, bytes) {
    if (value === null || value === undefined) return "–";
    if (bytes) return `${fmtBytes(value)}/s`;
    // Three significant digits at most: 217/s, 21.7/s, 2.17/s.
    return `${value >= 1e4 ? Charts.compact(value) : value.toFixed(value >= 100 || value === 0 ? 0 : value >= 10 ? 1 : 2)}/s`;
  }
  function fmtMs(ms) {
    if (ms === null || ms === undefined) return "–";
    if (ms < 1000) return `${Math.round(ms)} ms`;
    if (ms < 60e3) return `${(ms / 1000).toFixed(1)} s`;
    return `${(ms / 60e3).toFixed(1)} min`;
  }
  function pct(part, whole) {
    return whole > 0 ? Math.min(100, (100 * part) / whole) : 0;
  }

  // ---- DOM helpers ------------------------------------------------------------------------

  // h("div", {class: "x", title: "..."}, child, "text", ...): an element (no HTML parsing,
  // so table cells never interpret the data they show).
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  // A table: columns [{label, value(row) -> text|Node, num?, title?(row)}], rows.
  function table(columns, rows, options = {}) {
    if (rows.length === 0) return emptyState(options.empty || "Nothing to show yet.");
    return h("div", { class: "table-scroll" },
      h("table", { class: "data" },
        h("thead", null, h("tr", null, columns.map((c) => h("th", { class: c.num ? "num" : null }, c.label)))),
        h("tbody", null, rows.map((row) => h("tr", { class: options.rowClass ? options.rowClass(row) : null },
          columns.map((c) => h("td", { class: c.num ? "num" : null, title: c.title ? c.title(row) : null }, c.value(row))))))));
  }

  function emptyState(text, detail) {
    return h("div", { class: "empty" }, h("div", { class: "empty-title" }, text), detail ? h("div", { class: "empty-detail" }, detail) : null);
  }

  function badge(text, kind) {
    return h("span", { class: `badge badge-${kind || String(text).toLowerCase().replace(/[^a-z]+/g, "-")}` }, text);
  }

  function meter(value, max, label) {
    const fill = h("span", { class: "meter-fill" });
    fill.style.width = `${pct(value, max)}%`;
    return h("span", { class: "meter-wrap" }, h("span", { class: "meter" }, fill), h("span", { class: "meter-label" }, label));
  }

  function setSelectOptions(select, values, allLabel) {
    const current = select.value;
    const wanted = ["", ...values];
    const have = [...select.options].map((o) => o.value);
    if (wanted.length !== have.length || wanted.some((v, i) => v !== have[i])) {
      select.replaceChildren(h("option", { value: "" }, allLabel), ...values.map((v) => h("option", { value: v }, v)));
      select.value = wanted.includes(current) ? current : "";
    }
  }

  // ---- throughput ring --------------------------------------------------------------------

  // Samples {t: ms, topics: Map(topic -> {records, bytes})}; at most RING_SAMPLES_MAX.
  const ring = [];

  function recordSample(partitions) {
    const topics = new Map();
    for (const p of partitions) {
      const sums = topics.get(p.topic) || { records: 0, bytes: 0 };
      sums.records += p.high_watermark;
      sums.bytes += p.size_bytes;
      topics.set(p.topic, sums);
    }
    ring.push({ t: Date.now(), topics });
    while (ring.length > RING_SAMPLES_MAX) ring.shift();
  }

  // Per topic, [[t, rate]] between successive samples; metric "records" or "bytes". A counter
  // that went down (retention dropped data, the topic was recreated) gives no rate for that
  // step rather than a negative one.
  function rates(metric) {
    const byTopic = new Map();
    for (let i = 1; i < ring.length; i++) {
      const before = ring[i - 1];
      const after = ring[i];
      const seconds = (after.t - before.t) / 1000;
      if (seconds <= 0) continue;
      for (const [topic, now] of after.topics) {
        const then = before.topics.get(topic);
        if (!then || now[metric] < then[metric]) continue;
        if (!byTopic.has(topic)) byTopic.set(topic, []);
        byTopic.get(topic).push([after.t, (now[metric] - then[metric]) / seconds]);
      }
    }
    return byTopic;
  }

  function latestRate(metric, topic) {
    const points = rates(metric).get(topic);
    return points && points.length ? points[points.length - 1][1] : null;
  }

  // All topics summed, per sample step.
  function totalRate(metric) {
    const sums = new Map();
    for (const points of rates(metric).values()) {
      for (const [t, v] of points) sums.set(t, (sums.get(t) || 0) + v);
    }
    return [...sums.entries()].sort((a, b) => a[0] - b[0]);
  }

  // The busiest topics as their own series, the others summed into one.
  function topicSeries(metric) {
    const byTopic = [...rates(metric).entries()];
    const recent = (points) => points.slice(-5).reduce((sum, p) => sum + p[1], 0);
    byTopic.sort((a, b) => recent(b[1]) - recent(a[1]) || a[0].localeCompare(b[0]));
    const series = byTopic.slice(0, CHART_SERIES_TOPICS_MAX).map(([name, points]) => ({ name, points }));
    const rest = byTopic.slice(CHART_SERIES_TOPICS_MAX);
    if (rest.length) {
      const sums = new Map();
      for (const [, points] of rest) for (const [t, v] of points) sums.set(t, (sums.get(t) || 0) + v);
      series.push({ name: `${rest.length} other topics`, points: [...sums.entries()] });
    }
    return series;
  }

  const COLLECTING = "Collecting: throughput appears after two polls.";
  const THROUGHPUT_WINDOW_MS_MIN = 60000;

  // The x range of a throughput chart: the ring's span, at least a minute, ending now, so
  // the line moves left as time passes like any monitoring graph.
  function throughputDomain() {
    const last = ring.length ? ring[ring.length - 1].t : Date.now();
    const span = ring.length ? last - ring[0].t : 0;
    return [last - Math.max(THROUGHPUT_WINDOW_MS_MIN, span), last];
  }

  // ---- pages ------------------------------------------------------------------------------

  // What each page needs, fetched in parallel every refresh; system.partitions always (the
  // throughput ring is kept whichever page is shown).
  const PAGES = {
    overview: {
      queries: {
        topics: "SELECT name, topic_id, partitions FROM system.topics ORDER BY name",
        zones: "SELECT state, topic, count(*) AS zones, sum(write_pointer_bytes) AS used_bytes, sum(capacity_bytes) AS capacity_bytes FROM system.zones GROUP BY state, topic",
        groups: "SELECT count(DISTINCT group_id) AS groups, sum(lag) AS lag FROM system.consumer_groups",
        // errors is a view's total, repeated on each of its partition rows: once per view.
        views: "SELECT count(*) AS views, sum(errors) AS errors FROM (SELECT name, max(errors) AS errors FROM system.views GROUP BY name)",
      },
      optional: ["views"],
      render: renderOverview,
    },
    topics: {
      queries: { topics: "SELECT name, topic_id, partitions FROM system.topics ORDER BY name" },
      render: renderTopics,
    },
    zones: {
      queries: { zones: "SELECT zone, state, write_pointer_bytes, capacity_bytes, topic, partition, partitions, topics, live_bytes, stream, write_amplification FROM system.zones ORDER BY zone" },
      render: renderZones,
    },
    groups: {
      queries: { groups: "SELECT group_id, protocol, state, members, topic, partition, committed_offset, high_watermark, lag FROM system.consumer_groups ORDER BY group_id, topic, partition" },
      render: renderGroups,
    },
    views: {
      queries: { views: "SELECT * FROM system.views ORDER BY name, partition" },
      optional: ["views"],
      render: renderViews,
    },
    sql: { queries: { topics: "SELECT name FROM system.topics ORDER BY name" }, render: renderSqlPage },
  };
  const PARTITIONS_SQL = "SELECT topic, partition, log_start_offset, high_watermark, log_end_offset, size_bytes, zones, failure, storage_full FROM system.partitions ORDER BY topic, partition";
  // system.partitions' storage_full (the same on every row): no zone is free for data appends.
  const STORAGE_FULL_TEXT = "Storage full: no free zone for data appends. Produce answers KAFKA_STORAGE_ERROR until zones are reclaimed (retention, DeleteRecords, deleting a topic).";
  const storageFull = (partitions) => partitions.some((p) => p.storage_full);

  // A missing table (system.views on a server without views) is a state, not a failure. It is
  // asked for again only after MISSING_RECHECK_MS, not on every poll.
  const MISSING_RECHECK_MS = 30000;
  const missingTables = new Map(); // query text -> {message, until}
  function isMissingTable(error) {
    return /table .*not found|not found.*table|no table named/i.test(error.message);
  }
  function optionalQuery(text) {
    const known = missingTables.get(text);
    if (known && Date.now() < known.until) return Promise.resolve({ missing: known.message, rows: [], columns: [] });
    return sql(text, POLL_TIMEOUT_MS).then((answer) => {
      missingTables.delete(text);
      return answer;
    }, (error) => {
      if (!isMissingTable(error)) throw error;
      missingTables.set(text, { message: error.message, until: Date.now() + MISSING_RECHECK_MS });
      return { missing: error.message, rows: [], columns: [] };
    });
  }

  function statCard(label, value, sub, id) {
    return h("div", { class: "card", dataset: { stat: id } },
      h("div", { class: "card-label" }, label),
      h("div", { class: "card-value" }, value),
      h("div", { class: "card-sub" }, sub || "\u00a0"));
  }

  function renderOverview(data) {
    const partitions = data.partitions;
    const records = partitions.reduce((sum, p) => sum + (p.high_watermark - p.log_start_offset), 0);
    const bytes = partitions.reduce((sum, p) => sum + p.size_bytes, 0);
    const zoneRows = data.zones.rows;
    const zonesTotal = zoneRows.reduce((sum, z) => sum + z.zones, 0);
    const zonesUsed = zoneRows.filter((z) => z.state !== "empty").reduce((sum, z) => sum + z.zones, 0);
    const capacity = zoneRows.reduce((sum, z) => sum + z.capacity_bytes, 0);
    const used = zoneRows.reduce((sum, z) => sum + z.used_bytes, 0);
    const groups = data.groups.rows[0] || {};
    const failing = partitions.filter((p) => p.failure).length;
    const recordsNow = totalRate("records");
    const bytesNow = totalRate("bytes");
    const last = (points) => (points.length ? points[points.length - 1][1] : null);
    let viewsCard;
    if (data.views.missing) {
      viewsCard = statCard("Views", "–", "not served here", "views");
    } else {
      const v = data.views.rows[0] || {};
      viewsCard = statCard("Views", fmtInt(v.views || 0), v.errors ? `${fmtInt(v.errors)} errors` : "no errors", "views");
    }
    $("overview-cards").replaceChildren(
      statCard("Topics", fmtInt(data.topics.rows.length), `${fmtInt(partitions.length)} partitions`, "topics"),
      statCard("Records", fmtInt(records), last(recordsNow) === null ? "rate after two polls" : fmtRate(last(recordsNow)), "records"),
      statCard("Stored", fmtBytes(bytes), last(bytesNow) === null ? "\u00a0" : fmtRate(last(bytesNow), true), "bytes"),
      statCard("Zones in use", `${fmtInt(zonesUsed)} / ${fmtInt(zonesTotal)}`,
        storageFull(partitions) ? "storage full: produce refused" : `${pct(used, capacity).toFixed(1)}% of ${fmtBytes(capacity)}`, "zones"),
      statCard("Groups", fmtInt(groups.groups || 0), groups.lag ? `total lag ${fmtInt(groups.lag)}` : "no lag", "groups"),
      viewsCard,
    );
    if (failing) showBanner(`${failing} partition(s) report a storage failure: see Topics & partitions.`, "warn");
    Charts.draw($("overview-records-chart"), { kind: "line", xTime: true, label: "records per second",
      series: [{ name: "records/s", points: recordsNow }], empty: COLLECTING, height: 200, xDomain: throughputDomain() });
    Charts.draw($("overview-bytes-chart"), { kind: "line", xTime: true, label: "bytes per second", yFormat: (v) => fmtBytes(v), yBinary: true,
      series: [{ name: "bytes/s", points: bytesNow }], empty: COLLECTING, height: 200, xDomain: throughputDomain() });
    $("overview-topics").replaceChildren(topicsTable(data.topics.rows, partitions));
  }

  function topicsTable(topics, partitions) {
    const byTopic = new Map(topics.map((t) => [t.name, { ...t, records: 0, bytes: 0, zones: 0 }]));
    for (const p of partitions) {
      const t = byTopic.get(p.topic);
      if (!t) continue;
      t.records += p.high_watermark - p.log_start_offset;
      t.bytes += p.size_bytes;
      t.zones += p.zones;
    }
    return table([
      { label: "Topic", value: (t) => h("a", { href: `#/topics?topic=${encodeURIComponent(t.name)}`, class: "mono" }, t.name) },
      { label: "Partitions", value: (t) => fmtInt(t.partitions), num: true },
      { label: "Records", value: (t) => fmtInt(t.records), num: true },
      { label: "Stored", value: (t) => fmtBytes(t.bytes), num: true },
      { label: "Zones", value: (t) => fmtInt(t.zones), num: true },
      { label: "Records/s", value: (t) => fmtRate(latestRate("records", t.name)), num: true },
      { label: "Bytes/s", value: (t) => fmtRate(latestRate("bytes", t.name), true), num: true },
      { label: "Topic id", value: (t) => h("span", { class: "mono muted" }, t.topic_id) },
    ], [...byTopic.values()], { empty: "No topics yet: produce to a topic and it shows here." });
  }

  let topicsMetric = "records";
  function renderTopics(data) {
    Charts.draw($("topics-chart"), {
      kind: "line", xTime: true, label: "throughput by topic", legend: true, empty: COLLECTING, xDomain: throughputDomain(),
      yFormat: topicsMetric === "bytes" ? (v) => fmtBytes(v) : undefined, yBinary: topicsMetric === "bytes", series: topicSeries(topicsMetric),
    });
    $("topics-table").replaceChildren(topicsTable(data.topics.rows, data.partitions));
    const filter = $("partitions-filter");
    setSelectOptions(filter, data.topics.rows.map((t) => t.name), "All topics");
    const wanted = routeParam("topic");
    if (wanted !== null && filter.dataset.fromRoute !== wanted) {
      filter.dataset.fromRoute = wanted;
      filter.value = wanted;
    }
    const rows = data.partitions.filter((p) => !filter.value || p.topic === filter.value);
    $("partitions-table").replaceChildren(table([
      { label: "Topic", value: (p) => h("span", { class: "mono" }, p.topic) },
      { label: "Partition", value: (p) => p.partition, num: true },
      { label: "Log start", value: (p) => fmtInt(p.log_start_offset), num: true },
      { label: "High watermark", value: (p) => fmtInt(p.high_watermark), num: true },
      { label: "Log end", value: (p) => fmtInt(p.log_end_offset), num: true },
      { label: "Records", value: (p) => fmtInt(p.high_watermark - p.log_start_offset), num: true },
      { label: "Stored", value: (p) => fmtBytes(p.size_bytes), num: true },
      { label: "Zones", value: (p) => fmtInt(p.zones), num: true },
      { label: "Status",
        value: (p) => (p.failure ? badge("failed", "error") : p.storage_full ? badge("storage full", "warn") : badge("ok", "ok")),
        title: (p) => p.failure || (p.storage_full ? STORAGE_FULL_TEXT : "serving") },
    ], rows, { empty: "No partitions." }));
  }

  const ZONE_STATES = [
    ["empty", "Empty"], ["open", "Open (being written)"], ["closed", "Closed (written, not full)"], ["full", "Full"],
  ];

  const STREAM_NAMES = ["internal logs", "long-lived topics", "short-retention topics"];

  function zoneTitle(z) {
    // Zones are shared: the partition named is the one holding the most live bytes there.
    const others = z.partitions > 1 ? ` and ${fmtInt(z.partitions - 1)} more partitions` : "";
    const owner = z.topic == null ? (z.state === "empty" ? "free" : "the broker's own logs (metadata, groups)") : `${z.topic} / partition ${z.partition}${others}`;
    const stream = z.stream == null ? "" : `\nstream: ${STREAM_NAMES[z.stream] || z.stream}, live ${fmtBytes(z.live_bytes)}`;
    return `Zone ${z.zone} · ${z.state}\n${owner}\nwrite pointer ${fmtBytes(z.write_pointer_bytes)} of ${fmtBytes(z.capacity_bytes)} (${pct(z.write_pointer_bytes, z.capacity_bytes).toFixed(1)}%)${stream}`;
  }

  function renderZones(data) {
    const zones = data.zones.rows;
    const filter = $("zone-filter");
    // Zones are shared: a topic is in every zone where it has data (`topics`), not only where it
    // holds the most.
    const holds = (z, topic) => (z.topics || []).includes(topic);
    const topics = [...new Set(zones.flatMap((z) => z.topics || []))].sort();
    setSelectOptions(filter, topics, "All topics");
    const selected = filter.value;
    const counts = Object.fromEntries(ZONE_STATES.map(([s]) => [s, 0]));
    let used = 0;
    let capacity = 0;
    for (const z of zones) {
      counts[z.state] = (counts[z.state] || 0) + 1;
      used += z.write_pointer_bytes;
      capacity += z.capacity_bytes;
    }
    const shown = selected ? zones.filter((z) => holds(z, selected)) : zones;
    $("zone-summary").replaceChildren(...[
      h("span", null, h("strong", null, fmtInt(zones.length)), " zones"),
      h("span", null, h("strong", null, fmtInt(zones.length - counts.empty)), " in use"),
      h("span", null, h("strong", null, `${pct(used, capacity).toFixed(1)}%`), ` written (${fmtBytes(used)} of ${fmtBytes(capacity)})`),
      h("span", null, h("strong", null, fmtBytes(zones.reduce((s, z) => s + (z.live_bytes || 0), 0))), " live"),
      zones.length ? h("span", null, "write amplification ", h("strong", null, (zones[0].write_amplification || 1).toFixed(2))) : null,
      selected ? h("span", { class: "zone-selected" }, h("strong", null, fmtInt(shown.length)), ` zones hold ${selected} (${fmtBytes(shown.reduce((s, z) => s + z.write_pointer_bytes, 0))})`) : null,
    ].filter(Boolean));
    // One chip per topic with its zone count: a click filters the map to it (again: all).
    const perTopic = new Map(topics.map((t) => [t, 0]));
    for (const z of zones) for (const t of z.topics || []) perTopic.set(t, perTopic.get(t) + 1);
    const pick = (topic) => { filter.value = filter.value === topic ? "" : topic; renderZones(data); };
    $("zone-topics").replaceChildren(...(topics.length ? [h("span", null, "By topic:")] : []), ...topics.map((t) =>
      h("button", { type: "button", class: `chip${t === selected ? " active" : ""}`, onclick: () => pick(t) }, `${t} · ${fmtInt(perTopic.get(t))}`)));
    $("zone-legend").replaceChildren(...ZONE_STATES.map(([state, label]) =>
      h("span", { class: "legend-item" }, h("span", { class: `zone-swatch zone-${state}` }), `${label}: ${fmtInt(counts[state] || 0)}`)));
    const grid = $("zone-grid");
    grid.classList.toggle("dense", zones.length > ZONE_CELLS_DENSE);
    grid.replaceChildren(...zones.map((z) => {
      const fill = h("span", { class: z.write_pointer_bytes > 0 ? "zone-fill some" : "zone-fill" });
      fill.style.height = `${pct(z.write_pointer_bytes, z.capacity_bytes)}%`;
      const match = selected && holds(z, selected);
      // A label the fill has risen over turns white: the partition sits at the bottom of the
      // cell, the zone id at the top.
      const fillPct = pct(z.write_pointer_bytes, z.capacity_bytes);
      const high = (fillPct > 22 ? " part-on-fill" : "") + (fillPct > 78 ? " id-on-fill" : "");
      const cell = h("div", {
        class: `zone-cell zone-${z.state}${high}${selected ? (match ? " match" : " dim") : ""}`,
        title: zoneTitle(z), tabindex: "0",
        dataset: { zone: z.zone, state: z.state, topic: z.topic == null ? "" : z.topic, partition: z.partition == null ? "" : z.partition, topics: (z.topics || []).join(",") },
      }, fill, h("span", { class: "zone-id" }, z.zone), z.partition == null ? null : h("span", { class: "zone-part" }, `p${z.partition}`));
      const show = () => showZone(z);
      cell.addEventListener("mouseenter", show);
      cell.addEventListener("focus", show);
      return cell;
    }));
  }

  function showZone(z) {
    const row = (label, value) => h("div", { class: "kv" }, h("span", { class: "k" }, label), h("span", { class: "v" }, value));
    $("zone-detail").replaceChildren(
      h("h3", null, `Zone ${z.zone}`),
      row("State", badge(z.state)),
      // Shared zones: the partition with the most bytes there, then every topic with some.
      row("Largest holder", z.topic == null ? (z.state === "empty" ? "free" : "broker's own logs") : `${z.topic} / partition ${z.partition}`),
      row("Topics", (z.topics || []).length ? z.topics.join(", ") : "–"),
      row("Partitions", fmtInt(z.partitions || 0)),
      row("Write pointer", fmtBytes(z.write_pointer_bytes)),
      row("Capacity", fmtBytes(z.capacity_bytes)),
      row("Fill", meter(z.write_pointer_bytes, z.capacity_bytes, `${pct(z.write_pointer_bytes, z.capacity_bytes).toFixed(1)}%`)),
    );
  }

  function renderGroups(data) {
    const rows = data.groups.rows;
    const groups = new Map();
    for (const r of rows) {
      const g = groups.get(r.group_id) || { group_id: r.group_id, protocol: r.protocol, state: r.state, members: r.members, partitions: 0, lag: 0, topics: new Set() };
      if (r.topic != null) {
        g.partitions += 1;
        g.lag += r.lag || 0;
        g.topics.add(r.topic);
      }
      groups.set(r.group_id, g);
    }
    const maxLag = Math.max(1, ...rows.map((r) => r.lag || 0));
    $("groups-table").replaceChildren(table([
      { label: "Group", value: (g) => h("span", { class: "mono" }, g.group_id) },
      { label: "Protocol", value: (g) => g.protocol },
      { label: "State", value: (g) => badge(g.state) },
      { label: "Members", value: (g) => fmtInt(g.members), num: true },
      { label: "Topics", value: (g) => [...g.topics].sort().join(", ") || "–" },
      { label: "Partitions", value: (g) => fmtInt(g.partitions), num: true },
      { label: "Total lag", value: (g) => fmtInt(g.lag), num: true },
    ], [...groups.values()], { empty: "No consumer groups yet." }));
    const filter = $("groups-filter");
    setSelectOptions(filter, [...groups.keys()], "All groups");
    const offsets = rows.filter((r) => r.topic != null && (!filter.value || r.group_id === filter.value));
    $("group-offsets-table").replaceChildren(table([
      { label: "Group", value: (r) => h("span", { class: "mono" }, r.group_id) },
      { label: "Topic", value: (r) => h("span", { class: "mono" }, r.topic) },
      { label: "Partition", value: (r) => r.partition, num: true },
      { label: "Committed", value: (r) => fmtInt(r.committed_offset), num: true },
      { label: "High watermark", value: (r) => fmtInt(r.high_watermark), num: true },
      { label: "Lag", value: (r) => meter(r.lag || 0, maxLag, fmtInt(r.lag)) },
    ], offsets, { empty: "No committed offsets." }));
  }

  function renderViews(data) {
    const panel = $("views-partitions-panel");
    if (data.views.missing) {
      panel.hidden = true;
      $("views-table").replaceChildren(emptyState("Views are not available on this server.",
        `system.views is not served here (${data.views.missing}).`));
      return;
    }
    const rows = data.views.rows;
    if (rows.length === 0) {
      panel.hidden = true;
      $("views-table").replaceChildren(emptyState("No views defined.", "Materialized views appear here with their lag, freshness and errors once created."));
      return;
    }
    panel.hidden = false;
    // Lag and freshness are per partition; rows, dead letters and errors are the view's own
    // totals, repeated on each of its partition rows, so they are taken once (max), not summed.
    const views = new Map();
    for (const r of rows) {
      const v = views.get(r.name) || { name: r.name, kind: r.kind, topic: r.topic, definition: r.definition, lag: 0, rows: 0, fresh_p99: null, dead_letters: 0, errors: 0 };
      v.lag += r.lag || 0;
      v.rows = Math.max(v.rows, r.rows || 0);
      v.dead_letters = Math.max(v.dead_letters, r.dead_letters || 0);
      v.errors = Math.max(v.errors, r.errors || 0);
      if (r.freshness_ms_p99 != null) v.fresh_p99 = Math.max(v.fresh_p99 || 0, r.freshness_ms_p99);
      views.set(r.name, v);
    }
    // An offset below 0: nothing applied (or checkpointed) yet.
    const offsetText = (offset) => (offset == null || offset < 0 ? "none yet" : fmtInt(offset));
    const maxLag = Math.max(1, ...rows.map((r) => r.lag || 0));
    const problems = (v) => (v.errors ? badge(fmtInt(v.errors), "error") : badge("0", "ok"));
    $("views-table").replaceChildren(table([
      { label: "View", value: (v) => [h("div", { class: "mono" }, v.name), v.definition ? h("div", { class: "definition", title: v.definition }, v.definition) : null] },
      { label: "Kind", value: (v) => v.kind },
      { label: "Topic", value: (v) => h("span", { class: "mono" }, v.topic) },
      { label: "Rows", value: (v) => fmtInt(v.rows), num: true },
      { label: "Lag", value: (v) => fmtInt(v.lag), num: true },
      { label: "Freshness p99", value: (v) => fmtMs(v.fresh_p99), num: true },
      { label: "Dead letters", value: (v) => fmtInt(v.dead_letters), num: true },
      { label: "Errors", value: problems, num: true },
    ], [...views.values()], { rowClass: (v) => (v.errors ? "row-error" : null) }));
    $("views-partitions-table").replaceChildren(table([
      { label: "View", value: (r) => h("span", { class: "mono" }, r.name) },
      { label: "Partition", value: (r) => r.partition, num: true },
      { label: "Last applied", value: (r) => offsetText(r.last_applied_offset), num: true },
      { label: "High watermark", value: (r) => fmtInt(r.high_watermark), num: true },
      { label: "Lag", value: (r) => meter(r.lag || 0, maxLag, fmtInt(r.lag)) },
      { label: "Freshness last · p50 · p99", value: (r) => [r.freshness_ms_last, r.freshness_ms_p50, r.freshness_ms_p99].map(fmtMs).join(" · "), num: true },
      { label: "Checkpoint", value: (r) => offsetText(r.checkpoint_offset), num: true },
    ], rows));
  }

  // ---- SQL page ---------------------------------------------------------------------------

  const TIME_TYPE = /^(Timestamp|Date)/;
  const NUMBER_TYPE = /^(Int|UInt|Float|Decimal)/;

  // An Arrow JSON time value as ms since the epoch; one without a zone is UTC (the broker's).
  function timeValue(value) {
    if (value === null || value === undefined) return NaN;
    if (typeof value === "number") return value;
    const text = String(value);
    const zoned = /(Z|[+-]\d\d:?\d\d)$/.test(text) || /^\d{4}-\d\d-\d\d$/.test(text);
    return Date.parse(zoned ? text : `${text}Z`);
  }

  // A chart for answers whose first column is a time (a timestamp or a time bucket such as
  // date_bin/date_trunc) with numeric columns: one series per numeric column, or, with one
  // text column as well (SELECT t, topic, count(*) ...), one series per value of it.
  function chartSpec(answer) {
    const cols = answer.columns;
    if (cols.length < 2 || !TIME_TYPE.test(cols[0].type)) return null;
    const numeric = cols.slice(1).filter((c) => NUMBER_TYPE.test(c.type));
    if (numeric.length === 0) return null;
    const others = cols.slice(1).filter((c) => !NUMBER_TYPE.test(c.type));
    const x = cols[0].name;
    const series = [];
    if (others.length === 1 && numeric.length === 1) {
      const by = others[0].name;
      const groups = new Map();
      for (const row of answer.rows) {
        const key = row[by] === null || row[by] === undefined ? "(null)" : String(row[by]);
        if (!groups.has(key)) groups.set(key, []);
        groups.get(key).push([timeValue(row[x]), Number(row[numeric[0].name])]);
      }
      for (const [name, points] of groups) series.push({ name, points });
    } else {
      for (const c of numeric) series.push({ name: c.name, points: answer.rows.map((row) => [timeValue(row[x]), Number(row[c.name])]) });
    }
    return { series, title: `${numeric.map((c) => c.name).join(", ")} by ${x}` };
  }

  function cellText(value) {
    if (value === null || value === undefined) return null;
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  function resultTable(answer) {
    const cols = answer.columns;
    const rows = answer.rows.slice(0, TABLE_ROWS_MAX);
    if (cols.length === 0) return emptyState("The statement returned no columns.");
    return h("table", { class: "data result" },
      h("thead", null, h("tr", null, cols.map((c) => h("th", { class: NUMBER_TYPE.test(c.type) ? "num" : null, title: c.type }, c.name)))),
      h("tbody", null, rows.length === 0
        ? h("tr", null, h("td", { colspan: cols.length, class: "muted" }, "No rows."))
        : rows.map((row) => h("tr", null, cols.map((c) => {
          const text = cellText(row[c.name]);
          return h("td", { class: [NUMBER_TYPE.test(c.type) ? "num" : "", text === null ? "null" : ""].join(" ").trim() || null },
            text === null ? "NULL" : text.length > 500 ? `${text.slice(0, 500)}…` : text);
        })))));
  }

  let sqlAnswer = null;
  let sqlChartKind = "line";
  let sqlRunning = false;

  async function runSql() {
    const text = $("sql-input").value.trim();
    if (!text || sqlRunning) return;
    sqlRunning = true;
    $("sql-run").disabled = true;
    $("sql-run").classList.add("busy");
    const started = performance.now();
    try {
      sqlAnswer = await sql(text);
      sqlAnswer.elapsed_ms = performance.now() - started;
      $("sql-error").hidden = true;
      try { sessionStorage.setItem("yottastore.sql", text); } catch (_) { /* storage refused: not needed */ }
      drawSqlAnswer();
    } catch (error) {
      sqlAnswer = null;
      $("sql-chart-panel").hidden = true;
      $("sql-result-panel").hidden = true;
      const box = $("sql-error");
      box.replaceChildren(
        h("div", { class: "error-title" }, error.status ? `Query failed (HTTP ${error.status})` : "Query failed"),
        h("pre", { class: "error-message" }, error.message));
      box.hidden = false;
    } finally {
      sqlRunning = false;
      $("sql-run").disabled = false;
      $("sql-run").classList.remove("busy");
    }
  }

  function drawSqlAnswer() {
    if (!sqlAnswer) return;
    const answer = sqlAnswer;
    const spec = chartSpec(answer);
    const chartPanel = $("sql-chart-panel");
    chartPanel.hidden = !spec;
    if (spec) {
      $("sql-chart-title").textContent = spec.title;
      for (const button of $("sql-chart-kind").querySelectorAll("button")) button.classList.toggle("active", button.dataset.kind === sqlChartKind);
      Charts.draw($("sql-chart"), { kind: sqlChartKind, xTime: true, series: spec.series, label: spec.title, height: 280 });
    }
    $("sql-result-panel").hidden = false;
    const shown = Math.min(answer.rows.length, TABLE_ROWS_MAX);
    const notes = [`${fmtInt(answer.row_count)} row${answer.row_count === 1 ? "" : "s"}`, `${Math.round(answer.elapsed_ms)} ms`];
    if (shown < answer.rows.length) notes.push(`first ${fmtInt(shown)} shown`);
    if (answer.truncated) notes.push("cut at the server's row limit");
    $("sql-meta").textContent = notes.join(" · ");
    $("sql-table").replaceChildren(resultTable(answer));
  }

  function sqlExamples(topics) {
    const topic = topics.length ? topics[0].name : null;
    const quoted = topic ? `"${topic.replace(/"/g, '""')}"` : null;
    const examples = [
      ["Topics", "SELECT * FROM system.topics ORDER BY name"],
      ["Partitions", "SELECT topic, partition, high_watermark, size_bytes FROM system.partitions ORDER BY topic, partition"],
      ["Zones by state", "SELECT state, count(*) AS zones, sum(write_pointer_bytes) AS bytes FROM system.zones GROUP BY state ORDER BY state"],
    ];
    if (quoted) {
      examples.push(["Records per second", `SELECT date_bin(INTERVAL '1 second', timestamp) AS t, count(*) AS records\nFROM ${quoted}\nGROUP BY 1 ORDER BY 1`]);
      examples.push(["Per partition per minute", `SELECT date_trunc('minute', timestamp) AS minute, CAST(partition AS VARCHAR) AS p, count(*) AS records\nFROM ${quoted}\nGROUP BY 1, 2 ORDER BY 1`]);
      examples.push(["Latest records", `SELECT partition, "offset", timestamp, key, value FROM ${quoted}\nORDER BY timestamp DESC LIMIT 20`]);
    }
    return examples;
  }

  let examplesKey = "";
  function renderSqlPage(data) {
    const examples = sqlExamples(data.topics ? data.topics.rows : []);
    const key = JSON.stringify(examples);
    if (key !== examplesKey) {
      examplesKey = key;
      $("sql-examples").replaceChildren(...examples.map(([label, text]) => h("button", {
        type: "button", class: "chip", onclick: () => { $("sql-input").value = text; runSql(); },
      }, label)));
    }
    if ($("sql-live").checked && sqlAnswer) runSql();
  }

  // ---- routing, refresh -------------------------------------------------------------------

  function route() {
    const match = /^#\/([a-z]+)/.exec(location.hash);
    return match && PAGES[match[1]] ? match[1] : "overview";
  }
  function routeParam(name) {
    const query = location.hash.split("?")[1];
    return query ? new URLSearchParams(query).get(name) : null;
  }

  let paused = false;
  let timer = null;
  let inFlight = false;
  let lastOk = null;

  function showBanner(text, kind) {
    const banner = $("banner");
    banner.textContent = text;
    banner.className = `banner banner-${kind || "error"}`;
    banner.hidden = false;
  }

  // One refresh at a time; one asked for meanwhile (a page or filter change) runs right after,
  // so the page shown is never left with the previous page's answer until the next tick.
  let refreshAgain = false;
  async function refresh() {
    if (inFlight) {
      refreshAgain = true;
      return;
    }
    inFlight = true;
    const name = route();
    const page = PAGES[name];
    const section = $(`page-${name}`);
    const optional = new Set(page.optional || []);
    try {
      const entries = Object.entries(page.queries);
      const [partitions, ...answers] = await Promise.all([
        sql(PARTITIONS_SQL, POLL_TIMEOUT_MS),
        ...entries.map(([key, text]) => (optional.has(key) ? optionalQuery(text) : sql(text, POLL_TIMEOUT_MS))),
      ]);
      recordSample(partitions.rows);
      const data = { partitions: partitions.rows };
      entries.forEach(([key], i) => { data[key] = answers[i]; });
      $("banner").hidden = true;
      if (route() === name) {
        page.render(data);
        section.dataset.loaded = "true";
        delete section.dataset.error;
      }
      // On every page, over any page's own warning: the device refuses data appends.
      if (storageFull(partitions.rows)) showBanner(STORAGE_FULL_TEXT, "error");
      document.body.dataset.storageFull = String(storageFull(partitions.rows));
      lastOk = new Date();
      setLive();
    } catch (error) {
      section.dataset.error = error.message;
      showBanner(error.status === 0 ? `Cannot reach the server: ${error.message}` : `Refreshing failed: ${error.message}`);
      setLive(error);
    } finally {
      inFlight = false;
      if (refreshAgain) {
        refreshAgain = false;
        refresh();
      }
    }
  }

  function setLive(error) {
    const dot = $("live-dot");
    dot.className = `dot ${paused ? "paused" : error ? "down" : "up"}`;
    const time = lastOk ? lastOk.toLocaleTimeString([], { hour12: false }) : "never";
    $("live-text").textContent = paused ? `Paused · updated ${time}` : error ? `Retrying · last update ${time}` : `Live · updated ${time}`;
  }

  function schedule() {
    clearInterval(timer);
    timer = null;
    // A hidden tab does not poll (no load on the server for nobody); it catches up when shown.
    if (!paused) timer = setInterval(() => { if (!document.hidden) refresh(); }, Number($("refresh-interval").value));
    $("pause").textContent = paused ? "Resume" : "Pause";
    $("pause").classList.toggle("primary", paused);
    setLive();
  }

  function showPage() {
    const name = route();
    for (const section of document.querySelectorAll("section.page")) section.hidden = section.id !== `page-${name}`;
    for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.page === name);
    const title = $(`page-${name}`).dataset.title;
    $("page-title").textContent = title;
    document.title = `${title} · YottaStore`;
    refresh();
  }

  function init() {
    $("server-name").textContent = location.host;
    window.addEventListener("hashchange", showPage);
    document.addEventListener("visibilitychange", () => { if (!document.hidden && !paused) refresh(); });
    $("pause").addEventListener("click", () => { paused = !paused; schedule(); if (!paused) refresh(); });
    $("refresh-interval").addEventListener("change", schedule);
    for (const id of ["partitions-filter", "zone-filter", "groups-filter"]) $(id).addEventListener("change", refresh);
    $("topics-metric").addEventListener("click", (event) => {
      const metric = event.target.dataset.metric;
      if (!metric) return;
      topicsMetric = metric;
      for (const b of $("topics-metric").querySelectorAll("button")) b.classList.toggle("active", b.dataset.metric === metric);
      refresh();
    });
    $("sql-chart-kind").addEventListener("click", (event) => {
      const kind = event.target.dataset.kind;
      if (!kind) return;
      sqlChartKind = kind;
      drawSqlAnswer();
    });
    $("sql-run").addEventListener("click", runSql);
    $("sql-input").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        runSql();
      }
    });
    try {
      $("sql-input").value = sessionStorage.getItem("yottastore.sql") || "SELECT * FROM system.topics ORDER BY name";
    } catch (_) {
      $("sql-input").value = "SELECT * FROM system.topics ORDER BY name";
    }
    // Charts are drawn to the container's width: redraw when it changes.
    let resizeTimer = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => { drawSqlAnswer(); refresh(); }, 200);
    });
    if (!location.hash) history.replaceState(null, "", "#/overview");
    schedule();
    showPage();
  }

  init();
})();
