"""SQL over a running `yottastore serve` (issue 6), for run_kafka_tests.py.

Module `sql` (one broker):
  sql/http-and-cli     records produced with confluent-kafka are queried through HTTP
                       (POST /sql, JSON answers) and through `yottastore sql -c` (Arrow IPC
                       answers, printed as tables): the same counts per partition, the same
                       JSON fields, the system tables agree with what was produced, and
                       system.consumer_groups shows a group's committed offsets and lag.
  sql/errors           bad SQL gets HTTP 400 with a message that names the position, DDL is
                       refused, the CLI exits 1 with the message, and the server keeps serving.

The runner's helpers come in as `rk`, the runner module.
"""

import json
import subprocess
import urllib.error
import urllib.request


def post_sql(broker, sql, accept="application/json", timeout=60):
    """(HTTP status, body bytes, headers) of POST /sql."""
    request = urllib.request.Request(
        f"http://{broker.http_addr}/sql", data=sql.encode(), method="POST",
        headers={"Accept": accept, "Content-Type": "text/plain"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


def query_json(rk, broker, sql):
    status, body, _ = post_sql(broker, sql)
    rk.check(status == 200, f"POST /sql {sql!r}: HTTP {status}: {body[:300]!r}")
    answer = json.loads(body)
    rk.check(answer["row_count"] == len(answer["rows"]), f"row_count disagrees with rows: {answer}")
    return answer


def cli(rk, broker, sql, expect_status=0):
    result = subprocess.run([rk.OPTS.broker_bin, "sql", "--http-addr", broker.http_addr, "-c", sql],
                            capture_output=True, timeout=120)
    out, err = result.stdout.decode(), result.stderr.decode()
    rk.check(result.returncode == expect_status,
             f"yottastore sql -c {sql!r} exited {result.returncode}, expected {expect_status}:\n{out}\n{err}")
    return out, err


def produce_vehicles(rk, broker, topic, count):
    """`count` JSON records over 3 partitions (keyed), and the per-partition counts."""
    from confluent_kafka import Producer
    producer = Producer({"bootstrap.servers": broker.addr, "acks": "all", "linger.ms": 5})
    per_partition = {}
    regions = ["north", "south", "east", "west"]

    def delivered(error, message):
        rk.check(error is None, f"delivery failed: {error}")
        per_partition[message.partition()] = per_partition.get(message.partition(), 0) + 1

    for i in range(count):
        value = json.dumps({"id": f"v{i}", "region": regions[i % 4], "speed": i % 120})
        producer.produce(topic, key=f"v{i % 17}".encode(), value=value.encode(), partition=i % 3,
                         on_delivery=delivered)
        if i % 500 == 0:
            producer.poll(0)
    rk.check(producer.flush(60) == 0, "messages left unflushed")
    return per_partition


def test_http_and_cli(rk, broker):
    topic = rk.topic_name("sql-vehicles")
    rk.create_topic(broker, topic, partitions=3)
    per_partition = produce_vehicles(rk, broker, topic, 1200)

    # HTTP, JSON rows.
    answer = query_json(rk, broker, f'SELECT partition, count(*) AS n FROM "{topic}" GROUP BY partition ORDER BY partition')
    got = {row["partition"]: row["n"] for row in answer["rows"]}
    rk.check(got == per_partition, f"counts per partition over HTTP {got}, produced {per_partition}")
    rk.check([c["name"] for c in answer["columns"]] == ["partition", "n"], f"columns {answer['columns']}")
    regions = query_json(rk, broker,
                         f"SELECT json_get_str(value, 'region') AS region, count(*) AS n FROM \"{topic}\" "
                         "GROUP BY region ORDER BY region")
    rk.check({r["region"]: r["n"] for r in regions["rows"]} == {"east": 300, "north": 300, "south": 300, "west": 300},
             f"regions {regions['rows']}")
    hw = query_json(rk, broker, f"SELECT partition, high_watermark FROM system.partitions WHERE topic = '{topic}' ORDER BY partition")
    rk.check({r["partition"]: r["high_watermark"] for r in hw["rows"]} == per_partition, f"system.partitions {hw['rows']}")

    # Committed offsets and lag per partition, from system.consumer_groups.
    from confluent_kafka import Consumer, TopicPartition
    group = f"{topic}-readers"
    consumer = Consumer({"bootstrap.servers": broker.addr, "group.id": group, "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(topic, p, 100 + p) for p in range(3)], asynchronous=False)
    finally:
        consumer.close()
    lag = query_json(rk, broker, f"SELECT partition, committed_offset, high_watermark, lag, protocol FROM system.consumer_groups "
                                 f"WHERE group_id = '{group}' ORDER BY partition")
    expected = [{"partition": p, "committed_offset": 100 + p, "high_watermark": per_partition[p],
                 "lag": per_partition[p] - 100 - p, "protocol": "classic"} for p in range(3)]
    rk.check(lag["rows"] == expected, f"system.consumer_groups {lag['rows']}, expected {expected}")

    # The row limit is the server's: a large answer over JSON stays complete under it.
    rows = query_json(rk, broker, f'SELECT "offset", key FROM "{topic}" WHERE partition = 0')
    rk.check(len(rows["rows"]) == per_partition[0] and not rows["truncated"], "partition 0 rows")

    # The CLI, through Arrow IPC: the same counts, as a table.
    out, _ = cli(rk, broker, f'SELECT partition, count(*) AS n FROM "{topic}" GROUP BY partition ORDER BY partition')
    for partition, n in per_partition.items():
        rk.check(f"| {partition}         | {n} " in out, f"CLI table lacks partition {partition} = {n}:\n{out}")
    rk.check("3 row(s) fetched" in out, f"CLI footer:\n{out}")
    # Several statements in one -c, split at ';' outside quotes.
    out, _ = cli(rk, broker, f"SELECT 'a;b' AS s; SELECT count(*) AS total FROM \"{topic}\"")
    rk.check("a;b" in out and f"| {sum(per_partition.values())} " in out, f"two statements:\n{out}")


def test_errors(rk, broker):
    status, body, _ = post_sql(broker, "SELEC 1")
    message = json.loads(body).get("error", "")
    rk.check(status == 400 and "SELEC" in message, f"syntax error: HTTP {status} {message!r}")
    status, body, _ = post_sql(broker, "SELECT * FROM no_such_topic")
    rk.check(status == 400 and "no_such_topic" in json.loads(body)["error"], f"unknown table: {status} {body[:200]!r}")
    status, body, _ = post_sql(broker, "CREATE TABLE x AS SELECT 1")
    rk.check(status == 400 and "ddl" in json.loads(body)["error"].lower(), f"DDL: {status} {body[:200]!r}")
    status, body, _ = post_sql(broker, "SELECT 1", accept="application/vnd.apache.arrow.stream")
    rk.check(status == 200 and body[:4] == b"\xff\xff\xff\xff", f"Arrow IPC stream: {status} {body[:16]!r}")
    _, err = cli(rk, broker, "SELECT nope FROM system.topics", expect_status=1)
    rk.check("nope" in err, f"CLI error message: {err!r}")
    # Still serving.
    answer = query_json(rk, broker, "SELECT count(*) AS n FROM system.zones")
    rk.check(answer["rows"][0]["n"] == 64, f"system.zones rows: {answer['rows']}")


def tests(rk):
    """The `sql` module's tests for run_kafka_tests.build_modules()."""
    return [
        ("sql/http-and-cli", lambda b: test_http_and_cli(rk, b)),
        ("sql/errors", lambda b: test_errors(rk, b)),
    ]
