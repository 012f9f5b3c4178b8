"""The command-line Kafka tools (issue 7) against a running broker, for run_kafka_tests.py.

Module `cli` (one broker):
  cli/help             `yottastore --help` lists serve, sql, topic, produce, consume and bench
                       (not the hidden debug tools); every tool has its own --help; `serve`
                       printed the Kafka, SQL and metrics addresses in one block.
  cli/topics           `topic create` (partitions, --config), `list`, `describe` (partitions,
                       offsets, the config set on the topic), `delete`; creating twice and
                       describing a deleted topic fail with Kafka's error name.
  cli/produce-consume  lines through `yottastore produce --key-separator` read back with
                       `yottastore consume -e` (every record, keys, per-partition offsets, by
                       partition, from an offset, -n) and with kcat; kcat's records read back
                       with `yottastore consume`.
  cli/errors           an unknown topic, a bad address, a bad format and a bad offset give a
                       clear message and a non-zero exit.

The runner's helpers come in as `rk`, the runner module.
"""

import subprocess
import uuid


def tool(rk, broker, *args, input_bytes=None, expect_status=0):
    """Runs `yottastore ARGS -b BROKER`; (stdout, stderr) as text, the exit status checked."""
    cmd = [rk.OPTS.broker_bin, *args]
    if broker is not None:
        cmd += ["--bootstrap", broker.addr]
    result = subprocess.run(cmd, input=input_bytes, capture_output=True, timeout=120,
                            stdin=None if input_bytes is not None else subprocess.DEVNULL)
    out, err = result.stdout.decode(), result.stderr.decode()
    if expect_status == 0:
        rk.check(result.returncode == 0, f"{' '.join(args)} exited {result.returncode}:\n{out}\n{err}")
    else:
        rk.check(result.returncode != 0, f"{' '.join(args)} should have failed:\n{out}\n{err}")
        rk.check("panicked" not in err and "Stack backtrace" not in err, f"{' '.join(args)} crashed:\n{err}")
    return out, err


def test_help(rk, broker):
    out, _ = tool(rk, None, "--help")
    listed = [line.split()[0] for line in out.split("Commands:")[1].split("Options:")[0].splitlines() if line.strip()]
    for command in ["serve", "sql", "topic", "produce", "consume", "bench"]:
        rk.check(command in listed, f"--help does not list {command}: {listed}")
    rk.check("debug" not in listed, f"--help lists the hidden debug tools: {listed}")
    out, _ = tool(rk, None, "topic", "--help")
    rk.check(all(c in out for c in ["create", "list", "describe", "delete"]), f"topic --help:\n{out}")
    out, _ = tool(rk, None, "consume", "--help")
    rk.check("--format" in out and "%k" in out and "--exit-at-end" in out, f"consume --help:\n{out}")
    out, _ = tool(rk, None, "produce", "--help")
    rk.check("--key-separator" in out, f"produce --help:\n{out}")
    # `serve` printed every address it serves in one block.
    with open(broker.log_path, encoding="utf-8", errors="replace") as log:
        text = log.read()
    # The block: the indented lines after `serving:`.
    block = []
    for line in text[text.rfind("serving:\n"):].splitlines()[1:]:
        if not line.startswith("  "):
            break
        block.append(line)
    for what, address in [("Kafka", broker.addr), ("SQL", f"http://{broker.http_addr}/sql"),
                          ("metrics", f"http://{broker.http_addr}/metrics")]:
        rk.check(any(line.split()[:2] == [what, address] for line in block),
                 f"the start-up block lacks {what} {address}:\n" + "\n".join(block))


def test_topics(rk, broker):
    topic = f"cli-{uuid.uuid4().hex[:8]}"
    out, _ = tool(rk, broker, "topic", "create", topic, "--partitions", "3", "--config", "retention.ms=3600000")
    rk.check(topic in out and "3 partition" in out, f"create: {out!r}")
    out, _ = tool(rk, broker, "topic", "list")
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:]}
    rk.check(rows.get(topic) == "3", f"list: {topic} not listed with 3 partitions:\n{out}")
    out, _ = tool(rk, broker, "topic", "describe", topic)
    rk.check(f"topic {topic}" in out and "partitions 3" in out, f"describe header:\n{out}")
    partition_rows = [line.split() for line in out.split("configs:")[0].splitlines()[2:]]
    rk.check([row[0] for row in partition_rows] == ["0", "1", "2"], f"describe partitions:\n{out}")
    rk.check(all(row[2:] == ["0", "0", "0"] for row in partition_rows), f"describe offsets of an empty topic:\n{out}")
    rk.check("retention.ms = 3600000  (set on the topic)" in out, f"describe configs:\n{out}")
    _, err = tool(rk, broker, "topic", "create", topic, expect_status=1)
    rk.check("TOPIC_ALREADY_EXISTS" in err, f"second create: {err!r}")
    out, _ = tool(rk, broker, "topic", "delete", topic)
    rk.check(topic in out, f"delete: {out!r}")
    out, _ = tool(rk, broker, "topic", "list")
    rk.check(topic not in out, f"deleted topic still listed:\n{out}")
    _, err = tool(rk, broker, "topic", "describe", topic, expect_status=1)
    rk.check("UNKNOWN_TOPIC_OR_PARTITION" in err, f"describe of a deleted topic: {err!r}")
    _, err = tool(rk, broker, "topic", "create", "bad", "--config", "novalue", expect_status=1)
    rk.check("NAME=VALUE" in err, f"bad --config: {err!r}")


def parse_records(out):
    """{partition: [(offset, key, value)]} of lines formatted `%p %o %k %s`."""
    records = {}
    for line in out.splitlines():
        partition, offset, key, value = line.split(" ", 3)
        records.setdefault(int(partition), []).append((int(offset), key, value))
    return records


def test_produce_consume(rk, broker):
    topic = f"cli-{uuid.uuid4().hex[:8]}"
    tool(rk, broker, "topic", "create", topic, "--partitions", "3")
    lines = [f"key{i % 7}\tvalue {i} with spaces" for i in range(200)]
    out, _ = tool(rk, broker, "produce", topic, "--key-separator", "\t", input_bytes=("\n".join(lines) + "\n").encode())
    rk.check(out.strip() == f"wrote 200 record(s) to {topic}", f"produce: {out!r}")
    out, _ = tool(rk, broker, "consume", topic, "--from-beginning", "-e", "--format", "%p %o %k %s\\n")
    mine = parse_records(out)
    rk.check(sum(len(r) for r in mine.values()) == 200, f"consumed {sum(len(r) for r in mine.values())} of 200")
    for partition, records in mine.items():
        rk.check([o for o, _, _ in records] == list(range(len(records))), f"partition {partition} offsets not 0..n")
    # One key, one partition, in the order produced.
    by_key = {}
    for partition, records in mine.items():
        for _, key, value in records:
            by_key.setdefault(key, set()).add(partition)
    rk.check(all(len(partitions) == 1 for partitions in by_key.values()), f"a key went to several partitions: {by_key}")
    got = sorted(f"{k}\t{v}" for records in mine.values() for _, k, v in records)
    rk.check(got == sorted(lines), "consumed records differ from the lines produced")

    # kcat reads the same records, partition by partition.
    r = rk.run_cmd(["kcat", "-C", "-b", broker.addr, "-t", topic, "-o", "beginning", "-e", "-q",
                    "-f", "%p %o %k %s\n"], what="kcat consume")
    rk.check(parse_records(r.stdout.decode()) == mine, "kcat reads other records than yottastore consume")

    # Partition, offset and -n.
    partition = max(mine, key=lambda p: len(mine[p]))
    out, _ = tool(rk, broker, "consume", topic, "--partition", str(partition), "--offset", "2", "-n", "3",
                  "--format", "%p %o %k %s\\n")
    rk.check(parse_records(out) == {partition: mine[partition][2:5]}, f"partition/offset/-n:\n{out}")

    # kcat writes, yottastore reads.
    kcat_topic = f"cli-kcat-{uuid.uuid4().hex[:8]}"
    tool(rk, broker, "topic", "create", kcat_topic)
    rk.run_cmd(["kcat", "-P", "-b", broker.addr, "-t", kcat_topic, "-K", ":", "-p", "0"],
               input_bytes=b"a:1\nb:2\nc:3\n", what="kcat produce")
    out, _ = tool(rk, broker, "consume", kcat_topic, "--from-beginning", "-e", "--format", "%o:%k=%s (%K/%S)\\n")
    rk.check(out == "0:a=1 (1/1)\n1:b=2 (1/1)\n2:c=3 (1/1)\n", f"kcat's records: {out!r}")


def test_errors(rk, broker):
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    _, err = tool(rk, broker, "consume", missing, "-e", expect_status=1)
    rk.check("UNKNOWN_TOPIC_OR_PARTITION" in err and missing in err, f"consume of an unknown topic: {err!r}")
    _, err = tool(rk, broker, "produce", missing, input_bytes=b"x\n", expect_status=1)
    rk.check("UNKNOWN_TOPIC_OR_PARTITION" in err, f"produce to an unknown topic: {err!r}")
    result = subprocess.run([rk.OPTS.broker_bin, "topic", "list", "--bootstrap", "127.0.0.1:1"],
                            capture_output=True, timeout=60)
    err = result.stderr.decode()
    rk.check(result.returncode != 0 and "connecting to 127.0.0.1:1" in err, f"bad address: {result.returncode} {err!r}")
    topic = f"cli-{uuid.uuid4().hex[:8]}"
    tool(rk, broker, "topic", "create", topic)
    _, err = tool(rk, broker, "consume", topic, "--format", "%q", "-e", expect_status=1)
    rk.check("%q" in err, f"bad format: {err!r}")
    _, err = tool(rk, broker, "consume", topic, "--offset=-5", expect_status=1)
    rk.check("offset" in err, f"bad offset: {err!r}")
    tool(rk, broker, "produce", topic, input_bytes=b"one\n")
    _, err = tool(rk, broker, "consume", topic, "--offset", "1000", expect_status=1)
    rk.check("OFFSET_OUT_OF_RANGE" in err, f"offset past the end: {err!r}")
    _, err = tool(rk, broker, "produce", topic, "--partition", "5", input_bytes=b"x\n", expect_status=1)
    rk.check("partition" in err, f"produce to a partition that does not exist: {err!r}")


def tests(rk):
    """The `cli` module's tests for run_kafka_tests.build_modules()."""
    return [
        ("cli/help", lambda b: test_help(rk, b)),
        ("cli/topics", lambda b: test_topics(rk, b)),
        ("cli/produce-consume", lambda b: test_produce_consume(rk, b)),
        ("cli/errors", lambda b: test_errors(rk, b)),
    ]
