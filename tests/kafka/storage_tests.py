"""Storage v2 (issue 13): partitions share zones, for run_kafka_tests.py.

Module `storage` (one broker, restarted on a fresh data directory by each test):
  storage/10k-partitions-default-device  a 10,000-partition topic on the default device (128
                       zones of 64 MiB, 14 open): librdkafka (confluent-kafka) and kafka-python
                       each write one record to every partition with acks=all, and both read
                       every record back (assign from offset 0).
  storage/1k-partitions-14-active-zones  the same with 1,000 partitions on a device of 64 zones
                       with the open and active zone limits of a real ZNS drive (14 each).
  storage/full-device  a 24 MiB device filled by a producer without retries: once full, a
                       produce gets KAFKA_STORAGE_ERROR within a second; a consumer group still
                       commits offsets; system.partitions says storage_full and the dashboard
                       (headless Chromium) shows it (banner on every page, the zones card, the
                       partitions' status); deleting the filling topic frees zones and produce to
                       another topic resumes by itself; every acknowledged record of the kept
                       topic reads back, and /metrics counted the refused appends.

The runner's helpers come in as `rk`, the runner module.
"""

import os
import shutil
import tempfile
import time
import urllib.request

import dashboard_tests
import sql_tests

# A whole module should stay well under 3 minutes on a loaded 2-core machine.
PRODUCE_TIMEOUT_S = 120
CONSUME_TIMEOUT_S = 120


def fresh_broker(rk, broker, args):
    """Restarts `broker` on a new data directory with `args` (device geometry flags)."""
    broker.stop()
    if broker.own_dir:
        shutil.rmtree(broker.data_dir, ignore_errors=True)
    broker.data_dir = tempfile.mkdtemp(prefix=f"yottastore-{broker.name}-")
    broker.own_dir = True
    broker.extra_args = list(args)
    broker.start()


def produce_confluent(rk, broker, topic, partitions, tag):
    from confluent_kafka import Producer
    producer = Producer({"bootstrap.servers": broker.addr, "acks": "all", "linger.ms": 20,
                         "batch.num.messages": 10000, "queue.buffering.max.messages": 200000,
                         "message.timeout.ms": PRODUCE_TIMEOUT_S * 1000, "log_level": 2})
    errors = []
    delivered = [0]

    def on_delivery(err, msg):
        if err is not None:
            errors.append(f"partition {msg.partition()}: {err}")
        else:
            delivered[0] += 1

    for partition in range(partitions):
        producer.produce(topic, value=b"%s-%d" % (tag, partition), partition=partition, on_delivery=on_delivery)
        producer.poll(0)
    left = producer.flush(PRODUCE_TIMEOUT_S)
    rk.check(left == 0 and not errors, f"librdkafka: {left} undelivered, errors {errors[:5]}")
    rk.check(delivered[0] == partitions, f"librdkafka delivered {delivered[0]} of {partitions}")


def produce_kafka_python(rk, broker, topic, partitions, tag):
    from kafka import KafkaProducer
    producer = KafkaProducer(bootstrap_servers=broker.addr, acks="all", linger_ms=20,
                             request_timeout_ms=PRODUCE_TIMEOUT_S * 1000, max_block_ms=60000,
                             # kafka-python refuses a delivery timeout below linger + request timeout.
                             delivery_timeout_ms=PRODUCE_TIMEOUT_S * 1000 + 5000)
    try:
        futures = [producer.send(topic, value=b"%s-%d" % (tag, partition), partition=partition)
                   for partition in range(partitions)]
        producer.flush(PRODUCE_TIMEOUT_S)
        for partition, future in enumerate(futures):
            metadata = future.get(timeout=PRODUCE_TIMEOUT_S)
            rk.check(metadata.partition == partition, f"kafka-python: sent to {partition}, got {metadata.partition}")
    finally:
        producer.close(10)


def expected_values(partitions, tags):
    return {(partition, b"%s-%d" % (tag, partition)) for partition in range(partitions) for tag in tags}


def consume_confluent(rk, broker, topic, partitions, want):
    from confluent_kafka import Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": broker.addr, "group.id": f"reader-{topic}",
                         "enable.auto.commit": False, "log_level": 2})
    got = set()
    try:
        consumer.assign([TopicPartition(topic, partition, 0) for partition in range(partitions)])
        deadline = time.monotonic() + CONSUME_TIMEOUT_S
        while len(got) < len(want) and time.monotonic() < deadline:
            for msg in consumer.consume(10000, timeout=1.0):
                if msg.error() is None:
                    got.add((msg.partition(), msg.value()))
    finally:
        consumer.close()
    missing = want - got
    rk.check(not missing, f"librdkafka read {len(got)} of {len(want)}; missing e.g. {sorted(missing)[:5]}")


def consume_kafka_python(rk, broker, topic, partitions, want):
    from kafka import KafkaConsumer, TopicPartition
    consumer = KafkaConsumer(bootstrap_servers=broker.addr, enable_auto_commit=False,
                             max_partition_fetch_bytes=64 << 10, fetch_max_bytes=8 << 20)
    got = set()
    try:
        consumer.assign([TopicPartition(topic, partition) for partition in range(partitions)])
        consumer.seek_to_beginning()
        deadline = time.monotonic() + CONSUME_TIMEOUT_S
        while len(got) < len(want) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000, max_records=20000).values():
                for record in records:
                    got.add((record.partition, record.value))
    finally:
        consumer.close()
    missing = want - got
    rk.check(not missing, f"kafka-python read {len(got)} of {len(want)}; missing e.g. {sorted(missing)[:5]}")


def every_partition_round_trip(rk, broker, partitions, args):
    fresh_broker(rk, broker, args)
    topic = rk.topic_name("many")
    rk.create_topic(broker, topic, partitions)
    produce_confluent(rk, broker, topic, partitions, b"c")
    produce_kafka_python(rk, broker, topic, partitions, b"k")
    want = expected_values(partitions, [b"c", b"k"])
    consume_confluent(rk, broker, topic, partitions, want)
    consume_kafka_python(rk, broker, topic, partitions, want)


def metric(broker, name):
    with urllib.request.urlopen(f"http://{broker.http_addr}/metrics", timeout=30) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "_total "):
                return float(line.split()[-1])
    return None


def test_full_device(rk, broker):
    from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
    fresh_broker(rk, broker, ["--zone-size-mib", "1", "--zone-count", "24"])
    keep, fill = rk.topic_name("keep"), rk.topic_name("fill")
    admin = rk.create_topic(broker, keep, 1)
    rk.create_topic(broker, fill, 3)
    acked_keep = []

    def produce_keep(producer, count, tag):
        for i in range(count):
            value = b"%s-%d" % (tag, i)
            producer.produce(keep, value=value, partition=0,
                             on_delivery=lambda err, msg, value=value: err is None and acked_keep.append(value))
        producer.flush(30)

    keeper = Producer({"bootstrap.servers": broker.addr, "acks": "all", "log_level": 2})
    produce_keep(keeper, 100, b"before")
    rk.check(len(acked_keep) == 100, f"{len(acked_keep)} of 100 records acknowledged before the device filled")
    # Fill: no retries, so the broker's own answer reaches the callback.
    filler = Producer({"bootstrap.servers": broker.addr, "acks": "all", "retries": 0, "linger.ms": 0,
                       "message.timeout.ms": 30000, "log_level": 2})
    outcome = {}

    def on_fill(err, msg):
        outcome["error"] = err

    value = bytes(60 << 10)
    full_latency_s = None
    for i in range(2000):
        outcome.clear()
        started = time.monotonic()
        filler.produce(fill, value=value, partition=i % 3, on_delivery=on_fill)
        filler.flush(30)
        error = outcome.get("error")
        if error is not None:
            rk.check(error.code() == KafkaError.KAFKA_STORAGE_ERROR, f"a full device answers {error}, not KAFKA_STORAGE_ERROR")
            full_latency_s = time.monotonic() - started
            break
    rk.check(full_latency_s is not None, "the 24 MiB device never filled")
    rk.check(full_latency_s < 1.0, f"KAFKA_STORAGE_ERROR after {full_latency_s:.2f} s, not within a second")
    refused = metric(broker, "yotta_appends_refused_storage_full")
    rk.check(refused is not None and refused >= 1, f"/metrics yotta_appends_refused_storage_full = {refused}")
    # The operator sees it: system.partitions' storage_full, and the dashboard in a browser.
    rows = sql_tests.query_json(rk, broker, f"SELECT DISTINCT storage_full FROM system.partitions WHERE topic = '{fill}'")["rows"]
    rk.check(rows == [{"storage_full": True}], f"system.partitions storage_full on a full device: {rows}")
    seen = dashboard_tests.run_browser(rk, broker, fill, "none", os.path.join(rk.REPO, "tests", "artifacts", "storage-full"),
                                       extra=("--mode", "storage-full"))
    rk.check(not seen["failures"] and not seen["console_errors"], f"dashboard on a full device: {seen['failures']} {seen['console_errors']}")
    shown = seen.get("storage_full", {})
    rk.check(shown.get("banner", "").startswith("Storage full") and shown.get("topics_page_banner", "").startswith("Storage full"),
             f"the dashboard's banner on a full device: {shown}")
    rk.check(shown.get("zones_card") == "storage full: produce refused", f"the overview's zones card on a full device: {shown}")
    rk.check(shown.get("partition_statuses") == ["storage full"] * 3, f"partition statuses on a full device: {shown}")
    # Still full: a consumer group commits offsets (internal logs have reserved zones).
    group = rk.topic_name("group")
    consumer = Consumer({"bootstrap.servers": broker.addr, "group.id": group, "enable.auto.commit": False, "log_level": 2})
    try:
        for offset in (10, 20, 30):
            consumer.commit(offsets=[TopicPartition(keep, 0, offset)], asynchronous=False)
        committed = consumer.committed([TopicPartition(keep, 0)], timeout=30)[0].offset
        rk.check(committed == 30, f"committed offset {committed} on a full device")
    finally:
        consumer.close()
    # Deleting the filling topic frees its zones; produce resumes without a restart.
    admin.delete_topics([fill], operation_timeout=30)[fill].result(timeout=60)
    resumed_after = None
    started = time.monotonic()
    while time.monotonic() - started < 30:
        before = len(acked_keep)
        produce_keep(filler, 1, b"probe-%d" % int((time.monotonic() - started) * 1000))
        if len(acked_keep) > before:
            resumed_after = time.monotonic() - started
            break
        time.sleep(0.2)
    rk.check(resumed_after is not None, "produce did not resume within 30 s of deleting the topic")
    produce_keep(keeper, 100, b"after")
    consume_keep = set()
    reader = Consumer({"bootstrap.servers": broker.addr, "group.id": f"reader-{keep}", "enable.auto.commit": False, "log_level": 2})
    try:
        reader.assign([TopicPartition(keep, 0, 0)])
        deadline = time.monotonic() + 60
        while not set(acked_keep) <= consume_keep and time.monotonic() < deadline:
            for msg in reader.consume(1000, timeout=1.0):
                if msg.error() is None:
                    consume_keep.add(msg.value())
    finally:
        reader.close()
    lost = set(acked_keep) - consume_keep
    rk.check(not lost, f"{len(lost)} acknowledged records lost, e.g. {sorted(lost)[:3]}")


def tests(rk):
    """The `storage` module's tests for run_kafka_tests.build_modules()."""
    return [
        ("storage/10k-partitions-default-device",
         lambda b: every_partition_round_trip(rk, b, 10_000, ["--zone-size-mib", "64", "--zone-count", "128"])),
        ("storage/1k-partitions-14-active-zones",
         lambda b: every_partition_round_trip(rk, b, 1_000, ["--zone-size-mib", "16", "--zone-count", "64",
                                                              "--max-open-zones", "14", "--max-active-zones", "14"])),
        ("storage/full-device", lambda b: test_full_device(rk, b)),
    ]
