#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need, runs every test, and
# ends with one line `N passed, N failed, N skipped`. The README names this command and
# `.ci/run` calls it.
#
# Phases (each timed):
#   1. cargo test --workspace        Rust unit, property and crash tests
#   2. scripts/setup-test-deps.sh    kcat, .venv (confluent-kafka, kafka-python), kafkajs; idempotent
#   3. cargo build --all-targets     the broker binary the client tests start (already built by 1)
#   4. tests/kafka/run_kafka_tests.py  real Kafka clients over TCP against `yottastore serve`
# The final line sums cargo's counts and the client tests' counts (skipped = cargo's ignored +
# the client tests' SKIPs). Exit status is non-zero if any phase failed.
set -uo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "cargo is required (rustup)"; exit 2; }

log="$(mktemp)"
klog="$(mktemp)"
trap 'rm -f "$log" "$klog"' EXIT
started=$SECONDS
timings=()
status=0
passed=0 failed=0 skipped=0

phase_done() { timings+=("$(printf '%-26s %5d s  %s' "$1" "$(( SECONDS - $2 ))" "$3")"); }

# --- 1. cargo test ------------------------------------------------------------------------------
t=$SECONDS
# Release-mode dependencies are not needed: the dev profile already optimises dependencies.
cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
cargo_status=${PIPESTATUS[0]}
# Sum the per-binary `test result:` lines of cargo's harness.
read -r c_passed c_failed c_ignored < <(awk '/^test result:/ {
    for (i = 1; i <= NF; i++) {
      if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1); if ($(i) ~ /^ignored;?$/) g += $(i-1)
    }
  } END { print p+0, f+0, g+0 }' "$log")
if [ "$cargo_status" -ne 0 ] && [ "$c_failed" -eq 0 ]; then
  # A build error or a crashed test binary prints no failure count: never report it as green.
  c_failed=1
fi
[ "$cargo_status" -ne 0 ] && status=1
passed=$(( passed + c_passed )); failed=$(( failed + c_failed )); skipped=$(( skipped + c_ignored ))
phase_done "cargo test" "$t" "${c_passed} passed, ${c_failed} failed, ${c_ignored} ignored"

# --- 2. test dependencies -----------------------------------------------------------------------
t=$SECONDS
./scripts/setup-test-deps.sh
deps_status=$?
phase_done "setup-test-deps" "$t" "$([ "$deps_status" -eq 0 ] && echo ok || echo "FAILED (status $deps_status)")"

# --- 3. broker binary ---------------------------------------------------------------------------
t=$SECONDS
# --all-targets: the same feature set as `cargo test` above (dev-dependencies unify features),
# so the binary it already built is reused instead of DataFusion being compiled a second time.
cargo build --workspace --all-targets 2>&1 | tail -n 60
build_status=${PIPESTATUS[0]}
phase_done "cargo build" "$t" "$([ "$build_status" -eq 0 ] && echo ok || echo "FAILED (status $build_status)")"

# --- 4. Kafka client tests ----------------------------------------------------------------------
t=$SECONDS
if [ "$build_status" -ne 0 ] || [ ! -x .venv/bin/python ]; then
  echo "kafka client tests: not run ($([ "$build_status" -ne 0 ] && echo "cargo build failed" || echo "no .venv: setup-test-deps failed"))"
  failed=$(( failed + 1 )); status=1
  phase_done "kafka client tests" "$t" "not run"
else
  # Bounded: every wait inside the runner has its own timeout; this is the backstop.
  timeout --signal=TERM --kill-after=30 2400 \
    .venv/bin/python -u tests/kafka/run_kafka_tests.py --broker-bin target/debug/yottastore 2>&1 | tee "$klog"
  k_status=${PIPESTATUS[0]}
  summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$klog" | tail -n 1)
  k_passed=$(echo "$summary" | sed -nE 's/^([0-9]+) passed.*/\1/p'); k_passed=${k_passed:-0}
  k_failed=$(echo "$summary" | sed -nE 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/p'); k_failed=${k_failed:-0}
  k_skipped=$(echo "$summary" | sed -nE 's/.* ([0-9]+) skipped.*/\1/p'); k_skipped=${k_skipped:-0}
  if [ "$k_status" -ne 0 ] && [ "$k_failed" -eq 0 ]; then
    echo "kafka client tests: runner exited with status $k_status without counting a failure"
    k_failed=1
  fi
  [ "$k_status" -ne 0 ] && status=1
  passed=$(( passed + k_passed )); failed=$(( failed + k_failed )); skipped=$(( skipped + k_skipped ))
  phase_done "kafka client tests" "$t" "${k_passed} passed, ${k_failed} failed, ${k_skipped} skipped"
fi
if [ "$deps_status" -ne 0 ]; then
  # Missing dependencies also show up as failing client tests; count the setup itself too.
  failed=$(( failed + 1 )); status=1
fi

echo
echo "phase timings:"
printf '  %s\n' "${timings[@]}"
echo "suite took $(( SECONDS - started )) s"
[ "$failed" -gt 0 ] && status=1
echo "${passed} passed, ${failed} failed, ${skipped} skipped"
exit "$status"
