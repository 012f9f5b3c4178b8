#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need, runs every test, and
# ends with one line `N passed, N failed`. The README names this command and `.ci/run` calls it.
set -uo pipefail
cd "$(dirname "$0")/.."

# What the tests need beyond the Rust toolchain. The storage tests need only cargo; the
# protocol tests (Kafka clients in a virtualenv, kcat) will install theirs here.
command -v cargo >/dev/null || { echo "cargo is required (rustup)"; exit 2; }

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
started=$(date +%s)
# Release-mode dependencies are not needed: the dev profile already optimises dependencies.
cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

# Sum the per-binary `test result:` lines of cargo's harness.
read -r passed failed < <(awk '/^test result:/ {
    for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) }
  } END { print p+0, f+0 }' "$log")
echo "suite took $(( $(date +%s) - started )) s"
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  # A build error or a crashed test binary prints no failure count: never report it as green.
  failed=1
fi
echo "${passed} passed, ${failed} failed"
exit "$status"
