"""Transactions against `yottastore serve` (issue 15), for run_kafka_tests.py.

Module `txn` (one broker):
  txn/confluent-commit-abort  a confluent-kafka transactional producer commits one transaction
                              and aborts one (its records flushed to the broker first); a
                              read_committed consumer sees exactly the committed records, a
                              read_uncommitted one sees both, neither sees a marker; a view over
                              the topic and SQL over it show only the committed ones; an open
                              transaction holds read_committed consumers back until committed.
  txn/zombie-fencing          a second producer with the same transactional.id fences the first:
                              the first's commit fails as fenced, its open transaction is aborted,
                              and the second's transactions commit.
  txn/send-offsets            consume-transform-produce: a transactional producer commits its
                              output with the input consumer group's offsets
                              (send_offsets_to_transaction); an aborted transaction commits
                              neither, so the group's committed offsets are exactly those of the
                              committed transactions, and the output holds one record per input.
  txn/timeout                 a transaction left open past transaction.timeout.ms is aborted by
                              the broker: read_committed consumers move past it and see none of
                              it, and the producer is fenced.

The runner's helpers come in as `rk`, the runner module.
"""

import json
import time

POLL_S = 8


def producer(rk, broker, transactional_id, **extra):
    conf = {"bootstrap.servers": broker.addr, "transactional.id": transactional_id, "log_level": 3}
    conf.update(extra)
    p = rk.ck().Producer(conf)
    p.init_transactions(30)
    return p


def consume(rk, broker, topic, partitions, isolation, expect=None, timeout_s=POLL_S):
    """Every value readable from offset 0 of each partition (until `expect` values or the
    timeout), sorted."""
    C = rk.ck()
    consumer = C.Consumer({"bootstrap.servers": broker.addr, "group.id": f"txn-{time.time()}",
                           "isolation.level": isolation, "enable.auto.commit": False, "log_level": 3})
    consumer.assign([C.TopicPartition(topic, p, 0) for p in range(partitions)])
    got = []
    deadline = time.time() + timeout_s
    while time.time() < deadline and (expect is None or len(got) < expect):
        m = consumer.poll(0.3)
        if m is None:
            continue
        rk.check(m.error() is None, f"consumer error: {m.error()}")
        got.append(json.loads(m.value())["v"])
    consumer.close()
    return sorted(got)


def produce(p, topic, prefix, count, partitions=2):
    for i in range(count):
        p.produce(topic, value=json.dumps({"v": f"{prefix}{i:03d}"}).encode(), partition=i % partitions)
    p.flush(30)


def sql(rk, broker, text):
    import sql_tests
    return sql_tests.query_json(rk, broker, text)


def test_commit_abort(rk, broker):
    topic = rk.topic_name("txn-ca")
    rk.create_topic(broker, topic, partitions=2)
    p = producer(rk, broker, f"{topic}-app")
    p.begin_transaction()
    produce(p, topic, "c", 10)
    p.commit_transaction(30)
    p.begin_transaction()
    produce(p, topic, "a", 6)
    p.abort_transaction(30)
    committed = [f"c{i:03d}" for i in range(10)]
    aborted = [f"a{i:03d}" for i in range(6)]
    got = consume(rk, broker, topic, 2, "read_committed")
    rk.check(got == committed, f"read_committed: {got}")
    got = consume(rk, broker, topic, 2, "read_uncommitted", expect=16)
    rk.check(got == sorted(committed + aborted), f"read_uncommitted: {got}")
    # An open transaction is invisible to read_committed consumers until committed.
    p.begin_transaction()
    produce(p, topic, "o", 4)
    got = consume(rk, broker, topic, 2, "read_committed", timeout_s=3)
    rk.check(got == committed, f"read_committed with a transaction open: {got}")
    p.commit_transaction(30)
    opened = [f"o{i:03d}" for i in range(4)]
    got = consume(rk, broker, topic, 2, "read_committed", expect=14)
    rk.check(got == sorted(committed + opened), f"read_committed after the commit: {got}")
    # SQL over the topic and a view read committed data only.
    view = topic.replace("-", "_") + "_v"
    sql(rk, broker, f'CREATE MATERIALIZED VIEW {view} AS SELECT v FROM "{topic}"')
    expected = sorted(committed + opened)
    deadline = time.time() + 30
    rows = None
    while time.time() < deadline:
        rows = sorted(row["v"] for row in sql(rk, broker, f"SELECT v FROM {view}")["rows"])
        if rows == expected:
            break
        time.sleep(0.3)
    rk.check(rows == expected, f"view rows: {rows}")
    rows = sorted(json.loads(row["value"])["v"] for row in sql(rk, broker, f'SELECT value FROM "{topic}"')["rows"])
    rk.check(rows == expected, f"SQL over the topic: {rows}")


def test_zombie_fencing(rk, broker):
    C = rk.ck()
    topic = rk.topic_name("txn-fence")
    rk.create_topic(broker, topic, partitions=2)
    first = producer(rk, broker, f"{topic}-app")
    first.begin_transaction()
    produce(first, topic, "z", 4)
    second = producer(rk, broker, f"{topic}-app")
    try:
        first.commit_transaction(30)
        rk.check(False, "the fenced producer committed")
    except C.KafkaException as error:
        err = error.args[0]
        rk.check(err.fatal() or err.code() in (C.KafkaError._FENCED, C.KafkaError.PRODUCER_FENCED, C.KafkaError.INVALID_PRODUCER_EPOCH),
                 f"fenced producer's commit failed with {err}")
    second.begin_transaction()
    produce(second, topic, "s", 4)
    second.commit_transaction(30)
    got = consume(rk, broker, topic, 2, "read_committed", expect=4)
    rk.check(got == [f"s{i:03d}" for i in range(4)], f"read_committed: {got}")


def test_timeout(rk, broker):
    C = rk.ck()
    topic = rk.topic_name("txn-timeout")
    rk.create_topic(broker, topic, partitions=2)
    p = producer(rk, broker, f"{topic}-app", **{"transaction.timeout.ms": 2000})
    p.begin_transaction()
    produce(p, topic, "t", 4)
    time.sleep(4)
    try:
        p.commit_transaction(30)
        rk.check(False, "a transaction aborted by its timeout committed")
    except C.KafkaException as error:
        err = error.args[0]
        rk.check(err.code() != 0, f"commit after the timeout: {err}")
    later = producer(rk, broker, f"{topic}-other")
    later.begin_transaction()
    produce(later, topic, "l", 2)
    later.commit_transaction(30)
    got = consume(rk, broker, topic, 2, "read_committed", expect=2)
    rk.check(got == ["l000", "l001"], f"read_committed after the timeout: {got}")


def test_send_offsets(rk, broker):
    C = rk.ck()
    source, sink = rk.topic_name("txn-in"), rk.topic_name("txn-out")
    rk.create_topic(broker, source, partitions=1)
    rk.create_topic(broker, sink, partitions=2)
    feeder = rk.ck().Producer({"bootstrap.servers": broker.addr, "log_level": 3})
    for i in range(20):
        feeder.produce(source, value=json.dumps({"v": f"in{i:03d}"}).encode(), partition=0)
    feeder.flush(30)
    group = f"{source}-pipeline"
    consumer = C.Consumer({"bootstrap.servers": broker.addr, "group.id": group, "isolation.level": "read_committed",
                           "enable.auto.commit": False, "auto.offset.reset": "earliest", "log_level": 3})
    consumer.assign([C.TopicPartition(source, 0, 0)])
    p = producer(rk, broker, f"{source}-app")

    def transform(count, commit):
        """Reads `count` input records, writes their outputs and the group's offsets in one
        transaction, then commits or aborts it (an aborted one rewinds to the last commit)."""
        p.begin_transaction()
        taken = []
        deadline = time.time() + POLL_S
        while len(taken) < count and time.time() < deadline:
            m = consumer.poll(0.3)
            if m is not None and m.error() is None:
                taken.append(m)
        rk.check(len(taken) == count, f"read {len(taken)} of {count} input records")
        for m in taken:
            p.produce(sink, value=json.dumps({"v": json.loads(m.value())["v"].replace("in", "out")}).encode())
        p.flush(30)
        position = [C.TopicPartition(source, 0, taken[-1].offset() + 1)]
        p.send_offsets_to_transaction(position, consumer.consumer_group_metadata(), 30)
        if commit:
            p.commit_transaction(30)
        else:
            p.abort_transaction(30)
            committed = consumer.committed([C.TopicPartition(source, 0)], 30)[0].offset
            consumer.seek(C.TopicPartition(source, 0, max(committed, 0)))

    transform(8, True)
    transform(5, False)
    transform(12, True)
    committed = consumer.committed([C.TopicPartition(source, 0)], 30)[0].offset
    rk.check(committed == 20, f"the group's committed offset: {committed}")
    consumer.close()
    got = consume(rk, broker, sink, 2, "read_committed", expect=20)
    rk.check(got == [f"out{i:03d}" for i in range(20)], f"output: {got}")


def tests(rk):
    """The `txn` module's tests for run_kafka_tests.build_modules()."""
    return [
        ("txn/confluent-commit-abort", lambda b: test_commit_abort(rk, b)),
        ("txn/zombie-fencing", lambda b: test_zombie_fencing(rk, b)),
        ("txn/send-offsets", lambda b: test_send_offsets(rk, b)),
        ("txn/timeout", lambda b: test_timeout(rk, b)),
    ]
