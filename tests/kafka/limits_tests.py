"""The broker's partition and topic limits with real clients (issue 13), for run_kafka_tests.py.

Module `limits` (one broker, restarted once with `--partitions-max 12 --topics-max 4`):
  limits/confluent_admin     confluent-kafka AdminClient: create_topics and create_partitions
                             beyond the partition limit, and a topic beyond the topic limit, fail
                             with POLICY_VIOLATION (validate_only too) and change nothing; what
                             fits is created; deleting a topic makes room again.
  limits/kafka_python_admin  kafka-python's KafkaAdminClient: PolicyViolationError for the same.
  limits/auto_create         a confluent-kafka producer to a topic that auto-creation cannot
                             create (no partition left) gets a delivery error, not a hang; with
                             room again, the same producer's topic is created and takes writes.

Every test deletes what it created, so each starts with no user topic. The runner's helpers
come in as `rk`, the runner module.
"""

import time

PARTITIONS_MAX = 12
TOPICS_MAX = 4
BROKER_ARGS = ["--partitions-max", str(PARTITIONS_MAX), "--topics-max", str(TOPICS_MAX),
               "--default-partitions", "2"]
POLICY_VIOLATION = 44


def limited_broker(broker):
    """Restarts `broker` with BROKER_ARGS once (same data directory and ports)."""
    if getattr(broker, "extra_args", None) != BROKER_ARGS:
        broker.stop()
        broker.extra_args = BROKER_ARGS
        broker.start()
    return broker


def kafka_error_code(rk, error):
    """The Kafka error code of a confluent-kafka future's exception."""
    rk.check(error.args and hasattr(error.args[0], "code"), f"not a KafkaException: {error!r}")
    return error.args[0].code()


def expect_policy_violation(rk, future, what):
    try:
        future.result(timeout=60)
    except Exception as error:  # noqa: BLE001
        code = kafka_error_code(rk, error)
        rk.check(code == POLICY_VIOLATION, f"{what}: error {error}, expected POLICY_VIOLATION")
        return str(error)
    raise rk.TestFailure(f"{what} succeeded beyond the broker's limits")


def delete_all(rk, admin):
    topics = [name for name in rk.topic_names(admin) if not name.startswith("__")]
    if topics:
        for future in admin.delete_topics(topics, request_timeout=30).values():
            future.result(timeout=60)
    deadline = time.monotonic() + 30
    while [name for name in rk.topic_names(admin) if not name.startswith("__")]:
        rk.check(time.monotonic() < deadline, "topics still listed 30 s after delete_topics")
        time.sleep(0.2)


def test_confluent_admin(rk, broker):
    from confluent_kafka.admin import NewPartitions, NewTopic
    limited_broker(broker)
    admin = rk.admin_client(broker)
    delete_all(rk, admin)
    big = rk.topic_name("limits-big")
    rk.create_topic(broker, big, 10)
    # 10 of 12 partitions: 3 more do not fit, as a new topic or as new partitions.
    over = rk.topic_name("limits-over")
    for validate_only in (True, False):
        future = admin.create_topics([NewTopic(over, 3, 1)], validate_only=validate_only,
                                     request_timeout=30)[over]
        message = expect_policy_violation(rk, future, f"create_topics(3 partitions, validate_only={validate_only})")
        rk.check("partitions-max" in message, f"the error does not name the setting: {message}")
    future = admin.create_partitions([NewPartitions(big, 13)], request_timeout=30)[big]
    expect_policy_violation(rk, future, "create_partitions(10 -> 13)")
    rk.check(over not in rk.topic_names(admin), f"{over} was created")
    rk.wait_for_topic(admin, big, 10)
    # What fits is created: 10 -> 11, then three 1-partition topics... of which the fourth
    # topic is beyond --topics-max.
    admin.create_partitions([NewPartitions(big, 11)], request_timeout=30)[big].result(timeout=60)
    rk.wait_for_topic(admin, big, 11)
    small = [rk.topic_name(f"limits-small{i}") for i in range(3)]
    rk.create_topic(broker, small[0], 1)
    future = admin.create_topics([NewTopic(small[1], 1, 1)], request_timeout=30)[small[1]]
    expect_policy_violation(rk, future, "create_topics(1 partition) with 12 of 12 partitions")
    admin.delete_topics([big], request_timeout=30)[big].result(timeout=60)
    for name in small[1:]:
        rk.create_topic(broker, name, 1)
    # 4 topics now (the internal logs are not counted): a fifth is refused.
    fifth = rk.topic_name("limits-fifth")
    rk.create_topic(broker, rk.topic_name("limits-fourth"), 1)
    future = admin.create_topics([NewTopic(fifth, 1, 1)], request_timeout=30)[fifth]
    message = expect_policy_violation(rk, future, "a fifth topic")
    rk.check("topics-max" in message, f"the error does not name the setting: {message}")
    delete_all(rk, admin)


def test_kafka_python_admin(rk, broker):
    from kafka.admin import KafkaAdminClient, NewPartitions, NewTopic
    from kafka.errors import PolicyViolationError
    limited_broker(broker)
    delete_all(rk, rk.admin_client(broker))
    admin = KafkaAdminClient(bootstrap_servers=[broker.addr], request_timeout_ms=30000,
                             api_version_auto_timeout_ms=10000)
    try:
        topic = rk.topic_name("limits-kp")
        admin.create_topics([NewTopic(topic, 8, 1)])
        for what, call in [
            ("create_topics", lambda: admin.create_topics([NewTopic(rk.topic_name("limits-kp-over"), 5, 1)])),
            ("create_topics(validate_only)",
             lambda: admin.create_topics([NewTopic(rk.topic_name("limits-kp-over"), 5, 1)], validate_only=True)),
            ("create_partitions", lambda: admin.create_partitions({topic: NewPartitions(13)})),
        ]:
            try:
                result = call()
            except PolicyViolationError:
                continue
            # Versions that return the response instead of raising carry the code in it.
            codes = [entry[1] for entry in getattr(result, "topic_errors", getattr(result, "topic_results", []))]
            rk.check(POLICY_VIOLATION in codes, f"kafka-python {what}: {result}, expected POLICY_VIOLATION")
        admin.create_partitions({topic: NewPartitions(12)})
        rk.wait_for_topic(rk.admin_client(broker), topic, 12)
    finally:
        admin.close()
    delete_all(rk, rk.admin_client(broker))


def produce_one(rk, broker, topic, timeout):
    """One record through a confluent-kafka producer (auto-creation on): the delivery error or None."""
    C = rk.ck()
    producer = C.Producer({"bootstrap.servers": broker.addr, "message.timeout.ms": timeout * 1000,
                           "log_level": 2})
    outcome = []
    producer.produce(topic, value=b"v", on_delivery=lambda error, message: outcome.append(error))
    deadline = time.monotonic() + timeout + 10
    while not outcome and time.monotonic() < deadline:
        producer.poll(0.2)
    rk.check(outcome, f"no delivery report within {timeout + 10} s")
    return outcome[0]


def test_auto_create(rk, broker):
    limited_broker(broker)
    admin = rk.admin_client(broker)
    delete_all(rk, admin)
    full = rk.topic_name("limits-full")
    rk.create_topic(broker, full, PARTITIONS_MAX)
    topic = rk.topic_name("limits-auto")
    started = time.monotonic()
    error = produce_one(rk, broker, topic, timeout=20)
    rk.check(error is not None, "a record to a topic that cannot be created was delivered")
    rk.check(topic not in rk.topic_names(admin), f"{topic} was auto-created beyond the limit")
    took = time.monotonic() - started
    admin.delete_topics([full], request_timeout=30)[full].result(timeout=60)
    deadline = time.monotonic() + 30
    while full in rk.topic_names(admin):
        rk.check(time.monotonic() < deadline, f"{full} still listed 30 s after delete_topics")
        time.sleep(0.2)
    error = produce_one(rk, broker, topic, timeout=30)
    rk.check(error is None, f"with room again, the auto-created topic refused the record: {error}")
    rk.wait_for_topic(admin, topic, 2)
    print(f"    (refused in {took:.1f} s)")
    delete_all(rk, admin)


def tests(rk):
    """The `limits` module's tests for run_kafka_tests.build_modules()."""
    return [
        ("limits/confluent_admin", lambda b: test_confluent_admin(rk, b)),
        ("limits/kafka_python_admin", lambda b: test_kafka_python_admin(rk, b)),
        ("limits/auto_create", lambda b: test_auto_create(rk, b)),
    ]
