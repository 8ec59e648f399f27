#!/usr/bin/env bash
# Runs the workspace's test binaries as parallel jobs, longest first, printing each job as it
# ends (a failed job with its whole output). One `cargo test --workspace --all-targets --no-run`
# builds them all, together with the binaries the test images carry, and clippy lints the
# workspace's own crates in that same build (`-D warnings`, as `cargo clippy --all-targets`
# would, through the RUSTC_WORKSPACE_WRAPPER and CLIPPY_ARGS that `cargo clippy` itself sets):
# nothing is compiled twice, the dependencies not even checked twice.
#
#   tests/run-tests.sh unit     every test binary but the cluster suites, a job per binary, then
#                               the doc tests
#   tests/run-tests.sh cluster [SUITE...]
#                               every test of the cluster suites (champion-tests; or of the
#                               suites named, e.g. faults_e2e), a job per test, against the
#                               running local cluster
#   tests/run-tests.sh exec SUITE ARGS...
#                               one suite's binary, as `cargo test --test SUITE -- ARGS` would
#   tests/run-tests.sh build    only the build
#
# JOBS jobs at once (unit 2, cluster 6). Order: longest first, by the durations of the last run
# in $CHAMPION_CACHE/test-times/<mode>.tsv; tests not timed before go first. A cluster suite that
# deploys no Stage holds the cluster's tests lock shared for the whole process (flock(1)), as a
# Stage does (tests/src/operator.rs): the test that restarts the API server holds it exclusive,
# so nothing else touches the cluster meanwhile. Exit status 1 when any job failed.
set -uo pipefail
cd "$(dirname "$0")/.."

mode=${1:-}
shift || true
case "$mode" in
  unit) jobs=${JOBS:-2} ;;
  cluster) jobs=${JOBS:-6} ;;
  build | exec) ;;
  *) echo "usage: $0 unit | cluster [SUITE...] | exec SUITE ARGS... | build" >&2; exit 2 ;;
esac
cache=${CHAMPION_CACHE:-$HOME/.cache/champion}
tests_lock=/run/champion-cluster/tests.lock

work=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Every cargo command below builds with clippy, so none rebuilds what another built.
clippy=$(command -v clippy-driver) || {
  echo "clippy-driver not found: install clippy (rustup component add clippy)" >&2
  exit 2
}
export RUSTC_WORKSPACE_WRAPPER=$clippy CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"

# The build: one line per test executable, "package<TAB>target<TAB>package dir<TAB>executable";
# benches and examples are built (and linted) but not run.
cargo test --workspace --all-targets --no-run --message-format=json-render-diagnostics >"$work/build.json" || exit 1
python3 - "$work/build.json" >"$work/executables" <<'PY' || exit 1
import json, os, sys
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable") or not m["profile"]["test"]:
        continue
    if "bench" in m["target"]["kind"] or "example" in m["target"]["kind"]:
        continue
    # "path+file:///src/crates/model#champion-model@0.1.0", or "...#0.1.0" when the directory
    # has the package's name.
    url, _, frag = m["package_id"].partition("#")
    pkg = frag.split("@")[0] if "@" in frag else url.rstrip("/").rsplit("/", 1)[-1]
    name = m["target"]["name"]
    print("\t".join([pkg, name, os.path.dirname(m["manifest_path"]), m["executable"]]))
PY
[ "$mode" = build ] && exit 0
if [ "$mode" = exec ]; then
  suite=${1:?exec needs a suite name}
  shift
  IFS=$'\t' read -r _ _ dir exe < <(awk -F'\t' -v s="$suite" '$1 == "champion-tests" && $2 == s' "$work/executables")
  [ -n "${exe:-}" ] || { echo "no cluster suite named $suite (tests/tests/$suite.rs)" >&2; exit 2; }
  cd "$dir" && CARGO_MANIFEST_DIR=$dir "$exe" "$@"
  exit $?
fi
only=" $* "

# The jobs: "key<TAB>package dir<TAB>executable<TAB>lock<TAB>exact test name or empty".
: >"$work/jobs"
while IFS=$'\t' read -r pkg target dir exe; do
  if [ "$mode" = unit ]; then
    [ "$pkg" = champion-tests ] && continue
    printf '%s\t%s\t%s\t-\t\n' "$pkg::$target" "$dir" "$exe" >>"$work/jobs"
    continue
  fi
  [ "$pkg" = champion-tests ] || continue
  [ "$only" = "  " ] || [[ "$only" == *" $target "* ]] || continue
  lock=-
  src="$dir/tests/$target.rs"
  if [ -f "$src" ] && ! grep -q 'Stage::deploy' "$src"; then lock=shared; fi
  (cd "$dir" && "$exe" --list --format terse --ignored 2>/dev/null) | sed -n 's/: test$//p' | sort >"$work/ignored"
  (cd "$dir" && "$exe" --list --format terse 2>/dev/null) | sed -n 's/: test$//p' | sort |
    comm -23 - "$work/ignored" | while IFS= read -r t; do
      printf '%s\t%s\t%s\t%s\t%s\n' "$target::$t" "$dir" "$exe" "$lock" "$t"
    done >>"$work/jobs"
done <"$work/executables"

# Longest first by the last run's durations; unknown ones first of all.
times="$cache/test-times/$mode.tsv"
mkdir -p "$(dirname "$times")"
touch "$times"
awk -F'\t' 'FILENAME == ARGV[1] { t[$1] = $2; next } { print (($1 in t) ? t[$1] : 1e9) "\t" $0 }' \
  "$times" "$work/jobs" | sort -s -t$'\t' -k1,1gr | cut -f2- >"$work/queue"
total=$(wc -l <"$work/queue")
echo "run-tests $mode: $total jobs, $jobs at a time"

run_job() { # run_job DIR EXE LOCK TEST LOG
  local dir=$1 exe=$2 lock=$3 test=$4 log=$5
  local cmd=("$exe")
  [ -n "$test" ] && cmd+=(--exact "$test" --test-threads=1)
  [ "$lock" = shared ] && cmd=(flock --shared "$tests_lock" "${cmd[@]}")
  cd "$dir" && CARGO_MANIFEST_DIR=$dir exec setsid "${cmd[@]}" >"$log" 2>&1
}

declare -A job_key job_start job_log
started=$SECONDS
failed=()
passed=0
finish_one() {
  local done_pid rc key secs p rest=()
  wait -n -p done_pid "${pids[@]}"
  rc=$?
  key=${job_key[$done_pid]}
  secs=$((SECONDS - ${job_start[$done_pid]}))
  for p in "${pids[@]}"; do [ "$p" = "$done_pid" ] || rest+=("$p"); done
  pids=("${rest[@]}")
  printf '%s\t%s\n' "$key" "$secs" >>"$work/times"
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
    printf '  ok   %4d s  %s\n' "$secs" "$key"
  else
    failed+=("$key")
    printf '  FAIL %4d s  %s (exit %d)\n' "$secs" "$key" "$rc"
    sed 's/^/      | /' "${job_log[$done_pid]}"
  fi
}

n=0
while IFS=$'\t' read -r key dir exe lock test; do
  while [ "${#pids[@]}" -ge "$jobs" ]; do finish_one; done
  n=$((n + 1))
  run_job "$dir" "$exe" "$lock" "$test" "$work/log.$n" &
  pids+=($!)
  job_key[$!]=$key
  job_start[$!]=$SECONDS
  job_log[$!]=$work/log.$n
done <"$work/queue"
while [ "${#pids[@]}" -gt 0 ]; do finish_one; done

# Keep the durations for the next run's order: this run's first, then older ones.
cat "$work/times" "$times" 2>/dev/null | awk -F'\t' '!seen[$1]++' >"$times.partial" && mv "$times.partial" "$times"

status=0
if [ "$mode" = unit ]; then
  # The whole workspace's doc tests (none needs the cluster): the same selection as the build.
  cargo test --workspace --doc -q >"$work/doc" 2>&1 || {
    echo "  FAIL doc tests"
    sed 's/^/      | /' "$work/doc"
    status=1
  }
fi
echo "run-tests $mode: $passed passed, ${#failed[@]} failed, in $((SECONDS - started)) s"
for k in "${failed[@]}"; do echo "  failed: $k"; done
[ "${#failed[@]}" -eq 0 ] || status=1
exit $status
