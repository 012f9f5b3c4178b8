"""The Postgres wire protocol front end (issue 6), for run_kafka_tests.py.

Module `pg` (one broker, restarted by the first test with small query limits so hostile SQL
fails quickly):
  pg/same-rows         records produced with confluent-kafka; every query of QUERIES answers
                       the same rows through every front end of FRONT_ENDS: HTTP (POST /sql),
                       `yottastore sql -c`, psql (simple protocol) and psycopg 3 (extended
                       protocol, `$n` parameters bound by the server, prepared statements).
  pg/psql-catalog      psql's \\d, \\d TOPIC, \\dt, SET/SHOW, BEGIN/COMMIT; the catalog queries of
                       Grafana's PostgreSQL data source, through psql and the extended protocol.
  pg/errors            errors are ErrorResponses with a SQLSTATE and the position in the SQL.
  pg/hostile-sql       a huge cross join and a query over the memory limit fail with a clear
                       message through HTTP, `yottastore sql`, psql and psycopg, and the server
                       keeps serving the next client.
  pg/hostile-client    garbage startup packets, huge and negative message lengths, an
                       oversized statement and too many connections: refused, and the server
                       keeps serving.

To compare another front end or table, add one line to FRONT_ENDS or QUERIES.
The runner's helpers come in as `rk`, the runner module.
"""

import csv
import io
import json
import re
import socket
import struct
import subprocess
import time

import sql_tests

# Small limits so hostile queries fail in seconds.
BROKER_ARGS = ["--query-memory-mib", "16", "--query-timeout-ms", "3000", "--pg-max-connections", "8"]
# A hash join's build side cannot spill: 200 MB of it fails at the 16 MiB limit at once.
MEMORY_HOG = ("SELECT count(*) FROM (SELECT repeat('x', 1000) || CAST(v AS VARCHAR) AS s FROM generate_series(1, 200000) AS g(v)) a "
              "JOIN (SELECT repeat('x', 1000) || CAST(v AS VARCHAR) AS s FROM generate_series(1, 200000) AS g(v)) b ON a.s = b.s")
CROSS_JOIN = ("SELECT count(*) FROM generate_series(1, 1000000) a CROSS JOIN generate_series(1, 1000000) b "
              "CROSS JOIN generate_series(1, 1000) c")


def limited_broker(rk, broker):
    """Restarts `broker` with BROKER_ARGS once (same data directory and ports)."""
    if getattr(broker, "extra_args", None) != BROKER_ARGS:
        broker.stop()
        broker.extra_args = BROKER_ARGS
        broker.start()
    return broker


def pg_conninfo(broker):
    host, port = broker.pg_addr.rsplit(":", 1)
    return f"host={host} port={port} dbname=yottastore user=yotta sslmode=disable connect_timeout=10"


# ----------------------------------------------------------------------------------------------
# Front ends: each runs one query, whose `$n` parameters are given in `params`, and answers
# (column names, rows as tuples of text; NULL as ""). Text front ends get the parameters
# inlined as literals; psycopg sends them as parameters of the extended protocol.

def literal(value):
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def inline(sql, params):
    return re.sub(r"\$(\d+)", lambda m: literal(params[int(m.group(1)) - 1]), sql)


def text(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def via_http(rk, broker, sql, params):
    answer = sql_tests.query_json(rk, broker, inline(sql, params))
    names = [c["name"] for c in answer["columns"]]
    return names, [tuple(text(row.get(name)) for name in names) for row in answer["rows"]]


def via_cli(rk, broker, sql, params):
    out, _ = sql_tests.cli(rk, broker, inline(sql, params))
    lines = [line for line in out.splitlines() if line.startswith("|")]
    rk.check(lines, f"no table in the CLI's answer:\n{out}")
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return cells[0], [tuple(row) for row in cells[1:]]


def psql(rk, broker, *args, expect_status=0, timeout=60):
    """psql against the broker (never reads ~/.psqlrc); (stdout, stderr)."""
    result = subprocess.run(["psql", pg_conninfo(broker), "-X", "-v", "ON_ERROR_STOP=1", *args],
                            capture_output=True, timeout=timeout)
    out, err = result.stdout.decode(), result.stderr.decode()
    rk.check(result.returncode == expect_status,
             f"psql {' '.join(args)!r} exited {result.returncode}, expected {expect_status}:\n{out}\n{err}")
    return out, err


def via_psql(rk, broker, sql, params):
    out, _ = psql(rk, broker, "--csv", "-c", inline(sql, params))
    rows = list(csv.reader(io.StringIO(out)))
    rk.check(rows, f"no CSV from psql:\n{out}")
    return rows[0], [tuple(row) for row in rows[1:]]


def psycopg_connect(broker, **kwargs):
    import psycopg
    return psycopg.connect(pg_conninfo(broker), **kwargs)


def via_psycopg(rk, broker, sql, params):
    """Server-side parameters: psycopg turns %s into $n and sends Parse/Bind/Execute."""
    with psycopg_connect(broker) as conn:  # not autocommit: psycopg sends BEGIN first
        with conn.cursor() as cur:
            cur.execute(re.sub(r"\$\d+", "%s", sql), params)
            names = [d.name for d in cur.description]
            rows = [tuple(text(v) for v in row) for row in cur.fetchall()]
            # A named prepared statement, bound twice: the second answer must be the same.
            cur.execute(re.sub(r"\$\d+", "%s", sql), params, prepare=True)
            cur.execute(re.sub(r"\$\d+", "%s", sql), params, prepare=True)
            again = [tuple(text(v) for v in row) for row in cur.fetchall()]
            rk.check(again == rows, f"prepared statement answered {again}, unprepared {rows}")
    return names, rows


FRONT_ENDS = [
    ("http", via_http),
    ("yottastore sql", via_cli),
    ("psql", via_psql),
    ("psycopg", via_psycopg),
]

# (name, SQL over {topic} with $n parameters, parameters). Integers and text only: each front
# end renders timestamps and floats its own way.
QUERIES = [
    ("count per partition",
     'SELECT partition, count(*) AS n FROM "{topic}" WHERE partition >= $1 GROUP BY partition ORDER BY partition', (0,)),
    ("json fields",
     "SELECT json_get_str(value, 'region') AS region, count(*) AS n, sum(json_get_int(value, 'speed')) AS speed_sum "
     'FROM "{topic}" WHERE json_get_str(value, \'region\') <> $1 GROUP BY 1 ORDER BY 1', ("west",)),
    ("records of a range",
     'SELECT partition, "offset", key, value FROM "{topic}" WHERE partition = $1 AND "offset" BETWEEN $2 AND $3 '
     'ORDER BY "offset"', (1, 10, 14)),
    ("system table",
     "SELECT topic, partition, high_watermark FROM system.partitions WHERE topic = $1 ORDER BY partition", ("{topic}",)),
    ("distinct keys",
     'SELECT partition, count(DISTINCT key) AS keys, min("offset") AS first, max("offset") AS last FROM "{topic}" '
     "GROUP BY partition ORDER BY partition", ()),
]


def test_same_rows(rk, broker):
    limited_broker(rk, broker)
    topic = rk.topic_name("pg-vehicles")
    rk.create_topic(broker, topic, partitions=3)
    per_partition = sql_tests.produce_vehicles(rk, broker, topic, 600)
    for name, sql, params in QUERIES:
        sql = sql.replace("{topic}", topic)
        params = tuple(p.replace("{topic}", topic) if isinstance(p, str) else p for p in params)
        answers = {front_end: run(rk, broker, sql, params) for front_end, run in FRONT_ENDS}
        reference_name, reference = FRONT_ENDS[0][0], answers[FRONT_ENDS[0][0]]
        rk.check(reference[1], f"{name}: no rows through {reference_name}")
        for front_end, answer in answers.items():
            rk.check(answer == reference,
                     f"{name}: {front_end} answered {answer}, {reference_name} answered {reference}")
    # And the rows are right, not only the same.
    _, rows = via_psql(rk, broker, QUERIES[0][1].replace("{topic}", topic), (0,))
    rk.check({int(p): int(n) for p, n in rows} == per_partition, f"psql counts {rows}, produced {per_partition}")
    broker.pg_topic = topic


# ----------------------------------------------------------------------------------------------
# psql's meta-commands and Grafana's queries

# Grafana's PostgreSQL data source (public/app/plugins/datasource/grafana-postgresql-datasource/
# postgresMetaQuery.ts and pkg/.../sqlds's GetDatabaseQuery): the version check of the settings
# page, the TimescaleDB check, the table list and the column list of the query editor. `{table}`
# is the table as the list names it.
GRAFANA_SCHEMA_CONSTRAINT = """
          quote_ident(table_schema) IN (
          SELECT
            CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
          )"""
GRAFANA_VERSION = "SELECT current_setting('server_version_num')::int/100 as version"
GRAFANA_TIMESCALEDB = "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
GRAFANA_DATABASES = """SELECT datname as name
		FROM pg_database
		WHERE datistemplate = false
		AND datname <> 'postgres'
		"""
GRAFANA_TABLES = f"""SELECT
    CASE WHEN {GRAFANA_SCHEMA_CONSTRAINT}
      THEN quote_ident(table_name)
      ELSE quote_ident(table_schema) || '.' || quote_ident(table_name)
    END AS "table"
    FROM information_schema.tables
    WHERE quote_ident(table_schema) NOT IN ('information_schema',
                             'pg_catalog',
                             '_timescaledb_cache',
                             '_timescaledb_catalog',
                             '_timescaledb_internal',
                             '_timescaledb_config',
                             'timescaledb_information',
                             'timescaledb_experimental')
    ORDER BY CASE WHEN {GRAFANA_SCHEMA_CONSTRAINT} THEN 0 ELSE 1 END, 1"""


def grafana_columns(table):
    part = "'" + table.replace("'", "''") + "'"
    return f"""SELECT quote_ident(column_name) AS "column", data_type AS "type"
    FROM information_schema.columns
    WHERE
      CASE WHEN array_length(parse_ident({part}),1) = 2
        THEN quote_ident(table_schema) = (parse_ident({part}))[1]
          AND quote_ident(table_name) = (parse_ident({part}))[2]
        ELSE quote_ident(table_name) = {part}
          AND {GRAFANA_SCHEMA_CONSTRAINT}
      END"""


def test_psql_catalog(rk, broker):
    limited_broker(rk, broker)
    topic = getattr(broker, "pg_topic", None)
    if topic is None:
        topic = rk.topic_name("pg-catalog")
        rk.create_topic(broker, topic, partitions=3)
    out, _ = psql(rk, broker, "-c", "\\d")
    rk.check(topic in out and "system" in out, f"\\d lists no {topic}:\n{out}")
    out, _ = psql(rk, broker, "-c", "\\dt")
    rk.check(topic in out, f"\\dt lists no {topic}:\n{out}")
    out, _ = psql(rk, broker, "-c", f'\\d "{topic}"')
    for column in ["partition", "offset", "timestamp", "key", "value", "key_bytes", "value_bytes", "headers"]:
        rk.check(re.search(rf"^\s*{column}\s*\|", out, re.M), f"\\d {topic} lacks column {column}:\n{out}")
    # What clients send at start and around queries.
    out, err = psql(rk, broker, "-A", "-t", "-c", "SET statement_timeout = 0", "-c", "SET application_name = 'pg-tests'", "-c", "SHOW application_name",
                  "-c", "SHOW server_version", "-c", "BEGIN", "-c", "SELECT 41 + 1", "-c", "COMMIT",
                  "-c", "SELECT current_database(), version() IS NOT NULL")
    lines = out.split()
    rk.check("pg-tests" in lines and "42" in lines and "yottastore|t" in lines, f"SET/SHOW/BEGIN answers:\n{out}")
    # The server's timeout stays: the SET is accepted with a warning.
    rk.check("WARNING" in err and "statement_timeout" in err, f"SET statement_timeout: {err!r}")

    # Grafana: the texts it sends, through the simple protocol (psql) and the extended one
    # (psycopg prepared statements, as Go's pgx sends them). Its search_path subquery is one
    # DataFusion cannot plan (datafusion-pg-catalog rewrites it to match no schema), so the
    # table list names every table with its schema, and the editor asks for the columns of
    # that qualified name. Grafana's column query cannot find a qualified name that needs
    # quoting (hyphens) in Postgres either, so this topic's name needs none.
    import uuid
    table = f"grafana_{uuid.uuid4().hex[:8]}"
    rk.create_topic(broker, table, partitions=1)
    version, _ = psql(rk, broker, "-A", "-t", "-c", GRAFANA_VERSION)
    rk.check(version.strip().isdigit() and int(version) >= 900, f"Grafana's version check: {version!r}")
    out, _ = psql(rk, broker, "-A", "-t", "-c", GRAFANA_TIMESCALEDB)
    rk.check(out.strip() == "", f"TimescaleDB is not here: {out!r}")
    out, _ = psql(rk, broker, "-A", "-t", "-c", GRAFANA_DATABASES)
    rk.check("yottastore" in out.split(), f"Grafana's database list: {out!r}")
    out, _ = psql(rk, broker, "-A", "-t", "-c", GRAFANA_TABLES)
    tables = out.split()
    rk.check(f"public.{table}" in tables and f'public."{topic}"' in tables and "system.partitions" in tables,
             f"Grafana's table list lacks public.{table}, public.\"{topic}\" or system.partitions: {tables}")
    out, _ = psql(rk, broker, "-A", "-t", "-F", " ", "-c", grafana_columns(f"public.{table}"))
    columns = dict(line.split(" ", 1) for line in out.splitlines() if line)
    rk.check(list(columns) == ["partition", '"offset"', "timestamp", "key", "value", "key_bytes", "value_bytes", "headers"],
             f"Grafana's column list for public.{table}: {columns}")
    with psycopg_connect(broker, autocommit=True) as conn:
        for sql in [GRAFANA_VERSION, GRAFANA_TIMESCALEDB, GRAFANA_DATABASES, GRAFANA_TABLES, grafana_columns(f"public.{table}")]:
            with conn.cursor() as cur:
                cur.execute(sql.replace("%", "%%"), prepare=True)
                rows = cur.fetchall()
                rk.check(sql == GRAFANA_TIMESCALEDB or rows, f"no rows through the extended protocol for {sql[:60]!r}")


# ----------------------------------------------------------------------------------------------
# Errors

def read_message(sock):
    head = recv_exact(sock, 5)
    if head is None:
        return None, None
    kind, length = head[:1], struct.unpack("!i", head[1:])[0]
    return kind, recv_exact(sock, length - 4)


def recv_exact(sock, count):
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def error_fields(body):
    return {chr(part[0]): part[1:].decode() for part in body.split(b"\0") if part}


def startup(broker, retry_full_seconds=0):
    """A raw connection after startup (ReadyForQuery received); refused for too many
    connections, tried again for up to `retry_full_seconds`."""
    deadline = time.monotonic() + retry_full_seconds
    while True:
        try:
            return startup_once(broker)
        except AssertionError as error:
            if "53300" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def startup_once(broker):
    host, port = broker.pg_addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=20)
    params = b"user\0yotta\0database\0yottastore\0\0"
    sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
    while True:
        kind, body = read_message(sock)
        if kind in (None, b"Z"):
            return sock
        if kind == b"E":
            raise AssertionError(f"startup refused: {error_fields(body)}")


def simple_query(sock, sql):
    """Messages until ReadyForQuery: [(kind, body)]."""
    data = sql.encode() + b"\0"
    sock.sendall(b"Q" + struct.pack("!i", 4 + len(data)) + data)
    messages = []
    while True:
        kind, body = read_message(sock)
        if kind is None:
            return messages
        messages.append((kind, body))
        if kind == b"Z":
            return messages


def test_errors(rk, broker):
    limited_broker(rk, broker)
    sock = startup(broker)
    try:
        # Syntax error: SQLSTATE 42601 and the position of the bad token (1-based characters).
        sql = "SELECT 1 FROMM system.topics"
        errors = [error_fields(body) for kind, body in simple_query(sock, sql) if kind == b"E"]
        rk.check(errors and errors[0]["C"] == "42601", f"syntax error: {errors}")
        rk.check(errors[0].get("P") and int(errors[0]["P"]) == sql.index("system") + 1,
                 f"syntax error position: {errors[0]} for {sql!r}")
        # Unknown column: position of the name, 42703.
        sql = "SELECT partition, nope FROM system.partitions"
        errors = [error_fields(body) for kind, body in simple_query(sock, sql) if kind == b"E"]
        rk.check(errors and errors[0]["C"] == "42703" and "nope" in errors[0]["M"], f"unknown column: {errors}")
        rk.check(errors[0].get("P") == str(sql.index("nope") + 1), f"unknown column position: {errors[0]}")
        # Unknown table, DDL: their own codes.
        errors = [error_fields(body) for kind, body in simple_query(sock, "SELECT * FROM no_such_topic") if kind == b"E"]
        rk.check(errors and errors[0]["C"] == "42P01" and "no_such_topic" in errors[0]["M"], f"unknown table: {errors}")
        errors = [error_fields(body) for kind, body in simple_query(sock, "CREATE TABLE x AS SELECT 1") if kind == b"E"]
        rk.check(errors and errors[0]["C"] == "25006", f"DDL: {errors}")
        # The connection is still usable after the errors, and statements after an error in
        # one Query do not run (as Postgres).
        messages = simple_query(sock, "SELECT 1; SELECT nope; SELECT 3")
        kinds = [kind for kind, _ in messages]
        rk.check(kinds.count(b"D") == 1 and kinds.count(b"E") == 1 and kinds[-1] == b"Z", f"multi-statement: {kinds}")
    finally:
        sock.close()
    # psql shows the message and a caret under the position.
    _, err = psql(rk, broker, "-c", "SELECT 1 FROMM system.topics", expect_status=1)
    rk.check("ERROR:" in err and "^" in err, f"psql's error display:\n{err}")
    # psycopg: typed exceptions from the SQLSTATE.
    import psycopg
    with psycopg_connect(broker, autocommit=True) as conn:
        try:
            conn.execute("SELECT * FROM system.partitions WHERE partition = %s AND nope = 1", (1,))
            rk.check(False, "a query naming an unknown column succeeded")
        except psycopg.errors.UndefinedColumn as error:
            rk.check("nope" in str(error), f"psycopg error: {error}")
        rk.check(conn.execute("SELECT %s::bigint + 1", (41,)).fetchone()[0] == 42, "psycopg after an error")


# ----------------------------------------------------------------------------------------------
# Hostile SQL and clients

def still_serving(rk, broker):
    out, _ = psql(rk, broker, "-A", "-t", "-c", "SELECT count(*) FROM system.zones")
    rk.check(out.strip() == "64", f"after a hostile query, system.zones: {out!r}")
    answer = sql_tests.query_json(rk, broker, "SELECT 1 AS one")
    rk.check(answer["rows"] == [{"one": 1}], f"HTTP after a hostile query: {answer}")


def test_hostile_sql(rk, broker):
    limited_broker(rk, broker)
    cases = [(CROSS_JOIN, "timed out", 408, "57014"), (MEMORY_HOG, "Resources exhausted", 400, "53200")]
    for sql, message, http_status, sqlstate in cases:
        status, body, _ = sql_tests.post_sql(broker, sql)
        error = json.loads(body).get("error", "")
        rk.check(status == http_status and message in error, f"HTTP {sql[:40]!r}: {status} {error!r}")
        still_serving(rk, broker)
        _, err = sql_tests.cli(rk, broker, sql, expect_status=1)
        rk.check(message in err, f"yottastore sql {sql[:40]!r}: {err!r}")
        still_serving(rk, broker)
        _, err = psql(rk, broker, "-c", sql, expect_status=1)
        rk.check(message in err, f"psql {sql[:40]!r}: {err!r}")
        still_serving(rk, broker)
        import psycopg
        with psycopg_connect(broker, autocommit=True) as conn:
            try:
                conn.execute(sql.replace("%", "%%"), ())
                rk.check(False, f"psycopg: {sql[:40]!r} succeeded")
            except psycopg.Error as error:
                rk.check(error.sqlstate == sqlstate and message in str(error), f"psycopg {sql[:40]!r}: {error.sqlstate} {error}")
            # The same connection answers the next query.
            rk.check(conn.execute("SELECT 1").fetchone()[0] == 1, "psycopg connection after a hostile query")
        still_serving(rk, broker)


def test_hostile_client(rk, broker):
    limited_broker(rk, broker)
    host, port = broker.pg_addr.rsplit(":", 1)

    def raw(data, read=True):
        with socket.create_connection((host, int(port)), timeout=20) as sock:
            sock.sendall(data)
            if not read:
                return b""
            received = b""
            while True:
                try:
                    chunk = sock.recv(65536)
                except (ConnectionResetError, socket.timeout):
                    break
                if not chunk:
                    break
                received += chunk
            return received

    # Garbage, a negative length, a length below the minimum, a huge startup length: closed.
    for data in [b"\x16\x03\x01garbage-garbage-garbage", b"\xff\xff\xff\xff\x00\x03\x00\x00",
                 b"\x00\x00\x00\x02\x00\x03\x00\x00", b"\x7f\xff\xff\xff\x00\x03\x00\x00" + b"x" * 1000,
                 b"\x00\x00\x00\x08\x04\xd2\x16\x2f" * 4]:
        raw(data)
        still_serving(rk, broker)
    # After startup: a message declaring 2 GiB, and a Query longer than the limit.
    for payload in [b"Q" + struct.pack("!i", 0x7fffffff) + b"SELECT 1",
                    b"Q" + struct.pack("!i", 4 + (3 << 20)) + b"SELECT 1 " * 1000]:
        sock = startup(broker)
        try:
            sock.sendall(payload)
            kind, body = read_message(sock)
            rk.check(kind == b"E" and "limit" in error_fields(body).get("M", ""), f"oversized message: {kind} {body!r}")
        finally:
            sock.close()
        still_serving(rk, broker)
    # A statement at the message limit but over the SQL limit (1 MiB): a clear error, and the
    # connection stays.
    sock = startup(broker)
    try:
        errors = [error_fields(body) for kind, body in simple_query(sock, "SELECT " + "1+" * (520 << 10) + "1") if kind == b"E"]
        rk.check(errors and errors[0]["C"] == "54000" and "limit" in errors[0]["M"], f"long SQL: {errors}")
        rows = [body for kind, body in simple_query(sock, "SELECT 7") if kind == b"D"]
        rk.check(len(rows) == 1, "the connection after a long statement")
    finally:
        sock.close()
    # Named prepared statements are bounded per connection (1024): the next one is refused,
    # the connection stays.
    sock = startup(broker)
    try:
        def parse(name):
            body = name.encode() + b"\0SELECT 1\0" + struct.pack("!h", 0)
            return b"P" + struct.pack("!i", 4 + len(body)) + body
        sock.sendall(b"".join(parse(f"s{i}") for i in range(1025)) + b"S\0\0\0\x04")
        kinds, errors = [], []
        while not kinds or kinds[-1] != b"Z":
            kind, body = read_message(sock)
            rk.check(kind is not None, f"connection closed after {len(kinds)} messages")
            kinds.append(kind)
            if kind == b"E":
                errors.append(error_fields(body))
        rk.check(kinds.count(b"1") == 1024 and [e["C"] for e in errors] == ["54000"], f"statement budget: {kinds.count(b'1')} parsed, {errors}")
        rows = [body for kind, body in simple_query(sock, "SELECT 8") if kind == b"D"]
        rk.check(len(rows) == 1, "the connection after the statement budget")
    finally:
        sock.close()
    # Too many connections: the 9th is told so, and once they close a client gets in again.
    # (A connection a client just closed holds its slot until the server reads the end of it.)
    held = [startup(broker, retry_full_seconds=5) for _ in range(8)]
    try:
        _, err = psql(rk, broker, "-c", "SELECT 1", expect_status=2)
        rk.check("too many clients" in err, f"over the connection limit: {err!r}")
    finally:
        for sock in held:
            sock.close()
    for _ in range(50):
        result = subprocess.run(["psql", pg_conninfo(broker), "-X", "-A", "-t", "-c", "SELECT 5"], capture_output=True, timeout=30)
        if result.returncode == 0:
            break
        time.sleep(0.1)
    rk.check(result.stdout.decode().strip() == "5", f"after the connections closed: {result.stderr.decode()!r}")
    still_serving(rk, broker)


def tests(rk):
    """The `pg` module's tests for run_kafka_tests.build_modules()."""
    return [
        ("pg/same-rows", lambda b: test_same_rows(rk, b)),
        ("pg/psql-catalog", lambda b: test_psql_catalog(rk, b)),
        ("pg/errors", lambda b: test_errors(rk, b)),
        ("pg/hostile-sql", lambda b: test_hostile_sql(rk, b)),
        ("pg/hostile-client", lambda b: test_hostile_client(rk, b)),
    ]
