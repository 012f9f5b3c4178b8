#!/usr/bin/env bash
# Installs what the Kafka client tests (tests/kafka/) need, idempotently: each step first checks
# whether its result is already there and skips itself if so, so a second run takes seconds.
#
#   kcat                 Debian package `kcat` (librdkafka 2.0.2 from Debian; gzip/snappy/lz4/zstd)
#   .venv/               Python virtualenv with tests/kafka/requirements.txt
#                        (confluent-kafka, kafka-python and its codec packages)
#   psql                 Debian package `postgresql-client` (the Postgres front end's tests)
#   tests/kafka/node_modules
#                        kafkajs and its codec plugins, from tests/kafka/package-lock.json (npm ci)
#   chromium             Debian packages `chromium` and `fonts-dejavu-core`, driven headless by the
#                        dashboard's browser test
#   tests/browser/node_modules
#                        playwright-core (drives /usr/bin/chromium; downloads no browser of its own),
#                        from tests/browser/package-lock.json (npm ci)
#
# Exits non-zero if any step failed (after trying every step), naming what is missing.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

failed=()
step() { echo "setup-test-deps: $*"; }
elapsed() { echo "$(( SECONDS - $1 )) s"; }
t_all=$SECONDS

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else
    echo "setup-test-deps: need root (or sudo) for: $*" >&2; return 1; fi
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq || return 1
    apt_updated=1
  fi
  # The lock timeout: another apt run on the machine waits its turn instead of failing this one.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$@" >/dev/null
}

hash_of() { sha256sum "$@" | sha256sum | cut -c1-64; }

# --- kcat (Debian package; Debian 12 also has the transitional name `kafkacat`) ------------------
t=$SECONDS
if command -v kcat >/dev/null; then
  step "kcat: present ($(kcat -V 2>/dev/null | sed -n 's/^Version \([^ ]*\).*/\1/p'))"
else
  step "kcat: installing the Debian package"
  if apt_install kcat && command -v kcat >/dev/null; then
    step "kcat: installed in $(elapsed "$t")"
  else
    failed+=(kcat)
  fi
fi

# --- psql (Debian package postgresql-client) ---------------------------------------------------
t=$SECONDS
if command -v psql >/dev/null; then
  step "psql: present ($(psql --version 2>/dev/null))"
else
  step "psql: installing the Debian package postgresql-client"
  if apt_install postgresql-client && command -v psql >/dev/null; then
    step "psql: installed in $(elapsed "$t")"
  else
    failed+=(psql)
  fi
fi

# --- Python virtualenv ------------------------------------------------------------------------
t=$SECONDS
venv="$root/.venv"
reqs="$root/tests/kafka/requirements.txt"
stamp="$venv/.yottastore-kafka-tests.sha256"
want=$(hash_of "$reqs")
py_ok() {
  "$venv/bin/python" - <<'EOF' >/dev/null 2>&1
import confluent_kafka, kafka, kafka.codec as c, snappy, lz4.frame, zstandard, datafusion, psycopg
assert c.has_gzip() and c.has_snappy() and c.has_lz4() and c.has_zstd()
EOF
}
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && py_ok; then
  step "python: .venv up to date"
else
  step "python: creating/updating .venv from tests/kafka/requirements.txt"
  py=$(command -v python3 || true)
  if [ -z "$py" ]; then apt_install python3 python3-venv python3-pip; py=$(command -v python3 || true); fi
  if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv" || { apt_install python3-venv && rm -rf "$venv" && "$py" -m venv "$venv"; }
  fi
  if "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-input -r "$reqs" && py_ok; then
    echo "$want" >"$stamp"
    step "python: installed in $(elapsed "$t")"
  else
    failed+=(python-venv)
  fi
fi

# --- Node: kafkajs and codec plugins ----------------------------------------------------------
t=$SECONDS
nodedir="$root/tests/kafka"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  step "node: not found, installing Debian's nodejs and npm"
  apt_install nodejs npm || true
fi
node_ok() {
  (cd "$nodedir" && node -e "require('kafkajs'); require('kafkajs-snappy'); require('kafkajs-lz4'); require('lz4'); require('zstd-codec')") >/dev/null 2>&1
}
# npm_ci NAME DIR CHECK: `npm ci` in DIR unless its stamp (a hash of package.json and the
# lockfile) is current and CHECK (a function) passes; NAME is what a failure is called.
npm_ci() {
  local name=$1 dir=$2 check=$3 t=$SECONDS
  local stamp="$dir/node_modules/.yottastore-tests.sha256" rel=${2#"$root"/}
  if ! command -v npm >/dev/null; then
    failed+=(node)
    return
  fi
  local want
  want=$(hash_of "$dir/package.json" "$dir/package-lock.json")
  if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && "$check"; then
    step "$name: $rel/node_modules up to date"
    return
  fi
  step "$name: npm ci in $rel"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error 2>&1) | grep -v 'Unknown user config "nodedir"'
  if "$check"; then
    echo "$want" >"$stamp"
    step "$name: installed in $(elapsed "$t")"
  else
    failed+=("$name-modules")
  fi
}
# lz4 (under kafkajs-lz4) is a native module built by node-gyp against the local node headers.
npm_ci node "$nodedir" node_ok

# --- Chromium and playwright-core (the dashboard's browser test) ------------------------------
t=$SECONDS
if [ -x /usr/bin/chromium ]; then
  step "chromium: present ($(/usr/bin/chromium --version 2>/dev/null | head -n 1))"
else
  step "chromium: installing the Debian package"
  # The font named explicitly: the screenshots must show text whatever else the machine has.
  if apt_install chromium fonts-dejavu-core && [ -x /usr/bin/chromium ]; then
    step "chromium: installed in $(elapsed "$t")"
  else
    failed+=(chromium)
  fi
fi
browserdir="$root/tests/browser"
browser_ok() { (cd "$browserdir" && node -e "require('playwright-core')") >/dev/null 2>&1; }
npm_ci browser "$browserdir" browser_ok

if [ "${#failed[@]}" -gt 0 ]; then
  step "FAILED to install: ${failed[*]} (took $(elapsed "$t_all"))"
  exit 1
fi
step "all test dependencies present (took $(elapsed "$t_all"))"
