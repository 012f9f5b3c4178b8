"""The web dashboard (issue 7) in a real browser, for run_kafka_tests.py.

Module `dashboard` (one broker):
  dashboard/browser    records with timestamps spread over several seconds are produced with
                       confluent-kafka and a group commits offsets; then tests/browser/dashboard.js
                       drives Debian's headless Chromium (playwright-core) through every page of
                       the dashboard served on the broker's HTTP address. What the browser saw is
                       checked against the server's own answers: the pages load without console
                       errors or requests to anywhere else; the topics and partitions pages show
                       the topic's offsets; the zone map, filtered to the topic, shows exactly the
                       zones system.zones gives it (its `topics`: zones are shared); the groups page shows the lag; the views page
                       shows a view made over the topic (or, on a server without system.views,
                       that views are not available); a SQL query shows its table; a
                       time-bucketed query (date_bin over 1 s) draws a line chart and a bar chart
                       whose points are the buckets of what was produced, and split by a text
                       column into one series per partition; a bad statement shows
                       its error; the page refreshes by itself, and its throughput chart shows the
                       records a background producer writes meanwhile. Screenshots go to
                       tests/artifacts/dashboard/.

The runner's helpers come in as `rk`, the runner module.
"""

import json
import os
import shutil
import subprocess
import time

import sql_tests

BROWSER_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "browser")
CHROMIUM = "/usr/bin/chromium"
# Records in each of 12 consecutive seconds (uneven, so a chart that drew them wrong shows).
PER_SECOND = [30, 42, 55, 61, 48, 37, 52, 70, 66, 45, 38, 56]
RECORDS = sum(PER_SECOND)
BROWSER_TIMEOUT_S = 240
LIVE_RECORDS_PER_S = 200


def produce_spread(rk, broker, topic):
    """RECORDS records over 3 partitions (round robin) with CreateTimes in 12 whole seconds,
    PER_SECOND of them in each; returns ({partition: count}, {second bucket ms: count})."""
    from confluent_kafka import Producer
    producer = Producer({"bootstrap.servers": broker.addr, "acks": "all", "linger.ms": 5})
    base_ms = (int(time.time()) - 120) * 1000
    per_partition, per_second = {}, {}

    def delivered(error, message):
        rk.check(error is None, f"delivery failed: {error}")
        per_partition[message.partition()] = per_partition.get(message.partition(), 0) + 1

    seconds = [second for second, count in enumerate(PER_SECOND) for _ in range(count)]
    for i, second in enumerate(seconds):
        ts = base_ms + second * 1000 + (i * 7) % 1000
        per_second[ts - ts % 1000] = per_second.get(ts - ts % 1000, 0) + 1
        value = json.dumps({"id": i, "speed": i % 90}).encode()
        producer.produce(topic, key=f"k{i % 11}".encode(), value=value, partition=i % 3, timestamp=ts,
                         on_delivery=delivered)
    rk.check(producer.flush(60) == 0, "messages left unflushed")
    return per_partition, per_second


def commit_offsets(rk, broker, topic, group, offsets):
    from confluent_kafka import Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": broker.addr, "group.id": group, "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
    finally:
        consumer.close()


class BackgroundProducer:
    """Produces LIVE_RECORDS_PER_S records a second to `topic` until stopped (or
    BROWSER_TIMEOUT_S), so the page's throughput, computed from its polls, has something to show."""

    def __init__(self, rk, broker, topic):
        import threading
        from confluent_kafka import Producer
        self.producer = Producer({"bootstrap.servers": broker.addr, "acks": "all", "linger.ms": 5})
        self.topic = topic
        self.stop_event = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        deadline = time.monotonic() + BROWSER_TIMEOUT_S
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            for i in range(LIVE_RECORDS_PER_S // 10):
                self.producer.produce(self.topic, value=f"live {self.sent}".encode())
                self.sent += 1
            self.producer.poll(0)
            self.stop_event.wait(0.1)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join(10)
        self.producer.flush(30)


def run_browser(rk, broker, topic, group, out_dir, extra=()):
    rk.check(os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: run scripts/setup-test-deps.sh")
    rk.check(os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")),
             "tests/browser/node_modules lacks playwright-core: run scripts/setup-test-deps.sh")
    cmd = ["node", os.path.join(BROWSER_DIR, "dashboard.js"), "--url", f"http://{broker.http_addr}",
           "--topic", topic, "--group", group, "--out", out_dir, *extra]
    result = subprocess.run(cmd, capture_output=True, timeout=BROWSER_TIMEOUT_S)
    err = result.stderr.decode(errors="replace")
    rk.check(result.returncode == 0, f"the browser run exited {result.returncode}:\n{err[-3000:]}")
    try:
        return json.loads(result.stdout)
    except ValueError:
        raise rk.TestFailure(f"the browser run printed no JSON: {result.stdout[:500]!r}\n{err[-2000:]}")


def number(text):
    """A number as the page prints it (thousands separators)."""
    return int(text.replace(",", ""))


def test_browser(rk, broker):
    topic = rk.topic_name("dash-readings")
    group = f"{topic}-readers"
    rk.create_topic(broker, topic, partitions=3)
    per_partition, per_second = produce_spread(rk, broker, topic)
    committed = {p: n // 2 for p, n in per_partition.items()}
    commit_offsets(rk, broker, topic, group, committed)

    live_topic = rk.topic_name("dash-live")
    rk.create_topic(broker, live_topic, partitions=1)

    # A materialized view over the topic, where the server has them (system.views served).
    status, _, _ = sql_tests.post_sql(broker, "SELECT DISTINCT name FROM system.views")
    views_served = status == 200
    view = None
    if views_served:
        view = topic.replace("-", "_") + "_speeds"
        sql_tests.query_json(rk, broker, f'CREATE MATERIALIZED VIEW {view} AS SELECT speed, count(*) AS n FROM "{topic}" GROUP BY speed')

    out_dir = os.path.join(rk.REPO, "tests", "artifacts", "dashboard")
    shutil.rmtree(out_dir, ignore_errors=True)
    with BackgroundProducer(rk, broker, live_topic):
        seen = run_browser(rk, broker, topic, group, out_dir)

    rk.check(not seen["failures"], "browser steps failed:\n  " + "\n  ".join(seen["failures"]))
    rk.check(not seen["console_errors"], f"console errors: {seen['console_errors']}")
    rk.check(not seen["foreign_requests"], f"the page asked for something not on the server: {seen['foreign_requests']}")
    rk.check(not seen["failed_requests"], f"requests failed: {seen['failed_requests']}")
    # The only error answers: the bad statement typed in, and system.views where it is missing.
    for response in seen["error_responses"]:
        expected = response["body"] == "SELEC 1" or (not views_served and "system.views" in (response["body"] or ""))
        rk.check(expected and response["url"].endswith("/sql") and response["status"] == 400,
                 f"unexpected error answer: {response}")
    pages = seen["pages"]
    rk.check(set(pages) == {"overview", "topics", "zones", "groups", "views", "sql"}, f"pages loaded: {sorted(pages)}")

    # Overview: the counts are the server's.
    topics = sql_tests.query_json(rk, broker, "SELECT count(*) AS n FROM system.topics")["rows"][0]["n"]
    cards = pages["overview"]["cards"]
    rk.check(number(cards["topics"]) == topics == 2, f"overview topics card {cards['topics']!r}, server has {topics}")
    rk.check(number(cards["records"]) > RECORDS, f"overview records card {cards['records']!r}, produced {RECORDS} and more")
    rk.check(number(cards["groups"]) == 1, f"overview groups card {cards['groups']!r}")
    # Throughput while the background producer ran: above 0, and not above what it can send.
    rates = pages["overview"]["records_per_second"]
    rk.check(rates and 0 < max(rates) <= 20 * LIVE_RECORDS_PER_S, f"records/s drawn on the overview: {rates}")

    # Topics and partitions: the topic's row and its partitions' high watermarks.
    topic_rows = [row for row in pages["topics"]["topics"] if row[0] == topic]
    rk.check(len(topic_rows) == 1 and number(topic_rows[0][1]) == 3 and number(topic_rows[0][2]) == RECORDS,
             f"topics table row for {topic}: {topic_rows}")
    shown = {int(row[1]): number(row[3]) for row in pages["topics"]["partitions"]}
    rk.check(shown == per_partition, f"partitions page high watermarks {shown}, produced {per_partition}")

    # Zone map: every zone is a cell naming the holder system.zones names (zones are shared by
    # partitions since storage v2: the holder is the partition with the most live bytes there).
    zones = sql_tests.query_json(rk, broker, "SELECT zone, topic, partition FROM system.zones WHERE topic IS NOT NULL")["rows"]
    want = {row["zone"]: (row["topic"], row["partition"]) for row in zones}
    cells = pages["zones"]["cells"]
    total = sql_tests.query_json(rk, broker, "SELECT count(*) AS n FROM system.zones")["rows"][0]["n"]
    rk.check(len(cells) == total, f"zone map has {len(cells)} cells, the device {total} zones")
    shown = {c["zone"]: (c["topic"], int(c["partition"])) for c in cells if c["topic"]}
    rk.check(want and shown == want, f"zone map shows holders {shown}, system.zones says {want}")
    for cell in cells:
        if cell["topic"]:
            rk.check(cell["state"] != "empty" and cell["title"].startswith(f"Zone {cell['zone']} ")
                     and f"{cell['topic']} / partition {cell['partition']}" in cell["title"]
                     and "write pointer" in cell["title"] and "of 16 MiB" in cell["title"], f"zone cell {cell}")
        elif cell["state"] == "empty":
            rk.check(cell["partition"] == "" and "free" in cell["title"], f"empty zone cell {cell}")
    rk.check("Zone " in pages["zones"]["detail"], f"zone detail on hover: {pages['zones']['detail']!r}")
    # Filtered to the topic: exactly the zones where it has data are highlighted (shared zones
    # too, whoever holds the most there), and they are zones system.zones gives it (zones holding
    # it only grow while the test runs: no retention).
    filtered = pages["zones"]["filtered"]
    matched = {c["zone"] for c in filtered if c["match"]}
    holding = {c["zone"] for c in filtered if topic in c["topics"]}
    rk.check(matched and matched == holding, f"zone map filtered to {topic}: highlighted {sorted(matched)}, holding it {sorted(holding)}")
    held = sql_tests.query_json(rk, broker, f"SELECT zone FROM system.zones WHERE array_has(topics, '{topic}')")["rows"]
    rk.check(matched <= {row["zone"] for row in held}, f"highlighted {sorted(matched)}, system.zones gives {topic} {held}")
    rk.check(pages["zones"]["selected_text"].startswith(f"{len(matched)} zones hold {topic}"),
             f"the zone map's summary when filtered: {pages['zones']['selected_text']!r}")

    # Consumer groups: the group with its lag (half of each partition left).
    lag = sum(n - committed[p] for p, n in per_partition.items())
    group_rows = [row for row in pages["groups"]["groups"] if row[0] == group]
    rk.check(len(group_rows) == 1 and number(group_rows[0][-1]) == lag, f"groups table for {group}: {group_rows}, lag {lag}")
    rk.check(all(row[0] == group for row in pages["groups"]["offsets"]), f"offsets filtered to {group}: {pages['groups']['offsets']}")
    offsets = {int(row[2]): number(row[3]) for row in pages["groups"]["offsets"]}
    rk.check(offsets == committed, f"committed offsets shown {offsets}, committed {committed}")

    # Views: the one created, with its kind, topic and partitions; without system.views, a
    # clear "not available".
    views_text = pages["views"]["text"]
    if not views_served:
        rk.check("not available" in views_text, f"views page without system.views: {views_text!r}")
    else:
        rows = pages["views"]["views"]
        # The first cell is the name with the definition under it.
        rk.check(any(row[0].startswith(view + "CREATE MATERIALIZED VIEW") and row[1:3] == ["aggregate", topic] for row in rows),
                 f"views page lacks view {view}: {rows}")
        shown = sorted(int(row[1]) for row in pages["views"]["partitions"] if row[0] == view)
        rk.check(shown == [0, 1, 2], f"views page partitions of {view}: {pages['views']['partitions']}")
        rk.check(number(cards["views"]) == 1, f"overview views card {cards['views']!r}")

    # SQL box: the table of a grouped query.
    table = seen["sql_table"]
    rk.check(table["columns"] == ["partition", "n"], f"SQL result columns {table['columns']}")
    got = {int(row[0]): int(row[1]) for row in table["rows"]}
    rk.check(got == per_partition, f"SQL result table {got}, produced {per_partition}")
    rk.check(not table["chart_shown"], "a chart was drawn for an answer without a time column")

    # Time-bucketed query: one point (and one bar) per second bucket, with its count.
    chart = seen["sql_chart"]
    line = {int(x): int(y) for x, y in chart["line_points"]}
    bars = {int(x): int(y) for x, y in chart["bars"]}
    rk.check(line == per_second, f"line chart points {sorted(line.items())}, produced {sorted(per_second.items())}")
    rk.check(bars == per_second, f"bar chart {sorted(bars.items())}, produced {sorted(per_second.items())}")
    rk.check(chart["line_path_segments"] == len(per_second), f"line path has {chart['line_path_segments']} vertices")
    rk.check(chart["table_rows"] == len(per_second), f"the chart's table has {chart['table_rows']} rows")

    # The same buckets split by partition: one series per partition, which add up to them.
    series = {name: {int(x): int(y) for x, y in points} for name, points in seen["sql_series"].items()}
    rk.check(sorted(series) == ["p0", "p1", "p2"], f"series drawn: {sorted(series)}")
    rk.check(all(name in seen["sql_series_legend"] for name in series), f"legend: {seen['sql_series_legend']}")
    summed = {}
    for points in series.values():
        for x, y in points.items():
            summed[x] = summed.get(x, 0) + y
    rk.check(summed == per_second, f"per-partition series add up to {sorted(summed.items())}, produced {sorted(per_second.items())}")

    rk.check("SELEC" in seen["sql_error"] and "400" in seen["sql_error"], f"SQL error shown: {seen['sql_error']!r}")
    rk.check(seen["live"]["before"] != seen["live"]["after"], f"no live refresh: {seen['live']}")

    # Screenshots: real PNGs of a real page.
    rk.check(len(seen["screenshots"]) >= 8, f"screenshots: {seen['screenshots']}")
    for path in seen["screenshots"]:
        with open(path, "rb") as f:
            data = f.read()
        rk.check(data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, f"screenshot {path}: {len(data)} bytes")


def tests(rk):
    """The `dashboard` module's tests for run_kafka_tests.build_modules()."""
    return [("dashboard/browser", lambda b: test_browser(rk, b))]
