"""The README's quick start, followed word by word (issue 7), for run_kafka_tests.py.

Module `quickstart`:
  quickstart/readme    starts the server with the quick start's own command (in a scratch
                       directory, so its `./data` is fresh), on the default addresses it
                       documents (127.0.0.1:9092, :8080, :5433), runs every command of the
                       quick start's block in order with bash, checks what they print, and
                       opens the dashboard it names.

The only change to the text: `cargo run --release --` becomes the binary under test (the suite
has built it; a release build of its own would take most of CI's time).
"""

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

README = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "README.md")
DEFAULT_PORTS = {"Kafka": 9092, "HTTP": 8080, "Postgres": 5433}
CARGO_RUN = "cargo run --release --"


def quick_start_commands():
    """(the server's command, the block of commands) from the README's quick start."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("## Quick start"):]
    section = section[:section.index("\n## ", 1)]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    marker = section.index("<!-- quickstart")
    after_marker = re.findall(r"```sh\n(.*?)```", section[marker:], flags=re.S)
    if len(blocks) < 2 or not after_marker:
        raise AssertionError("the README's quick start lost its server block or its marked block")
    return blocks[0].strip(), after_marker[0]


def port_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_readme(rk, broker):
    server_cmd, block = quick_start_commands()
    binary = rk.OPTS.broker_bin
    rk.check(server_cmd.startswith(CARGO_RUN), f"the quick start's server command is {server_cmd!r}")
    busy = [f"{what} {port}" for what, port in DEFAULT_PORTS.items() if not port_free(port)]
    rk.check(not busy, f"the quick start uses the default addresses, but these ports are taken here: {busy}")
    for tool in ("kcat", "psql"):
        rk.check(shutil.which(tool), f"the quick start needs {tool} (scripts/setup-test-deps.sh installs it)")
    scratch = tempfile.mkdtemp(prefix="yottastore-quickstart-")
    log_path = os.path.join(rk.ARTIFACTS, "quickstart-server.log")
    server = None
    try:
        with open(log_path, "wb") as log:
            server = subprocess.Popen(shlex.split(server_cmd.replace(CARGO_RUN, binary, 1)), cwd=scratch,
                                      stdout=log, stderr=log, stdin=subprocess.DEVNULL, preexec_fn=rk._die_with_parent)
        deadline = time.monotonic() + rk.START_TIMEOUT_S
        while True:
            rk.check(server.poll() is None, f"the server exited with {server.returncode}: see {log_path}")
            try:
                with urllib.request.urlopen("http://127.0.0.1:8080/health", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            rk.check(time.monotonic() < deadline, f"the server did not serve http://127.0.0.1:8080/health in time")
            time.sleep(0.2)
        with open(log_path, encoding="utf-8", errors="replace") as f:
            banner = f.read()
        for address in ("127.0.0.1:9092", "127.0.0.1:8080", "127.0.0.1:5433"):
            rk.check(address in banner, f"the start-up block does not name {address}:\n{banner[-2000:]}")

        script = block.replace(CARGO_RUN, binary)
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=scratch, capture_output=True,
                                timeout=120, stdin=subprocess.DEVNULL)
        out, err = result.stdout.decode(), result.stderr.decode()
        rk.check(result.returncode == 0, f"the quick start's commands failed ({result.returncode}):\n{out}\n{err}")
        # What a reader is told to expect: the view holds the latest record per vehicle, through
        # psql and through `yottastore sql`, and system.views shows it caught up.
        rk.check(re.search(r"veh-1\s*\|\s*north\s*\|\s*parked", out), f"psql did not show veh-1 parked:\n{out}")
        rk.check(re.search(r"veh-2\s*\|\s*south\s*\|\s*idle", out), f"psql did not show veh-2 idle:\n{out}")
        rk.check("CREATE MATERIALIZED VIEW" not in err and "ERROR" not in err, f"errors on stderr:\n{err}")
        rk.check(re.search(r"\|\s*latest\s*\|\s*2\s*\|\s*0\s*\|", out),
                 f"system.views does not show latest applied to offset 2 with lag 0:\n{out}")

        with urllib.request.urlopen("http://127.0.0.1:8080/", timeout=10) as response:
            page = response.read().decode()
        rk.check(response.status == 200 and "YottaStore" in page, f"the dashboard page: {response.status} {page[:200]!r}")
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(rk.STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(10)
        # The default device is preallocated (8 GiB): never leave it behind.
        shutil.rmtree(scratch, ignore_errors=True)


def tests(rk):
    """The `quickstart` module's tests for run_kafka_tests.build_modules()."""
    return [("quickstart/readme", lambda b: test_readme(rk, b))]
