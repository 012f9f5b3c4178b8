"""Idempotent producers against `yottastore serve` (issue 4), for run_kafka_tests.py.

Module `idempotence` (one broker, restarted by the tests as they need):
  idempotence/confluent-proxy     confluent-kafka with enable.idempotence=true sends through a
                                  TCP proxy of this file that cuts connections at random byte
                                  counts, in both directions (mid-request and mid-response).
                                  The broker advertises the proxy, so every client connection
                                  goes through it. Afterwards (cutting off) every message is in
                                  the topic exactly once, in order per partition.
  idempotence/kafka-python-proxy  the same with kafka-python's enable_idempotence.
  idempotence/restart-resend      raw protocol: InitProducerId, idempotent batches, SIGKILL,
                                  restart on the same directory, then resends of the last five
                                  batches get their original offsets and append nothing, an
                                  older one is OUT_OF_ORDER_SEQUENCE_NUMBER, the next one is
                                  appended; a new InitProducerId gives an id never handed out.

The runner's helpers (check, verify, create_topic, ...) come in as `rk`, the runner module, so
this file has no import cycle with it.
"""

import random
import socket
import struct
import threading
import time

PROXY_SEED = 20240401


class ChaosProxy:
    """A TCP proxy on 127.0.0.1 to `target` (host, port). While `cutting` is set, each connection
    gets a random byte budget per direction; when a direction's budget runs out the proxy
    forwards only the bytes that fit and closes both sides, so a request or a response is cut at
    an arbitrary byte."""

    # Byte budgets per direction: requests (batches) are large, responses small (tens of bytes
    # per partition), so responses get a budget of a few responses' worth to be cut often.
    BUDGET_BYTES = {"to_broker": (100, 200_000), "to_client": (10, 800)}

    def __init__(self, target, seed, budget_bytes=None):
        self.target = target
        self.rng = random.Random(seed)
        self.budget_bytes = budget_bytes or self.BUDGET_BYTES
        self.cutting = False
        self.lock = threading.Lock()
        self.cuts = {"to_broker": 0, "to_client": 0}
        self.connections = 0
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.closed = False
        self.sockets = set()
        threading.Thread(target=self._accept, daemon=True, name="chaos-proxy").start()

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def _budget(self, direction):
        with self.lock:
            if not self.cutting:
                return None
            return self.rng.randint(*self.budget_bytes[direction])

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.connections += 1
                self.sockets.update((client, upstream))
            pair = (client, upstream)
            threading.Thread(target=self._pump, args=(client, upstream, "to_broker", pair),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, "to_client", pair),
                             daemon=True).start()

    def _close_pair(self, pair):
        for s in pair:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        with self.lock:
            self.sockets.difference_update(pair)

    def _pump(self, src, dst, direction, pair):
        budget = self._budget(direction)
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if budget is not None and len(data) >= budget:
                    if budget > 0:
                        dst.sendall(data[:budget])
                    with self.lock:
                        self.cuts[direction] += 1
                    break
                if budget is not None:
                    budget -= len(data)
                dst.sendall(data)
        except OSError:
            pass
        self._close_pair(pair)

    def set_cutting(self, on):
        with self.lock:
            self.cutting = on
        if not on:
            # Connections made while cutting keep their budgets: end them, clients reconnect.
            with self.lock:
                open_sockets = list(self.sockets)
            for s in open_sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.closed = True
        self.set_cutting(False)
        self.listener.close()


def _proxied(rk, broker):
    """Restarts `broker` advertising a new proxy's address; returns the proxy."""
    proxy = ChaosProxy(("127.0.0.1", broker.port), PROXY_SEED)
    broker.stop()
    broker.advertised_addr = proxy.addr
    broker.start()
    return proxy


def _unproxied(broker, proxy):
    proxy.close()
    broker.stop()
    broker.advertised_addr = None
    broker.start()


def _produce_through_chaos(rk, broker, client, send_all):
    """Creates a topic, sends rk.make_messages through a cutting proxy with `send_all`, then reads
    everything back through the proxy with cutting off and verifies exactly once, in order."""
    proxy = _proxied(rk, broker)
    try:
        topic = rk.topic_name(f"idempotence-{client}")
        rk.create_topic(broker, topic)
        n = max(rk.OPTS.messages, 2000)
        messages = rk.make_messages(n, "binary", seed=rk.seed_for(f"idempotence-{client}", "none"))
        proxy.set_cutting(True)
        t0 = time.monotonic()
        send_all(proxy, topic, messages)
        proxy.set_cutting(False)
        cuts = dict(proxy.cuts)
        # Responses cut on their way back are what a non-idempotent producer would duplicate on
        # retry: the test only means something if that happened.
        rk.check(cuts["to_client"] >= 3,
                 f"the proxy cut only {cuts['to_client']} responses (cuts {cuts}); the test proves nothing")
        counts = {p: len(ms) for p, ms in rk.by_partition(messages).items()}
        got = rk.confluent_consume(broker, topic, counts)
        # Nothing more than expected: read past the counts to catch duplicates at the end.
        extra = _records_after(rk, broker, topic, counts)
        rk.check(not extra, f"{sum(extra.values())} records beyond the {n} produced: {extra}")
        rk.verify(messages, got)
        print(f"    {client}: {n} messages in {time.monotonic() - t0:.1f} s through "
              f"{proxy.connections} proxied connections, cuts {cuts}", flush=True)
    finally:
        _unproxied(broker, proxy)


def _records_after(rk, broker, topic, counts):
    """Records at or after counts[p] in each partition (there must be none), via ListOffsets."""
    C = rk.ck()
    consumer = C.Consumer({"bootstrap.servers": broker.addr, "group.id": "idempotence-check",
                           "enable.auto.commit": False, "log_level": 3})
    try:
        extra = {}
        for p, n in counts.items():
            low, high = consumer.get_watermark_offsets(C.TopicPartition(topic, p), timeout=30)
            if high != n:
                extra[p] = high - n
        return extra
    finally:
        consumer.close()


def test_confluent_proxy(rk, broker):
    C = rk.ck()

    def send_all(proxy, topic, messages):
        producer = C.Producer({
            "bootstrap.servers": proxy.addr, "enable.idempotence": True, "acks": "all",
            "max.in.flight.requests.per.connection": 5, "linger.ms": 2, "batch.size": 16384,
            "message.timeout.ms": rk.OP_TIMEOUT_S * 1000, "reconnect.backoff.ms": 10,
            "reconnect.backoff.max.ms": 200, "retry.backoff.ms": 20, "log_level": 2,
        })
        errors = []

        def delivered(err, msg):
            if err is not None:
                errors.append(f"{err} (partition {msg.partition()})")

        for m in messages:
            kw = dict(topic=topic, value=m["v"], key=m["k"], partition=m["p"],
                      headers=list(m["h"]) or None, on_delivery=delivered, timestamp=m["ts"])
            while True:
                try:
                    producer.produce(**kw)
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
        left = producer.flush(rk.OP_TIMEOUT_S)
        rk.check(left == 0, f"confluent producer: {left} messages undelivered after {rk.OP_TIMEOUT_S} s")
        rk.check(not errors, f"confluent producer: {len(errors)} delivery errors, e.g. {errors[:5]}")

    _produce_through_chaos(rk, broker, "confluent", send_all)


def test_kafka_python_proxy(rk, broker):
    import kafka

    def send_all(proxy, topic, messages):
        producer = kafka.KafkaProducer(
            bootstrap_servers=[proxy.addr], enable_idempotence=True, acks="all",
            # kafka-python 2.3 refuses idempotence with more than one request in flight.
            max_in_flight_requests_per_connection=1, linger_ms=2, batch_size=16384,
            request_timeout_ms=30000, max_block_ms=60000, delivery_timeout_ms=rk.OP_TIMEOUT_S * 1000,
            reconnect_backoff_ms=10, reconnect_backoff_max_ms=200, retry_backoff_ms=20,
            api_version_auto_timeout_ms=10000)
        try:
            futures = [producer.send(topic, value=m["v"], key=m["k"], headers=list(m["h"]),
                                     partition=m["p"], timestamp_ms=m["ts"]) for m in messages]
            producer.flush(timeout=rk.OP_TIMEOUT_S)
            errors = [f.exception for f in futures if f.failed()]
            pending = sum(1 for f in futures if not f.is_done)
            rk.check(not pending, f"kafka-python producer: {pending} sends still pending after flush")
            rk.check(not errors, f"kafka-python producer: {len(errors)} failed sends, e.g. {errors[:3]}")
        finally:
            producer.close(timeout=10)

    _produce_through_chaos(rk, broker, "kafka-python", send_all)


# ----------------------------------------------------------------------------------------------
# Raw protocol: just enough of InitProducerId v0 and Produce v3 to resend exact batches.


class RawClient:
    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.correlation_id = 0

    def close(self):
        self.sock.close()

    def _recv_exact(self, n):
        out = bytearray()
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            out += chunk
        return bytes(out)

    def call(self, api_key, version, body):
        self.correlation_id += 1
        client_id = b"idempotence-test"
        header = struct.pack(">hhih", api_key, version, self.correlation_id, len(client_id)) + client_id
        frame = header + body
        self.sock.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", self._recv_exact(4))[0]
        response = self._recv_exact(size)
        correlation_id = struct.unpack(">i", response[:4])[0]
        assert correlation_id == self.correlation_id, (correlation_id, self.correlation_id)
        return response[4:]

    def init_producer_id(self):
        body = struct.pack(">hi", -1, 60000)  # null transactional id, timeout
        r = self.call(22, 0, body)
        _throttle, error, producer_id, epoch = struct.unpack(">ihqh", r[:16])
        return error, producer_id, epoch

    def produce(self, topic, partition, batch):
        name = topic.encode()
        body = (struct.pack(">hhi", -1, -1, 30000)  # null transactional id, acks=all, timeout
                + struct.pack(">ih", 1, len(name)) + name
                + struct.pack(">iii", 1, partition, len(batch)) + batch)
        r = self.call(0, 3, body)
        (topics,) = struct.unpack(">i", r[:4])
        assert topics == 1
        (name_len,) = struct.unpack(">h", r[4:6])
        at = 6 + name_len
        (partitions,) = struct.unpack(">i", r[at:at + 4])
        assert partitions == 1
        _index, error, base_offset, _append_time = struct.unpack(">ihqq", r[at + 4:at + 26])
        return error, base_offset


def idempotent_batch(producer_id, epoch, sequence, values):
    from kafka.record.default_records import DefaultRecordBatchBuilder
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                        producer_id=producer_id, producer_epoch=epoch,
                                        base_sequence=sequence, batch_size=1 << 20)
    now = int(time.time() * 1000)
    for offset, value in enumerate(values):
        builder.append(offset, timestamp=now, key=None, value=value, headers=[])
    return bytes(builder.build())


OUT_OF_ORDER_SEQUENCE_NUMBER = 45


def test_restart_resend(rk, broker):
    topic = rk.topic_name("idempotence-restart")
    rk.create_topic(broker, topic, partitions=1)
    client = RawClient(broker.addr)
    error, producer_id, epoch = client.init_producer_id()
    rk.check(error == 0 and producer_id >= 0 and epoch == 0,
             f"InitProducerId: error {error}, producer id {producer_id}, epoch {epoch}")
    batches = []  # (batch bytes, base offset)
    sequence = 0
    for i in range(12):
        values = [b"restart-%d-%d" % (i, j) for j in range(1 + i % 3)]
        batch = idempotent_batch(producer_id, epoch, sequence, values)
        error, base_offset = client.produce(topic, 0, batch)
        rk.check(error == 0, f"batch {i}: error {error}")
        batches.append((batch, base_offset, len(values)))
        sequence += len(values)
    end = batches[-1][1] + batches[-1][2]
    client.close()

    # No graceful shutdown: recovery rebuilds the producer state from the log alone.
    broker.kill()
    broker.start()
    client = RawClient(broker.addr)
    try:
        for i, (batch, base_offset, _) in enumerate(batches[-5:]):
            error, got = client.produce(topic, 0, batch)
            rk.check((error, got) == (0, base_offset),
                     f"resend of batch {len(batches) - 5 + i} after restart: error {error}, base offset "
                     f"{got}, expected the original {base_offset}")
        error, _ = client.produce(topic, 0, batches[-6][0])
        rk.check(error == OUT_OF_ORDER_SEQUENCE_NUMBER,
                 f"resend of the sixth most recent batch: error {error}, expected {OUT_OF_ORDER_SEQUENCE_NUMBER}")
        error, base_offset = client.produce(topic, 0, idempotent_batch(producer_id, epoch, sequence, [b"next"]))
        rk.check((error, base_offset) == (0, end), f"next batch: error {error}, base offset {base_offset}, expected {end}")
        error, new_id, _ = client.init_producer_id()
        rk.check(error == 0 and new_id > producer_id,
                 f"InitProducerId after restart: error {error}, id {new_id} (before: {producer_id})")
    finally:
        client.close()
    # Read back: every record once, in order.
    expected = [b"restart-%d-%d" % (i, j) for i in range(12) for j in range(1 + i % 3)] + [b"next"]
    C = rk.ck()
    consumer = C.Consumer({"bootstrap.servers": broker.addr, "group.id": "idempotence-restart",
                           "enable.auto.commit": False, "auto.offset.reset": "error",
                           "enable.partition.eof": True, "log_level": 3})
    got = []
    try:
        consumer.assign([C.TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 60
        eof = False
        while not eof:
            rk.check(time.monotonic() < deadline, f"consumer: only {len(got)} records after 60 s")
            for msg in consumer.consume(num_messages=100, timeout=0.5):
                if msg.error() is not None:
                    if msg.error().code() == C.KafkaError._PARTITION_EOF:
                        eof = len(got) >= len(expected)
                        continue
                    raise rk.TestFailure(f"consumer error: {msg.error()}")
                got.append((msg.offset(), msg.value()))
    finally:
        consumer.close()
    rk.check([v for _, v in got] == expected and [o for o, _ in got] == list(range(len(expected))),
             f"read back {len(got)} records, expected {len(expected)}: {got[:20]}")


def tests(rk):
    """The `idempotence` module's tests for run_kafka_tests.build_modules()."""
    return [
        ("idempotence/confluent-proxy", lambda b: test_confluent_proxy(rk, b)),
        ("idempotence/kafka-python-proxy", lambda b: test_kafka_python_proxy(rk, b)),
        ("idempotence/restart-resend", lambda b: test_restart_resend(rk, b)),
    ]
