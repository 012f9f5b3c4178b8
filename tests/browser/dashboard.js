#!/usr/bin/env node
// Drives Debian's headless Chromium (/usr/bin/chromium) through the dashboard of a running
// `yottastore serve` with playwright-core, and prints what it saw as one JSON object on stdout.
// tests/kafka/dashboard_tests.py starts the broker, writes the data, runs this, and checks the
// observations against the server's own answers (so the checks live in one place, the test).
//
//   node tests/browser/dashboard.js --url http://127.0.0.1:PORT --topic TOPIC --group GROUP \
//        --out tests/artifacts/dashboard
//
// With `--mode storage-full` (tests/kafka/storage_tests.py, on a full device) it only loads the
// dashboard and reports how it shows the full device: the banner, the overview's zones card and
// the statuses of TOPIC's partitions.
//
// Screenshots (full page, one per page visited) go to --out. Every wait is bounded; a step that
// times out is reported in `failures` with the page's own error state, and the run goes on so
// one broken page does not hide the others. Exit status: 0 when it ran (whatever it saw), 1
// when the browser could not be driven at all, 2 for a usage error.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require("playwright-core");

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const STEP_TIMEOUT_MS = 20000;
// Without the background-networking flags Chromium tries to reach Google's services, which
// the closed network refuses (and which a test has no business calling anyway).
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--disable-dev-shm-usage"];

function parseArgs(argv) {
  const args = {};
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i];
    if (!key.startsWith("--") || i + 1 >= argv.length) usage(`bad argument ${key}`);
    args[key.slice(2)] = argv[i + 1];
  }
  for (const required of ["url", "topic", "out"]) if (!args[required]) usage(`--${required} is required`);
  return args;
}
function usage(message) {
  process.stderr.write(`${message}\nusage: dashboard.js --url URL --topic TOPIC [--group GROUP] --out DIR\n`);
  process.exit(2);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  fs.mkdirSync(args.out, { recursive: true });
  const origin = new URL(args.url).origin;
  const seen = { pages: {}, failures: [], console_errors: [], error_responses: [], foreign_requests: [], failed_requests: [], screenshots: [] };
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "yottastore-chromium-"));
  let context;
  try {
    // A persistent context on a fresh directory: the --user-data-dir the brief asks for.
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM, headless: true, args: FLAGS, viewport: { width: 1440, height: 900 },
      timeout: 60000,
    });
  } catch (error) {
    process.stderr.write(`cannot start ${CHROMIUM}: ${error.message}\n`);
    fs.rmSync(profile, { recursive: true, force: true });
    process.exit(1);
  }
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  // An HTTP error answer is logged by Chromium as "Failed to load resource"; those are collected
  // with their request below (the test knows which statements must fail), everything else counts.
  page.on("console", (msg) => {
    if (msg.type() === "error" && !msg.text().startsWith("Failed to load resource")) seen.console_errors.push(msg.text());
  });
  page.on("response", (response) => {
    if (response.status() >= 400) {
      seen.error_responses.push({ url: response.url(), status: response.status(), body: response.request().postData() });
    }
  });
  page.on("pageerror", (error) => seen.console_errors.push(`uncaught: ${error.message}`));
  page.on("request", (request) => {
    const url = request.url();
    if (!url.startsWith(origin) && !url.startsWith("data:")) seen.foreign_requests.push(url);
  });
  page.on("requestfailed", (request) => seen.failed_requests.push(`${request.url()}: ${request.failure()?.errorText}`));

  async function step(name, fn) {
    try {
      return await fn();
    } catch (error) {
      const state = await page.evaluate(() => [...document.querySelectorAll("section.page")]
        .map((s) => `${s.id}: loaded=${s.dataset.loaded || "no"} error=${s.dataset.error || "none"}`).join("; ")).catch(() => "");
      seen.failures.push(`${name}: ${error.message.split("\n")[0]} [${state}]`);
      return null;
    }
  }
  async function shot(name) {
    const file = path.join(args.out, `${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
    seen.screenshots.push(file);
  }
  // Navigates by clicking the sidebar link, as a person would, and waits for the page's data.
  async function open(name) {
    await page.click(`nav a[data-page="${name}"]`);
    await page.waitForSelector(`#page-${name}[data-loaded="true"]:not([hidden])`);
    seen.pages[name] = Object.assign(seen.pages[name] || {}, { title: await page.textContent("#page-title") });
  }
  // Picks `value` in a page's filter and waits until the table shows only its rows.
  async function filterTo(select, tableSelector, value) {
    await page.selectOption(select, value);
    await page.waitForFunction(([selector, wanted]) => {
      const rows = [...document.querySelectorAll(`${selector} tbody tr`)];
      return rows.length > 0 && rows.every((row) => row.cells[0].textContent.trim() === wanted);
    }, [tableSelector, value]);
  }
  const tableRows = (selector) => page.$$eval(`${selector} table tbody tr`, (rows) =>
    rows.map((row) => [...row.querySelectorAll("td")].map((td) => td.textContent.trim())));

  await step("load", async () => {
    await page.goto(`${args.url}/`, { waitUntil: "load" });
    await page.waitForSelector('#page-overview[data-loaded="true"]');
    // Poll every second (the control a person would use), so the throughput fills in sooner.
    await page.selectOption("#refresh-interval", "1000");
  });

  async function finish() {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
    process.stdout.write(`${JSON.stringify(seen)}\n`);
  }

  if (args.mode === "storage-full") {
    await step("storage-full", async () => {
      await page.waitForSelector('body[data-storage-full="true"]');
      const zones = await page.$eval('#overview-cards .card[data-stat="zones"] .card-sub', (sub) => sub.textContent.trim());
      const banner = await page.$eval("#banner", (banner) => (banner.hidden ? "" : banner.textContent.trim()));
      await shot("storage-full-overview");
      await open("topics");
      await filterTo("#partitions-filter", "#partitions-table", args.topic);
      const statuses = await page.$$eval("#partitions-table table tbody tr", (rows) =>
        rows.map((row) => row.querySelector(".badge")?.textContent.trim() || ""));
      const topicsBanner = await page.$eval("#banner", (banner) => (banner.hidden ? "" : banner.textContent.trim()));
      await shot("storage-full-partitions");
      seen.storage_full = { banner, zones_card: zones, partition_statuses: statuses, topics_page_banner: topicsBanner };
    });
    return finish();
  }

  await step("overview", async () => {
    await open("overview");
    // Throughput needs two polls; the test produces all along, so wait for a rate above 0.
    await page.waitForFunction(() => {
      const rates = [...document.querySelectorAll("#overview-records-chart .point")].map((point) => Number(point.dataset.y));
      return rates.length >= 3 && rates.some((rate) => rate > 0);
    }, null, { timeout: 15000 });
    const rates = await page.$$eval("#overview-records-chart .point", (points) => points.map((p) => Number(p.dataset.y)));
    const cards = await page.$$eval("#overview-cards .card", (cards) => Object.fromEntries(cards.map((card) =>
      [card.dataset.stat, card.querySelector(".card-value").textContent.trim()])));
    Object.assign(seen.pages.overview, { cards, records_per_second: rates, topics: await tableRows("#overview-topics") });
    await shot("overview");
  });

  await step("topics", async () => {
    await open("topics");
    await filterTo("#partitions-filter", "#partitions-table", args.topic);
    Object.assign(seen.pages.topics, { topics: await tableRows("#topics-table"), partitions: await tableRows("#partitions-table") });
    await shot("topics");
  });

  await step("zones", async () => {
    await open("zones");
    await page.waitForSelector('.zone-cell[data-topic]:not([data-topic=""])');
    const readCells = () => page.$$eval(".zone-cell", (cells) => cells.map((c) => ({
      zone: Number(c.dataset.zone), state: c.dataset.state, topic: c.dataset.topic, partition: c.dataset.partition,
      topics: c.dataset.topics ? c.dataset.topics.split(",") : [], match: c.classList.contains("match"),
      title: c.getAttribute("title"),
    })));
    const cells = await readCells();
    // Filtered to the topic (as a person picks it in the list): the zones where it has data,
    // shared with other topics or not, are highlighted.
    await page.selectOption("#zone-filter", args.topic);
    await page.waitForSelector(".zone-cell.match");
    const filtered = await readCells();
    const selectedText = await page.textContent("#zone-summary .zone-selected");
    await page.hover('.zone-cell[data-topic]:not([data-topic=""])');
    const detail = await page.textContent("#zone-detail");
    Object.assign(seen.pages.zones, { cells, detail, filtered, selected_text: selectedText });
    await shot("zones");
  });

  await step("groups", async () => {
    await open("groups");
    if (args.group) await filterTo("#groups-filter", "#group-offsets-table", args.group);
    Object.assign(seen.pages.groups, { groups: await tableRows("#groups-table"), offsets: await tableRows("#group-offsets-table") });
    await shot("groups");
  });

  await step("views", async () => {
    await open("views");
    Object.assign(seen.pages.views, {
      text: (await page.textContent("#page-views")).replace(/\s+/g, " ").trim(),
      views: await tableRows("#views-table"),
      partitions: await tableRows("#views-partitions-table"),
    });
    await shot("views");
  });

  // SQL: type a statement, run it, read the table the page shows.
  async function runSql(text, waitFor) {
    await page.fill("#sql-input", text);
    await page.click("#sql-run");
    await page.waitForSelector(waitFor);
  }
  const quoted = `"${args.topic.replace(/"/g, '""')}"`;

  await step("sql-table", async () => {
    await open("sql");
    await runSql(`SELECT partition, count(*) AS n FROM ${quoted} GROUP BY partition ORDER BY partition`,
      "#sql-result-panel:not([hidden]) #sql-table table");
    const columns = await page.$$eval("#sql-table thead th", (ths) => ths.map((th) => th.textContent.trim()));
    seen.sql_table = { columns, rows: await tableRows("#sql-table"), chart_shown: await page.isVisible("#sql-chart-panel") };
    await shot("sql-table");
  });

  await step("sql-chart", async () => {
    await runSql(`SELECT date_bin(INTERVAL '1 second', timestamp) AS t, count(*) AS records FROM ${quoted} GROUP BY 1 ORDER BY 1`,
      "#sql-chart-panel:not([hidden]) #sql-chart svg");
    const marks = (selector) => page.$$eval(selector, (els) => els.map((e) => [Number(e.dataset.x), Number(e.dataset.y)]));
    const line = await marks("#sql-chart svg .point");
    const pathD = await page.getAttribute("#sql-chart svg path.line", "d");
    await shot("sql-chart-line");
    await page.click('#sql-chart-kind button[data-kind="bar"]');
    await page.waitForSelector("#sql-chart svg[data-kind=bar] rect.bar");
    const bars = await marks("#sql-chart svg rect.bar");
    seen.sql_chart = { line_points: line, line_path_segments: (pathD || "").split(/[ML]/).filter(Boolean).length, bars,
                       table_rows: (await tableRows("#sql-table")).length };
    await shot("sql-chart-bar");
  });

  await step("sql-series", async () => {
    // A text column beside the bucket and one count: one series per value of it.
    await runSql(`SELECT date_bin(INTERVAL '1 second', timestamp) AS t, 'p' || CAST(partition AS VARCHAR) AS p, count(*) AS records `
      + `FROM ${quoted} GROUP BY 1, 2 ORDER BY 1, 2`, "#sql-chart-panel:not([hidden]) #sql-chart svg");
    await page.click('#sql-chart-kind button[data-kind="line"]');
    await page.waitForSelector("#sql-chart svg[data-kind=line] .point");
    seen.sql_series = await page.$$eval("#sql-chart svg g.series", (groups) => Object.fromEntries(groups.map((g) =>
      [g.dataset.series, [...g.querySelectorAll(".point")].map((p) => [Number(p.dataset.x), Number(p.dataset.y)])])));
    seen.sql_series_legend = await page.$$eval("#sql-chart .chart-legend span", (items) => items.map((i) => i.textContent.trim()).filter(Boolean));
    await shot("sql-chart-series");
  });

  await step("sql-error", async () => {
    await runSql("SELEC 1", "#sql-error:not([hidden])");
    seen.sql_error = (await page.textContent("#sql-error")).trim();
    await shot("sql-error");
  });

  await step("live-refresh", async () => {
    // The page polls by itself: its "updated" time moves on without any click.
    await open("overview");
    const before = await page.textContent("#live-text");
    await page.waitForFunction((text) => document.getElementById("live-text").textContent !== text, before, { timeout: 10000 });
    seen.live = { before, after: await page.textContent("#live-text") };
  });

  await finish();
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});
