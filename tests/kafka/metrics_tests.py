"""Prometheus metrics at GET /metrics after known traffic (issue 7), for run_kafka_tests.py.

Module `metrics` (one broker):
  metrics/counters     N single-record produce requests of known sizes (confluent-kafka, one
                       request each, no compression): the Produce request, record and byte
                       counters move by exactly what was sent; reading them back moves the fetch
                       record and byte counters by exactly the same; two raw Fetch requests (an
                       offset out of range, an unknown topic) count exactly one
                       OFFSET_OUT_OF_RANGE and one UNKNOWN_TOPIC_OR_PARTITION at the partition
                       level; a raw ApiVersions counts exactly one request.
  metrics/histograms   latency histograms: per API, buckets never decrease, +Inf equals
                       _count, and _count equals the API's request counter; fsync latency
                       observed.
  metrics/gauges       zones per state add up to the device's zone count, written/capacity is
                       the fill ratio, consumer lag of a committed offset is exactly what it
                       should be.

The runner's helpers come in as `rk`, the runner module.
"""

import math
import re
import socket
import struct
import time
import urllib.request
import uuid

ZONE_COUNT = 64  # the runner's `--zone-count`
ZONE_BYTES = 16 << 20  # the runner's `--zone-size-mib`

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(rk, broker):
    """{(name, frozenset(labels)): value} from GET /metrics, checking the format on the way."""
    with urllib.request.urlopen(f"http://{broker.http_addr}/metrics", timeout=30) as response:
        rk.check(response.status == 200, f"GET /metrics: HTTP {response.status}")
        content_type = response.headers.get("Content-Type", "")
        text = response.read().decode()
    rk.check("text" in content_type, f"GET /metrics content type {content_type!r}")
    lines = text.splitlines()
    rk.check(lines and lines[-1] == "# EOF", "the exposition ends with # EOF")
    samples = {}
    for line in lines:
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        rk.check(match is not None, f"unparsable metrics line {line!r}")
        name, labels, value = match.groups()
        key = (name, frozenset(LABEL.findall(labels or "")))
        rk.check(key not in samples, f"duplicate series {line!r}")
        samples[key] = float(value.replace("+Inf", "inf"))
    return samples


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def series(samples, name):
    """[(labels dict, value)] of every series called `name`."""
    return [(dict(labels), v) for (n, labels), v in samples.items() if n == name]


def varint_bytes(n):
    """Length of Kafka's zigzag varint of n."""
    z = (n << 1) ^ (n >> 63)
    size = 1
    while z >= 0x80:
        z >>= 7
        size += 1
    return size


def batch_bytes(key, val):
    """Bytes of an uncompressed v2 record batch holding one record (no headers): the 61-byte
    batch header, then the record (length, attributes, timestamp and offset deltas of 0, key,
    value, header count)."""
    body = 1 + 1 + 1 + varint_bytes(len(key)) + len(key) + varint_bytes(len(val)) + len(val) + 1
    return 61 + varint_bytes(body) + body


def raw_request(broker, api_key, api_version, body):
    """Sends one request (header v1) on a new connection; the response body after the
    correlation id."""
    client_id = b"metrics-test"
    header = struct.pack(">hhih", api_key, api_version, 7, len(client_id)) + client_id
    payload = header + body
    host, port = broker.addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(struct.pack(">i", len(payload)) + payload)
        data = b""
        while len(data) < 4 or len(data) < 4 + struct.unpack(">i", data[:4])[0]:
            chunk = conn.recv(65536)
            if not chunk:
                raise ConnectionError("the broker closed the connection before answering")
            data += chunk
    correlation_id = struct.unpack(">i", data[4:8])[0]
    assert correlation_id == 7, correlation_id
    return data[8:]


def fetch_v4_error(broker, topic, partition, offset):
    """A raw Fetch v4 for one partition at `offset`: the partition's error code."""
    name = topic.encode()
    body = struct.pack(">iiiib", -1, 100, 1, 1 << 20, 0)
    body += struct.pack(">ih", 1, len(name)) + name + struct.pack(">iiqi", 1, partition, offset, 1 << 20)
    response = raw_request(broker, 1, 4, body)
    # throttle_time_ms, [topic: name, [partition, error_code, ...]]
    topics = struct.unpack(">i", response[4:8])[0]
    assert topics == 1, topics
    name_len = struct.unpack(">h", response[8:10])[0]
    at = 10 + name_len
    partitions, index, error_code = struct.unpack(">iih", response[at:at + 10])
    assert partitions == 1 and index == partition, (partitions, index)
    return error_code


def produce_known(rk, broker, topic, sizes):
    """One single-record Produce request per size (acks=all, no compression, each flushed
    before the next is produced); the bytes of the batches sent."""
    from confluent_kafka import Producer
    producer = Producer({"bootstrap.servers": broker.addr, "acks": "all", "linger.ms": 0,
                         "compression.type": "none", "enable.idempotence": False})
    sent = 0
    for i, size in enumerate(sizes):
        key, val = b"k%d" % i, bytes([65 + i % 26]) * size
        failures = []
        producer.produce(topic, key=key, value=val, partition=0,
                         on_delivery=lambda error, _m: failures.append(error) if error else None)
        rk.check(producer.flush(30) == 0 and not failures, f"produce {i}: {failures}")
        sent += batch_bytes(key, val)
    return sent


def consume_all(rk, broker, topic, count, group=None):
    from confluent_kafka import Consumer, TopicPartition
    config = {"bootstrap.servers": broker.addr, "group.id": group or f"metrics-{uuid.uuid4().hex[:8]}",
              "enable.auto.commit": False, "auto.offset.reset": "earliest"}
    consumer = Consumer(config)
    consumer.assign([TopicPartition(topic, 0, 0)])
    got = []
    deadline = time.monotonic() + 60
    while len(got) < count and time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is not None and message.error() is None:
            got.append(message)
    rk.check(len(got) == count, f"consumed {len(got)} of {count}")
    return consumer, got


def test_counters(rk, broker):
    topic = f"metrics-{uuid.uuid4().hex[:8]}"
    from confluent_kafka.admin import NewTopic
    admin = rk.admin_client(broker)
    for future in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
        future.result(30)
    sizes = [0, 1, 100, 1000, 5000, 20000, 300, 7]
    before = scrape(rk, broker)
    sent = produce_known(rk, broker, topic, sizes)
    after = scrape(rk, broker)
    produce_requests = value(after, "yotta_kafka_requests_total", api="Produce") - value(before, "yotta_kafka_requests_total", api="Produce")
    rk.check(produce_requests == len(sizes), f"Produce requests moved by {produce_requests}, sent {len(sizes)}")
    records = value(after, "yotta_produce_records_total") - value(before, "yotta_produce_records_total")
    rk.check(records == len(sizes), f"produce records moved by {records}, sent {len(sizes)}")
    produced = value(after, "yotta_produce_bytes_total") - value(before, "yotta_produce_bytes_total")
    rk.check(produced == sent, f"produce bytes moved by {produced}, sent {sent}")

    consumer, _ = consume_all(rk, broker, topic, len(sizes))
    consumer.close()
    fetched = scrape(rk, broker)
    fetch_records = value(fetched, "yotta_fetch_records_total") - value(after, "yotta_fetch_records_total")
    rk.check(fetch_records == len(sizes), f"fetch records moved by {fetch_records}, read {len(sizes)}")
    fetch_bytes = value(fetched, "yotta_fetch_bytes_total") - value(after, "yotta_fetch_bytes_total")
    rk.check(fetch_bytes == sent, f"fetch bytes moved by {fetch_bytes}, read {sent}")

    # Errors, on raw requests so that nothing else moves the counts.
    out_of_range = ("yotta_kafka_errors_total", frozenset({("api", "Fetch"), ("level", "partition"),
                                                          ("error", "OFFSET_OUT_OF_RANGE"), ("code", "1")}))
    unknown = ("yotta_kafka_errors_total", frozenset({("api", "Fetch"), ("level", "partition"),
                                                     ("error", "UNKNOWN_TOPIC_OR_PARTITION"), ("code", "3")}))
    api_versions = ("yotta_kafka_requests_total", frozenset({("api", "ApiVersions")}))
    fetches = ("yotta_kafka_requests_total", frozenset({("api", "Fetch")}))
    before = scrape(rk, broker)
    code = fetch_v4_error(broker, topic, 0, 1_000_000)
    rk.check(code == 1, f"Fetch at offset 1000000: error {code}, expected OFFSET_OUT_OF_RANGE (1)")
    code = fetch_v4_error(broker, f"no-such-{uuid.uuid4().hex[:8]}", 0, 0)
    rk.check(code == 3, f"Fetch of an unknown topic: error {code}, expected UNKNOWN_TOPIC_OR_PARTITION (3)")
    rk.broker_api_keys(broker)
    after = scrape(rk, broker)
    for key, expected in [(out_of_range, 1), (unknown, 1), (api_versions, 1), (fetches, 2)]:
        moved = after.get(key, 0.0) - before.get(key, 0.0)
        rk.check(moved == expected, f"{key[0]}{dict(key[1])} moved by {moved}, expected {expected}")
    connections = value(after, "yotta_kafka_connections_accepted_total") - value(before, "yotta_kafka_connections_accepted_total")
    rk.check(connections == 3, f"connections accepted moved by {connections}, expected 3 (one per raw request)")


def test_histograms(rk, broker):
    samples = scrape(rk, broker)
    requests = {labels["api"]: v for labels, v in series(samples, "yotta_kafka_requests_total")}
    rk.check({"Produce", "Fetch", "Metadata", "ApiVersions"} <= set(requests), f"APIs listed: {sorted(requests)}")
    rk.check(requests["Produce"] >= 8 and requests["Fetch"] >= 3, f"request counts {requests}")
    for name, per_api in [("yotta_kafka_request_latency_seconds", True), ("yotta_storage_fsync_latency_seconds", False)]:
        groups = {}
        for labels, v in series(samples, f"{name}_bucket"):
            le = float(labels.pop("le").replace("+Inf", "inf"))
            groups.setdefault(tuple(sorted(labels.items())), []).append((le, v))
        rk.check(groups, f"{name} has no buckets")
        for labels, buckets in groups.items():
            buckets.sort()
            counts = [v for _, v in buckets]
            rk.check(counts == sorted(counts), f"{name}{labels} buckets decrease: {buckets}")
            rk.check(math.isinf(buckets[-1][0]), f"{name}{labels} lacks +Inf")
            count = value(samples, f"{name}_count", **dict(labels))
            rk.check(buckets[-1][1] == count, f"{name}{labels} +Inf {buckets[-1][1]} != count {count}")
            total = value(samples, f"{name}_sum", **dict(labels))
            rk.check(total >= 0 and (count > 0 or total == 0), f"{name}{labels} sum {total} count {count}")
            if per_api:
                api = dict(labels)["api"]
                rk.check(count == requests[api], f"latency count of {api} {count} != requests {requests[api]}")
        if not per_api:
            rk.check(value(samples, f"{name}_count") > 0, f"{name}: no fsync observed after acks=all produces")


def test_gauges(rk, broker):
    topic = f"metrics-lag-{uuid.uuid4().hex[:8]}"
    group = f"metrics-group-{uuid.uuid4().hex[:8]}"
    produce_known(rk, broker, topic, [10] * 5)
    from confluent_kafka import TopicPartition
    consumer, _ = consume_all(rk, broker, topic, 5, group=group)
    consumer.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
    samples = scrape(rk, broker)
    consumer.close()
    lag = value(samples, "yotta_consumer_lag", group=group, topic=topic, partition="0")
    rk.check(lag == 3, f"consumer lag {lag}, expected 3 (5 records, committed offset 2)")
    zones = {labels["state"]: v for labels, v in series(samples, "yotta_zones")}
    rk.check(set(zones) == {"empty", "open", "closed", "full"}, f"zone states {zones}")
    rk.check(sum(zones.values()) == ZONE_COUNT, f"zones per state {zones} do not add up to {ZONE_COUNT}")
    rk.check(zones["open"] + zones["closed"] + zones["full"] >= 2, f"zones in use {zones}")
    written = value(samples, "yotta_zone_written_bytes")
    capacity = value(samples, "yotta_zone_capacity_bytes")
    rk.check(capacity == ZONE_COUNT * ZONE_BYTES, f"zone capacity {capacity}")
    rk.check(0 < written <= capacity, f"zone bytes written {written}")
    fill = value(samples, "yotta_zone_fill_ratio")
    rk.check(abs(fill - written / capacity) < 1e-9, f"fill ratio {fill} != {written}/{capacity}")
    rk.check(value(samples, "yotta_storage_queue_depth") >= 0, "storage queue depth is negative")
    rk.check(value(samples, "yotta_consumer_lag_series_dropped") == 0, "lag series dropped")


def tests(rk):
    """The `metrics` module's tests for run_kafka_tests.build_modules()."""
    return [
        ("metrics/counters", lambda b: test_counters(rk, b)),
        ("metrics/histograms", lambda b: test_histograms(rk, b)),
        ("metrics/gauges", lambda b: test_gauges(rk, b)),
    ]
