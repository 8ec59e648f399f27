#!/usr/bin/env bash
# `make bench-predictor`: throughput and latency of the predictor against a bare hyper server
# (the ceiling) on this machine, with wrk as the load generator on the same cores. Prints a
# markdown table; it is a benchmark, not a test, so it exits 0 whatever the numbers are
# (unless something fails to run).
#
# wrk runs one thread by default: with two, four busy threads share the two cores and the
# scheduler, not the server, sets the p99 (the bare ceiling server's p99 triples too).
#
# Knobs (env): BENCH_DURATION (s, default 10), BENCH_CONNECTIONS (64), BENCH_WRK_THREADS (1),
# BENCH_BATCH_CONNECTIONS (8), BENCH_BATCH_ROWS (1000).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
duration="${BENCH_DURATION:-10}"
conns="${BENCH_CONNECTIONS:-64}"
threads="${BENCH_WRK_THREADS:-1}"
batch_conns="${BENCH_BATCH_CONNECTIONS:-8}"
batch_rows="${BENCH_BATCH_ROWS:-1000}"

if ! command -v wrk >/dev/null 2>&1; then
  echo "bench: installing wrk (Debian package)" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq wrk >/dev/null
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq wrk >/dev/null
  fi
fi

echo "bench: building release binaries" >&2
cargo build --release -q -p predictor --bin predictor --example ceiling --example bench_model
bin="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release"

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# wait_for_addr LOG PATTERN: poll the log (deadline 30 s) for the bound address.
wait_for_addr() {
  local log="$1" sed_expr="$2" deadline=$((SECONDS + 30)) addr=""
  while [ -z "$addr" ]; do
    addr="$(sed -n "$sed_expr" "$log" | head -n1)"
    if [ -n "$addr" ]; then break; fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "bench: no listening address in $log:" >&2
      cat "$log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "$addr"
}

"$bin/examples/bench_model" "$work/wine/bench" bench >/dev/null

MODEL_URI="file://$work/wine/bench/" MODEL_NAME=wine PORT=0 BIND_ADDRESS=127.0.0.1 RUST_LOG=info SHUTDOWN_DRAIN_SECONDS=0 \
  "$bin/predictor" >"$work/predictor.log" 2>&1 &
predictor_pid=$!
pids+=("$predictor_pid")
predictor_addr="$(wait_for_addr "$work/predictor.log" 's/.*"addr":"\([^"]*\)".*/\1/p')"

"$bin/examples/ceiling" 127.0.0.1:0 >"$work/ceiling.log" 2>&1 &
ceiling_pid=$!
pids+=("$ceiling_pid")
ceiling_addr="$(wait_for_addr "$work/ceiling.log" 's/^listening on \(.*\)$/\1/p')"

# run_wrk NAME CONNECTIONS SCRIPT URL: one bounded wrk run; leaves its RESULT line in $work/NAME.
run_wrk() {
  local name="$1" c="$2" script="$3" url="$4"
  echo "bench: $name ($c connections, ${duration}s)" >&2
  BATCH_ROWS="$batch_rows" timeout $((duration + 30)) \
    wrk -t"$threads" -c"$c" -d"${duration}s" --timeout 5s -s "$script" "$url" >"$work/$name.out"
  grep '^RESULT' "$work/$name.out" >"$work/$name" || {
    cat "$work/$name.out" >&2
    exit 1
  }
}

# Warm both servers (connections, allocator, caches) before measuring.
BATCH_ROWS="$batch_rows" timeout 30 wrk -t"$threads" -c"$conns" -d2s -s predictor/bench/predict.lua \
  "http://$ceiling_addr/predict" >/dev/null
BATCH_ROWS="$batch_rows" timeout 30 wrk -t"$threads" -c"$conns" -d2s -s predictor/bench/predict.lua \
  "http://$predictor_addr/predict" >/dev/null

run_wrk ceiling "$conns" predictor/bench/predict.lua "http://$ceiling_addr/predict"
kill "$ceiling_pid" 2>/dev/null || true
run_wrk predict "$conns" predictor/bench/predict.lua "http://$predictor_addr/predict"
run_wrk v2batch "$batch_conns" predictor/bench/v2_batch.lua "http://$predictor_addr/v2/models/wine/infer"

rss_peak_kb="$(awk '/^VmHWM:/ {print $2}' "/proc/$predictor_pid/status")"
rss_now_kb="$(awk '/^VmRSS:/ {print $2}' "/proc/$predictor_pid/status")"

field() { sed -n "s/.*$2=\([0-9]*\).*/\1/p" "$work/$1"; }
rps() { awk -v r="$(field "$1" requests)" -v d="$(field "$1" duration_us)" 'BEGIN { printf "%.0f", r / (d / 1e6) }'; }
ms() { awk -v us="$(field "$1" "$2")" 'BEGIN { printf "%.2f", us / 1000 }'; }

ceiling_rps="$(rps ceiling)"
predict_rps="$(rps predict)"
batch_rps="$(rps v2batch)"
ratio="$(awk -v p="$predict_rps" -v c="$ceiling_rps" 'BEGIN { printf "%.2f", p / c }')"
rows_per_s="$(awk -v r="$batch_rps" -v n="$batch_rows" 'BEGIN { printf "%.0f", r * n }')"
predict_p99_us="$(field predict p99_us)"
verdict() { if awk "BEGIN { exit !($1) }"; then echo PASS; else echo FAIL; fi; }

cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo
echo "### predictor benchmark ($(nproc) cores, ${cpu:-unknown CPU}; wrk -t$threads, ${duration}s per run, same machine)"
echo
echo "| scenario | connections | requests/s | p50 ms | p99 ms | non-2xx / errors | goal | result |"
echo "|---|---:|---:|---:|---:|---:|---|---|"
echo "| ceiling: bare hyper, fixed body | $conns | $ceiling_rps | $(ms ceiling p50_us) | $(ms ceiling p99_us) | $(field ceiling non2xx) / $(field ceiling errors) | – | – |"
echo "| predictor: POST /predict, 1 row | $conns | $predict_rps | $(ms predict p50_us) | $(ms predict p99_us) | $(field predict non2xx) / $(field predict errors) | ≥ 25,000 req/s, p99 ≤ 5 ms | $(verdict "$predict_rps >= 25000 && $predict_p99_us <= 5000") |"
echo "| predictor ÷ ceiling | | $ratio | | | | ≥ 0.5 | $(verdict "$ratio >= 0.5") |"
echo "| v2 infer, $batch_rows-row FP64 tensor | $batch_conns | $batch_rps ($rows_per_s rows/s) | $(ms v2batch p50_us) | $(ms v2batch p99_us) | $(field v2batch non2xx) / $(field v2batch errors) | ≥ 1,000,000 rows/s | $(verdict "$rows_per_s >= 1000000") |"
echo "| predictor resident memory | | peak $((rss_peak_kb / 1024)) MiB, now $((rss_now_kb / 1024)) MiB | | | | ≤ 30 MB | $(verdict "$rss_peak_kb * 1024 <= 30000000") |"
