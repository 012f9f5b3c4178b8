"""Materialized views over a running `yottastore serve` (issue 5), for run_kafka_tests.py.

Module `views` (one broker, killed and restarted by the tests):
  views/vehicles       a generator of heterogeneous vehicle records (8 shapes: nested objects,
                       int and float speeds, dates as ISO 8601 with and without zone, RFC 2822,
                       dd/mm/yyyy, mm-dd-yyyy HH:MM, epoch seconds and milliseconds; some
                       malformed records and some tombstones) is produced with confluent-kafka
                       (Kafka key = vehicle id). Views, defined over HTTP before and during the
                       stream: latest state per vehicle (upsert), counts and speed aggregates per
                       region and status (aggregate), a maintenance log (append, WHERE), with
                       indexes on region and status. The broker is SIGKILLed mid-stream and
                       restarted; once `system.views` shows no lag, every view must equal a
                       reference computed here in Python over the records consumed back from
                       the topic, dead letters must be counted per view, and an equality query
                       on an indexed column must be answered through the index (EXPLAIN).
                       After a clean stop, each view's Parquet snapshot, read by the `datafusion`
                       Python package, equals the reference too; after the restart the views
                       (definitions and state) are the same, and the same queries answer the
                       same rows through HTTP, `yottastore sql`, psql, psycopg and the
                       `datafusion` package over the snapshots; view statements work over the
                       Postgres protocol (extended and simple).
  views/errors         invalid definitions are refused with a clear message, and the server
                       keeps serving.

The reference follows the contract the materializer implements: the upsert view is the latest
record per key in log order (a null value deletes the key; a record that cannot be decoded
changes nothing and is a dead letter in every view); aggregates and the append view take every
decodable record that passes WHERE; dates in every accepted form are UTC instants.
"""

import datetime
import email.utils
import json
import math
import os
import random
import threading
import time

import sql_tests

VEHICLES = 150
REGIONS = ["north", "south", "east", "west", "central"]
STATUSES = ["moving", "idle", "parked", "charging"]
SERVICES = ["brakes", "tyres", "oil", "battery", "software"]
PARTITIONS = 3
VIEW_CATCH_UP_TIMEOUT_S = 90

LATEST_VIEW = "vehicle_latest"
COUNTS_VIEW = "region_status_counts"
MAINTENANCE_VIEW = "maintenance_log"


# ----------------------------------------------------------------------------------------------
# The generator


def vehicle_partition(vehicle_id):
    # The producer picks partitions itself so that a vehicle's records stay in one partition
    # and in order, whatever the client's partitioner.
    return int(vehicle_id[4:]) % PARTITIONS


def iso_z(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S") + "Z"


def make_record(rng, i, t):
    """(key, value bytes or None) of record `i`, reported at datetime `t` (UTC)."""
    vehicle = f"veh-{rng.randrange(VEHICLES):04d}"
    key = vehicle.encode()
    roll = rng.random()
    if roll < 0.01:
        return key, None  # tombstone: the vehicle leaves the fleet
    if roll < 0.025:
        return key, rng.choice([b"{not json", b"[1, 2, 3]", b"\xff\xfe\x00garbage", b'"just text"',
                                b'{"vehicle_id": "' + key + b'", "region": '])
    region = rng.choice(REGIONS)
    status = rng.choice(STATUSES)
    speed_int = rng.randrange(0, 130)
    shape = i % 8
    base = {"vehicle_id": vehicle, "region": region, "status": status}
    if shape == 0:
        value = {**base, "speed": speed_int, "reported_at": iso_z(t)}
    elif shape == 1:
        local = t.astimezone(datetime.timezone(datetime.timedelta(hours=2)))
        value = {**base, "speed": speed_int + 0.25, "fuel": round(rng.random(), 3),
                 "reported_at": local.strftime("%Y-%m-%dT%H:%M:%S.250+02:00")}
    elif shape == 2:
        value = {**base, "speed": speed_int, "engine": {"temp": 70 + rng.randrange(40), "rpm": 800 + rng.randrange(3000)},
                 "reported_at": email.utils.format_datetime(t)}
    elif shape == 3:
        value = {**base, "battery": {"level": rng.randrange(101)}, "reported_at": t.strftime("%d/%m/%Y %H:%M")}
    elif shape == 4:
        value = {**base, "speed": speed_int, "driver": rng.choice(["ann", "bo", "cy"]),
                 "reported_at": t.strftime("%m-%d-%Y %H:%M")}
    elif shape == 5:
        value = {**base, "speed": speed_int, "reported_at": int(t.timestamp())}
    elif shape == 6:
        value = {**base, "speed": float(speed_int), "reported_at": int(t.timestamp() * 1000) + 123}
    else:
        value = {**base, "status": "maintenance", "type": "maintenance", "service": rng.choice(SERVICES),
                 "cost": round(rng.uniform(20, 900), 2), "reported_at": t.strftime("%Y-%m-%d %H:%M:%S")}
    # A time in a field not named like one (dates and epoch numbers mixed): a Timestamp column.
    value["last_fix"] = value["reported_at"]
    return key, json.dumps(value).encode()


class Generator:
    """Records in a deterministic sequence; each call of `batch` continues it."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.i = 0
        self.t0 = datetime.datetime(2026, 11, 29, 6, 0, 0, tzinfo=datetime.timezone.utc)

    def batch(self, n):
        out = []
        for _ in range(n):
            t = self.t0 + datetime.timedelta(seconds=7 * self.i)
            out.append(make_record(self.rng, self.i, t))
            self.i += 1
        return out


def producer(rk, broker):
    from confluent_kafka import Producer
    return Producer({"bootstrap.servers": broker.addr, "acks": "all", "linger.ms": 5,
                     "enable.idempotence": True, "message.timeout.ms": 120_000,
                     "reconnect.backoff.max.ms": 500, "log_level": 2})


def produce(rk, p, topic, records, errors):
    def delivered(error, message):
        if error is not None:
            errors.append(str(error))

    for key, value in records:
        while True:
            try:
                p.produce(topic, key=key, value=value, partition=vehicle_partition(key.decode()),
                          on_delivery=delivered)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)


# ----------------------------------------------------------------------------------------------
# The reference


def parse_reported_at(value):
    """The UTC instant, in microseconds, that the contract makes of each form generated."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        unit = 1_000_000 if abs(value) < 100_000_000_000 else 1_000
        return int(value * unit)
    text = value
    for form in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%d %H:%M:%S",
                 "%d/%m/%Y %H:%M", "%m-%d-%Y %H:%M"):
        try:
            t = datetime.datetime.strptime(text.replace("Z", "+00:00") if "T" in text else text, form)
        except ValueError:
            continue
        if t.tzinfo is None:
            t = t.replace(tzinfo=datetime.timezone.utc)
        return round(t.timestamp() * 1_000_000)
    t = email.utils.parsedate_to_datetime(text)
    return round(t.timestamp() * 1_000_000)


def decode(value):
    """The record's object, or None when the materializer must dead-letter it."""
    try:
        parsed = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return parsed if isinstance(parsed, dict) else None


def reference(records):
    """The three views from scratch over `records` (dicts p, o, k, v in log order per partition)."""
    latest = {}
    groups = {}
    maintenance = []
    dead = 0
    for r in sorted(records, key=lambda r: (r["p"], r["o"])):
        if r["v"] is None:
            latest.pop(r["k"].decode(), None)
            continue
        obj = decode(r["v"])
        if obj is None:
            dead += 1
            continue
        speed = obj.get("speed")
        reported = parse_reported_at(obj.get("reported_at"))
        latest[obj["vehicle_id"]] = {"vehicle_id": obj["vehicle_id"], "region": obj["region"],
                                     "status": obj["status"], "speed": speed, "reported_at": reported,
                                     "last_fix": parse_reported_at(obj.get("last_fix"))}
        g = groups.setdefault((obj["region"], obj["status"]), {"n": 0, "speeds": []})
        g["n"] += 1
        if speed is not None:
            g["speeds"].append(float(speed))
        if obj.get("type") == "maintenance":
            maintenance.append({"vehicle_id": obj["vehicle_id"], "service": obj["service"], "cost": obj["cost"],
                                "reported_at": reported, "_partition": r["p"], "_offset": r["o"]})
    counts = []
    for (region, status), g in groups.items():
        s = g["speeds"]
        counts.append({"region": region, "status": status, "n": g["n"],
                       "total_speed": sum(s) if s else None, "min_speed": min(s) if s else None,
                       "max_speed": max(s) if s else None, "avg_speed": sum(s) / len(s) if s else None})
    return list(latest.values()), counts, maintenance, dead


# ----------------------------------------------------------------------------------------------
# Comparing answers


def as_micros(cell):
    """A timestamp cell of a JSON answer (RFC 3339 text, or a number of µs) in microseconds."""
    if cell is None or isinstance(cell, (int, float)):
        return cell
    text = cell.strip().replace(" ", "T")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    t = datetime.datetime.fromisoformat(text)
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return round(t.timestamp() * 1_000_000)


def same_number(a, b):
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)


def compare(rk, what, got_rows, want_rows, key, numeric=(), timestamps=()):
    got = {tuple(row[k] for k in key): row for row in got_rows}
    want = {tuple(row[k] for k in key): row for row in want_rows}
    rk.check(len(got) == len(got_rows), f"{what}: duplicate keys {key} in the view's rows")
    missing = sorted(set(want) - set(got))[:5]
    extra = sorted(set(got) - set(want))[:5]
    rk.check(not missing and not extra,
             f"{what}: {len(got)} rows, reference {len(want)}; missing e.g. {missing}, extra e.g. {extra}")
    problems = []
    for k, w in want.items():
        g = got[k]
        for column, expected in w.items():
            actual = g.get(column)
            if column in timestamps:
                ok = as_micros(actual) == expected
            elif column in numeric:
                ok = same_number(actual, expected)
            else:
                ok = actual == expected
            if not ok:
                problems.append(f"{k} {column}: view {actual!r}, reference {expected!r}")
        if len(problems) >= 8:
            break
    rk.check(not problems, f"{what}: " + "; ".join(problems))


def consume_all(rk, broker, topic):
    """Every record of the topic, read back with confluent-kafka from offset 0."""
    from confluent_kafka import Consumer, TopicPartition
    probe = Consumer({"bootstrap.servers": broker.addr, "group.id": "views-test-probe", "log_level": 2})
    try:
        counts = {p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in range(PARTITIONS)}
    finally:
        probe.close()
    return [{"p": r["p"], "o": r["o"], "k": r["k"], "v": r["v"]}
            for r in rk.confluent_consume(broker, topic, counts)], counts


def wait_caught_up(rk, broker, counts, timeout=VIEW_CATCH_UP_TIMEOUT_S):
    """Until every view has applied every record of `counts` (end offsets per partition)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        status, body, _ = sql_tests.post_sql(
            broker, "SELECT name, partition, last_applied_offset, high_watermark, lag FROM system.views")
        if status == 200:
            rows = json.loads(body)["rows"]
            last = rows
            views = {row["name"] for row in rows}
            done = views >= {LATEST_VIEW, COUNTS_VIEW, MAINTENANCE_VIEW} and all(
                row["lag"] == 0 and row["last_applied_offset"] == counts[row["partition"]] - 1 for row in rows)
            if done:
                return rows
        else:
            last = body[:300]
        time.sleep(0.2)
    raise rk.TestFailure(f"views did not catch up with end offsets {counts} in {timeout} s: {last}")


def check_view_metrics(rk, broker, dead):
    """/metrics shows the same progress as system.views: no lag, the dead letters counted."""
    import urllib.request
    with urllib.request.urlopen(f"http://{broker.http_addr}/metrics", timeout=30) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("yotta_view_"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    for view in (LATEST_VIEW, COUNTS_VIEW, MAINTENANCE_VIEW):
        name = f'yotta_view_dead_letters_total{{view="{view}"}}'
        rk.check(samples.get(name) == dead, f"/metrics {name} = {samples.get(name)}, expected {dead}")
        for p in range(PARTITIONS):
            name = f'yotta_view_lag_records{{view="{view}",partition="{p}"}}'
            rk.check(samples.get(name) == 0, f"/metrics {name} = {samples.get(name)}, expected 0")


def check_views(rk, broker, topic, phase):
    records, counts = consume_all(rk, broker, topic)
    wait_caught_up(rk, broker, counts)
    latest, groups, maintenance, dead = reference(records)
    q = lambda sql: sql_tests.query_json(rk, broker, sql)["rows"]
    compare(rk, f"{phase}: {LATEST_VIEW}", q(f"SELECT * FROM {LATEST_VIEW}"), latest, ["vehicle_id"],
            numeric=("speed",), timestamps=("reported_at", "last_fix"))
    compare(rk, f"{phase}: {COUNTS_VIEW}", q(f"SELECT * FROM {COUNTS_VIEW}"), groups, ["region", "status"],
            numeric=("n", "total_speed", "min_speed", "max_speed", "avg_speed"))
    compare(rk, f"{phase}: {MAINTENANCE_VIEW}", q(f"SELECT * FROM {MAINTENANCE_VIEW}"), maintenance,
            ["_partition", "_offset"], numeric=("cost",), timestamps=("reported_at",))
    # Dead letters are counted per view (the count repeats on each partition's row), never
    # dropped silently, and survive restarts like the rest of the view's state.
    for row in q("SELECT name, max(dead_letters) AS dead FROM system.views GROUP BY name"):
        rk.check(row["dead"] == dead, f"{phase}: view {row['name']} counts {row['dead']} dead letters, the topic has {dead}")
    check_view_metrics(rk, broker, dead)
    reasons = q("SELECT view, count(*) AS n FROM system.dead_letters GROUP BY view")
    rk.check(reasons and all(r["n"] >= 1 for r in reasons), f"{phase}: system.dead_letters {reasons}")
    # Index pushdown: answers equal the reference, and EXPLAIN shows the index walked.
    for column, value in (("region", "north"), ("status", "idle")):
        sql = f"SELECT vehicle_id, region, status FROM {LATEST_VIEW} WHERE {column} = '{value}'"
        got = sorted(r["vehicle_id"] for r in q(sql))
        want = sorted(r["vehicle_id"] for r in latest if r[column] == value)
        rk.check(got == want, f"{phase}: {sql}: {len(got)} rows, reference {len(want)}")
        plan = json.dumps(q(f"EXPLAIN {sql}"))
        rk.check("index" in plan.lower(), f"{phase}: EXPLAIN of {sql} shows no index scan: {plan[:800]}")
    return len(records)


def snapshot_path(broker, view):
    return os.path.join(broker.data_dir, "views", view, "snapshot.parquet")


def read_parquet(path):
    """Rows of a Parquet file as dicts, read by the `datafusion` Python package (a stock reader,
    not ours); timestamps become microseconds since the epoch."""
    import datafusion
    rows = datafusion.SessionContext().read_parquet(path).to_pylist()
    for row in rows:
        for column, cell in row.items():
            if isinstance(cell, datetime.datetime):
                if cell.tzinfo is None:
                    cell = cell.replace(tzinfo=datetime.timezone.utc)
                row[column] = round(cell.timestamp() * 1_000_000)
    return rows


def check_parquet_snapshots(rk, broker, records):
    latest, groups, maintenance, _ = reference(records)
    for view, want, key, numeric, timestamps in (
            (LATEST_VIEW, latest, ["vehicle_id"], ("speed",), ("reported_at", "last_fix")),
            (COUNTS_VIEW, groups, ["region", "status"], ("n", "total_speed", "min_speed", "max_speed", "avg_speed"), ()),
            (MAINTENANCE_VIEW, maintenance, ["_partition", "_offset"], ("cost",), ("reported_at",))):
        path = snapshot_path(broker, view)
        rk.check(os.path.exists(path), f"no Parquet snapshot at {path}")
        compare(rk, f"Parquet snapshot of {view} (datafusion Python package)", read_parquet(path), want, key,
                numeric=numeric, timestamps=timestamps)


# Queries over the views whose answers every front end renders alike (integers and text).
SAME_ROWS_QUERIES = [
    (f"SELECT region, count(*) AS n FROM {LATEST_VIEW} GROUP BY region ORDER BY region", ()),
    (f"SELECT vehicle_id, region, status FROM {LATEST_VIEW} WHERE region = $1 ORDER BY vehicle_id", ("north",)),
    (f"SELECT region, status, n FROM {COUNTS_VIEW} ORDER BY region, status", ()),
    (f"SELECT service, count(*) AS n, min(_offset) AS first FROM {MAINTENANCE_VIEW} GROUP BY service ORDER BY service", ()),
]


def via_parquet_snapshots(rk, broker, sql, params):
    """The query run by the `datafusion` Python package over the views' Parquet snapshots."""
    import datafusion
    import pg_tests
    context = datafusion.SessionContext()
    for view in (LATEST_VIEW, COUNTS_VIEW, MAINTENANCE_VIEW):
        context.register_parquet(view, snapshot_path(broker, view))
    frame = context.sql(pg_tests.inline(sql, params))
    names = [field.name for field in frame.schema()]
    return names, [tuple(pg_tests.text(row[name]) for name in names) for row in frame.to_pylist()]


def check_same_rows_everywhere(rk, broker):
    """The same queries answer the same rows through HTTP, `yottastore sql`, psql, psycopg and
    the `datafusion` Python package over the Parquet snapshots (once a checkpoint has caught up
    with what the views show)."""
    import pg_tests
    deadline = time.monotonic() + VIEW_CATCH_UP_TIMEOUT_S
    while True:
        rows = sql_tests.query_json(rk, broker, "SELECT name, partition, last_applied_offset, checkpoint_offset FROM system.views")["rows"]
        if all(row["checkpoint_offset"] == row["last_applied_offset"] for row in rows):
            break
        rk.check(time.monotonic() < deadline, f"no checkpoint caught up with the views: {rows}")
        time.sleep(0.2)
    front_ends = pg_tests.FRONT_ENDS + [("datafusion over Parquet", via_parquet_snapshots)]
    for sql, params in SAME_ROWS_QUERIES:
        answers = {name: run(rk, broker, sql, params) for name, run in front_ends}
        reference_name, reference = front_ends[0][0], answers[front_ends[0][0]]
        rk.check(reference[1], f"{sql}: no rows through {reference_name}")
        for name, answer in answers.items():
            rk.check(answer == reference, f"{sql}: {name} answered {answer}, {reference_name} answered {reference}")


def check_ddl_over_postgres(rk, broker, topic):
    """View statements work from Postgres clients too: psycopg's extended protocol (Parse, Bind,
    Execute) and psql's simple protocol."""
    import pg_tests
    with pg_tests.psycopg_connect(broker, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute(f"CREATE MATERIALIZED VIEW idle_vehicles AS SELECT vehicle_id FROM \"{topic}\" WHERE status = 'idle'")
            rk.check([d.name for d in cur.description] == ["result"], f"CREATE over psycopg: {cur.description}")
            cur.execute("SHOW MATERIALIZED VIEWS")
            names = [row[0] for row in cur.fetchall()]
            rk.check("idle_vehicles" in names, f"SHOW MATERIALIZED VIEWS over psycopg: {names}")
    out, _ = pg_tests.psql(rk, broker, "-c", "DROP MATERIALIZED VIEW idle_vehicles")
    rk.check("idle_vehicles" in out, f"DROP over psql: {out}")
    out, _ = pg_tests.psql(rk, broker, "--csv", "-c", "SHOW MATERIALIZED VIEWS")
    rk.check("idle_vehicles" not in out and LATEST_VIEW in out, f"SHOW over psql after DROP: {out}")


def test_vehicles(rk, broker):
    topic = rk.topic_name("vehicles")
    rk.create_topic(broker, topic, partitions=PARTITIONS)
    ddl = lambda sql: sql_tests.query_json(rk, broker, sql)
    ddl(f"CREATE MATERIALIZED VIEW {LATEST_VIEW} WITH (key = 'vehicle_id') AS "
        f"SELECT vehicle_id, region, status, speed, reported_at, last_fix FROM \"{topic}\"")
    ddl(f"CREATE MATERIALIZED VIEW {COUNTS_VIEW} AS SELECT region, status, count(*) AS n, "
        f"sum(speed) AS total_speed, min(speed) AS min_speed, max(speed) AS max_speed, avg(speed) AS avg_speed "
        f"FROM \"{topic}\" GROUP BY region, status")
    ddl(f"CREATE INDEX latest_by_region ON {LATEST_VIEW} (region)")
    ddl(f"CREATE INDEX latest_by_status ON {LATEST_VIEW} (status)")
    shown = json.dumps(ddl("SHOW MATERIALIZED VIEWS")["rows"])
    rk.check(LATEST_VIEW in shown and COUNTS_VIEW in shown, f"SHOW MATERIALIZED VIEWS: {shown}")

    generator = Generator(seed=20261129)
    errors = []
    p = producer(rk, broker)
    produce(rk, p, topic, generator.batch(3000), errors)
    rk.check(p.flush(120) == 0 and not errors, f"first phase: delivery errors {errors[:5]}")
    # A view defined over a topic that already has data starts from its first offset.
    ddl(f"CREATE MATERIALIZED VIEW {MAINTENANCE_VIEW} AS SELECT vehicle_id, service, cost, reported_at, "
        f"_partition, _offset FROM \"{topic}\" WHERE type = 'maintenance'")
    check_views(rk, broker, topic, "before the kill")

    # Mid-stream SIGKILL: a producer thread keeps producing while the broker is killed and
    # restarted; the idempotent producer resends what was not acknowledged.
    stop = threading.Event()

    def stream():
        while not stop.is_set():
            produce(rk, p, topic, generator.batch(200), errors)
            time.sleep(0.05)

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    try:
        time.sleep(2.5 + random.random() * 3)
        broker.kill()
        time.sleep(0.5)
        broker.start()
        time.sleep(2)
    finally:
        stop.set()
        thread.join(60)
    rk.check(p.flush(120) == 0, "records left unflushed after the restart")
    rk.check(not errors, f"delivery errors across the SIGKILL: {errors[:5]}")
    n = check_views(rk, broker, topic, "after SIGKILL and restart")
    rk.check(n > 3000, f"only {n} records in the topic")

    # A clean restart: definitions and state come back from the data directory. Stopped, the
    # views' Parquet snapshots (written by the checkpoint at shutdown) hold what they showed.
    records, _ = consume_all(rk, broker, topic)
    code, _, killed = broker.stop()
    rk.check(code == 0 and not killed, f"SIGTERM: exit status {code}, killed {killed}")
    check_parquet_snapshots(rk, broker, records)
    broker.start()
    check_views(rk, broker, topic, "after a clean restart")
    check_same_rows_everywhere(rk, broker)
    check_ddl_over_postgres(rk, broker, topic)


def test_errors(rk, broker):
    topic = rk.topic_name("views-errors")
    rk.create_topic(broker, topic, partitions=1)
    cases = [
        ("CREATE MATERIALIZED VIEW v_bad AS SELECT region FROM no_such_topic", "no_such_topic"),
        (f"CREATE MATERIALIZED VIEW v_bad WITH (key = 'nope') AS SELECT region FROM \"{topic}\"", "nope"),
        (f"CREATE MATERIALIZED VIEW v_bad AS SELECT region, count(*) FROM \"{topic}\"", ""),
        ("CREATE INDEX i_bad ON no_such_view (region)", "no_such_view"),
        ("DROP MATERIALIZED VIEW no_such_view", "no_such_view"),
    ]
    for sql, word in cases:
        status, body, _ = sql_tests.post_sql(broker, sql)
        message = json.loads(body).get("error", "") if body else ""
        rk.check(status == 400 and message and word in message, f"{sql}: HTTP {status} {message!r}")
    sql_tests.query_json(rk, broker, f"CREATE MATERIALIZED VIEW v_ok AS SELECT region FROM \"{topic}\"")
    status, body, _ = sql_tests.post_sql(broker, f"CREATE MATERIALIZED VIEW v_ok AS SELECT region FROM \"{topic}\"")
    rk.check(status == 400 and "v_ok" in json.loads(body).get("error", ""), f"duplicate view: HTTP {status} {body[:200]!r}")
    sql_tests.query_json(rk, broker, "DROP MATERIALIZED VIEW v_ok")
    status, body, _ = sql_tests.post_sql(broker, "SELECT * FROM v_ok")
    rk.check(status == 400, f"a dropped view is still queryable: HTTP {status}")
    sql_tests.query_json(rk, broker, "SELECT count(*) AS n FROM system.topics")


def tests(rk):
    """The `views` module's tests for run_kafka_tests.build_modules()."""
    return [
        ("views/vehicles", lambda b: test_vehicles(rk, b)),
        ("views/errors", lambda b: test_errors(rk, b)),
    ]
