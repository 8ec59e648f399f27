#!/usr/bin/env bash
# The cluster suites of champion-tests (tests/tests/*.rs), run against the running local cluster
# in two lanes at once, each one `cargo test --test-threads=2`:
#   lane 1: faults_e2e, whose API server restart holds the cluster's tests lock exclusive, then
#           every suite that deploys no Stage (cluster pieces and safety, charts, examples): those
#           hold no lock, so they run only after the restart is over;
#   lane 2: every other suite that deploys a Stage; a Stage holds the tests lock shared, so these
#           wait out the restart (tests/src/operator.rs, Stage::deploy_alone).
# Each lane's output is printed when the lane ends; the exit status is 1 when any test failed.
set -uo pipefail
cd "$(dirname "$0")/.."

lane1=(--lib --test faults_e2e)
lane2=()
for f in tests/tests/*.rs; do
  name=$(basename "$f" .rs)
  [ "$name" = faults_e2e ] && continue
  if grep -q 'Stage::deploy' "$f"; then lane2+=(--test "$name"); else lane1+=(--test "$name"); fi
done

# Build once, so the two lanes do not wait on each other for cargo's build lock.
cargo test -p champion-tests --tests --no-run || exit 1

logs=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  rm -rf "$logs"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

run_lane() {
  local n=$1
  shift
  cargo test --no-fail-fast -p champion-tests "$@" -- --test-threads=2 >"$logs/$n" 2>&1
}
started=$SECONDS
run_lane 1 "${lane1[@]}" &
pids+=($!)
run_lane 2 "${lane2[@]}" &
pids+=($!)
echo "cluster suites: lane 1 (${lane1[*]}) and lane 2 (${lane2[*]}) running"

status=0
for _ in 1 2; do
  wait -n -p done_pid "${pids[@]}"
  rc=$?
  for i in 0 1; do
    if [ "${pids[$i]}" = "$done_pid" ]; then lane=$((i + 1)); fi
  done
  echo "===== cluster suites, lane $lane: exit $rc after $((SECONDS - started)) s ====="
  cat "$logs/$lane"
  [ "$rc" -eq 0 ] || status=1
done
pids=()
cargo test -p champion-tests --doc -q || status=1
exit $status
