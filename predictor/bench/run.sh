#!/usr/bin/env bash
# `make bench-predictor`: throughput and latency of the predictor against a bare hyper server
# (the ceiling) on this machine, with wrk as the load generator on the same cores. Prints a
# markdown table; it is a benchmark, not a test, so it exits 0 whatever the numbers are
# (unless something fails to run).
#
# wrk runs one thread by default, and for the single-row runs, where wrk keeps a core busy,
# the servers get the remaining cores as worker threads (WORKER_THREADS = cores - wrk threads,
# at least 1): on 2 cores, wrk and one server thread each keep a core. The batch run, where wrk
# is nearly idle, gets every core. With more busy threads than cores the scheduler, not the server, sets the
# p99: measured here (load average 2.3-2.6, 4 interleaved runs each), 1 worker thread gave
# p99 3.5-4.7 ms at 34-44k req/s, 2 worker threads 5.7-6.5 ms at 30-35k req/s; wrk -t2
# made it worse again (6.8-8.4 ms). In a pod the load generator is elsewhere, so the
# predictor's own default stays one worker per core.
#
# Other engineers' builds share these cores: the load average is printed with every run.
#
# Drift tracking's cost (issue 15: within 5 %): two predictors of the same model (it has a
# driftReference), DRIFT_TRACKING=on and off, measured in BENCH_DRIFT_ROUNDS alternating
# single-row /predict runs each (so a burst of other load hits both alike); the table shows the
# median of each and their ratio.
#
# Knobs (env): BENCH_DURATION (s, default 10), BENCH_CONNECTIONS (64), BENCH_WRK_THREADS (1),
# BENCH_WORKER_THREADS (cores - wrk threads, min 1), BENCH_BATCH_WORKER_THREADS (cores),
# BENCH_BATCH_CONNECTIONS (8), BENCH_BATCH_ROWS (1000), BENCH_DRIFT_ROUNDS (3),
# BENCH_DRIFT_DURATION (s, default BENCH_DURATION).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
duration="${BENCH_DURATION:-10}"
conns="${BENCH_CONNECTIONS:-64}"
threads="${BENCH_WRK_THREADS:-1}"
batch_conns="${BENCH_BATCH_CONNECTIONS:-8}"
batch_rows="${BENCH_BATCH_ROWS:-1000}"
workers="${BENCH_WORKER_THREADS:-$(($(nproc) - threads))}"
if [ "$workers" -lt 1 ]; then workers=1; fi
batch_workers="${BENCH_BATCH_WORKER_THREADS:-$(nproc)}"
drift_rounds="${BENCH_DRIFT_ROUNDS:-3}"
drift_duration="${BENCH_DRIFT_DURATION:-$duration}"

if ! command -v wrk >/dev/null 2>&1; then
  echo "bench: installing wrk (Debian package)" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq wrk >/dev/null
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq wrk >/dev/null
  fi
fi

echo "bench: building release binaries" >&2
cargo build --release -q -p predictor --bin predictor --example ceiling --example bench_model --example drift_cost
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

# start_predictor NAME WORKERS [DRIFT_TRACKING]: the predictor on a free port; sets ${NAME}_pid
# and ${NAME}_addr.
start_predictor() {
  local name="$1" w="$2" drift="${3:-on}" pid
  : >"$work/$name.log"
  DRIFT_TRACKING="$drift" WORKER_THREADS="$w" MODEL_URI="file://$work/wine/bench/" MODEL_NAME=wine PORT=0 BIND_ADDRESS=127.0.0.1 RUST_LOG=info SHUTDOWN_DRAIN_SECONDS=0 \
    "$bin/predictor" >"$work/$name.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  printf -v "${name}_pid" '%s' "$pid"
  printf -v "${name}_addr" '%s' "$(wait_for_addr "$work/$name.log" 's/.*"addr":"\([^"]*\)".*/\1/p')"
}

# rss_kb PID FIELD: VmHWM (peak) or VmRSS (now) of a running process, in KiB.
rss_kb() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }

start_predictor single "$workers"
WORKER_THREADS="$workers" "$bin/examples/ceiling" 127.0.0.1:0 >"$work/ceiling.log" 2>&1 &
ceiling_pid=$!
pids+=("$ceiling_pid")
ceiling_addr="$(wait_for_addr "$work/ceiling.log" 's/^listening on \(.*\)$/\1/p')"

# run_wrk NAME CONNECTIONS SCRIPT URL [SECONDS]: one bounded wrk run; leaves its RESULT line in
# $work/NAME.
run_wrk() {
  local name="$1" c="$2" script="$3" url="$4" d="${5:-$duration}"
  echo "bench: $name ($c connections, ${d}s)" >&2
  cut -d' ' -f1 /proc/loadavg >"$work/$name.load"
  BATCH_ROWS="$batch_rows" timeout $((d + 30)) \
    wrk -t"$threads" -c"$c" -d"${d}s" --timeout 5s -s "$script" "$url" >"$work/$name.out"
  grep '^RESULT' "$work/$name.out" >"$work/$name" || {
    cat "$work/$name.out" >&2
    exit 1
  }
}

# Warm both servers (connections, allocator, caches) before measuring.
BATCH_ROWS="$batch_rows" timeout 30 wrk -t"$threads" -c"$conns" -d2s -s predictor/bench/predict.lua \
  "http://$ceiling_addr/predict" >/dev/null
BATCH_ROWS="$batch_rows" timeout 30 wrk -t"$threads" -c"$conns" -d2s -s predictor/bench/predict.lua \
  "http://$single_addr/predict" >/dev/null

run_wrk ceiling "$conns" predictor/bench/predict.lua "http://$ceiling_addr/predict"
kill "$ceiling_pid" 2>/dev/null || true
run_wrk predict "$conns" predictor/bench/predict.lua "http://$single_addr/predict"
single_peak_kb="$(rss_kb "$single_pid" VmHWM)"
kill "$single_pid" 2>/dev/null || true

# Drift tracking on and off, alternating rounds on two otherwise identical predictors.
start_predictor drift_on "$workers" on
start_predictor drift_off "$workers" off
for side in on off; do
  addr_var="drift_${side}_addr"
  timeout 30 wrk -t"$threads" -c"$conns" -d2s -s predictor/bench/predict.lua \
    "http://${!addr_var}/predict" >/dev/null
done
for round in $(seq 1 "$drift_rounds"); do
  run_wrk "drift_on_$round" "$conns" predictor/bench/predict.lua "http://$drift_on_addr/predict" "$drift_duration"
  run_wrk "drift_off_$round" "$conns" predictor/bench/predict.lua "http://$drift_off_addr/predict" "$drift_duration"
done
# The "on" predictor must really have counted the rows, the "off" one must export no drift.
drift_check="$(python3 - "http://$drift_on_addr/metrics" "http://$drift_off_addr/metrics" <<'PY'
import sys, urllib.request
on = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
off = urllib.request.urlopen(sys.argv[2], timeout=10).read().decode()
rows = [l.split()[1] for l in on.splitlines() if l.startswith("predictor_drift_rows_total ")]
print("ok" if rows and float(rows[0]) > 0 and "predictor_drift" not in off else "bad")
PY
)"
if [ "$drift_check" != ok ]; then
  echo "bench: DRIFT_TRACKING on/off predictors do not behave as expected" >&2
  exit 1
fi
kill "$drift_on_pid" "$drift_off_pid" 2>/dev/null || true
# The same cost in-process, free of load-generator noise: ns per counted row.
drift_ns="$("$bin/examples/drift_cost" | sed -n 's/^RESULT ns_per_row=\([0-9.]*\).*/\1/p')"

# The batch run is a throughput test with few requests, so wrk hardly uses its core: the
# predictor gets every core, as in a pod.
start_predictor batch "$batch_workers"
BATCH_ROWS="$batch_rows" timeout 30 wrk -t"$threads" -c"$batch_conns" -d2s -s predictor/bench/v2_batch.lua \
  "http://$batch_addr/v2/models/wine/infer" >/dev/null
run_wrk v2batch "$batch_conns" predictor/bench/v2_batch.lua "http://$batch_addr/v2/models/wine/infer"

# The same rows with the binary tensor data extension, framed as tritonclient frames them:
# the JSON header names binary_data_size, raw little-endian FP64 follows, and
# binary_data_output asks for binary outputs. v2_batch.lua's formula, row for row.
header_len="$(python3 - "$batch_rows" "$work/v2_binary.body" <<'PY'
import json, struct, sys
rows, out = int(sys.argv[1]), sys.argv[2]
base = [7.4, 0.7, 0.0, 1.9, 0.076, 11.0, 34.0, 0.9978, 3.51, 0.56, 9.4]
data = [float("%.4f" % (base[f - 1] * (0.7 + ((r * 7 + f * 13) % 61) / 100)))
        for r in range(1, rows + 1) for f in range(1, len(base) + 1)]
raw = struct.pack("<%dd" % len(data), *data)
header = json.dumps({"id": "bench", "inputs": [{"name": "input-0", "shape": [rows, len(base)],
    "datatype": "FP64", "parameters": {"binary_data_size": len(raw)}}],
    "parameters": {"binary_data_output": True}}, separators=(",", ":")).encode()
with open(out, "wb") as f:
    f.write(header + raw)
print(len(header))
PY
)"
export BODY_FILE="$work/v2_binary.body" HEADER_LEN="$header_len"
# The answer must be the binary framing, not a JSON error.
probe="$(python3 - "http://$batch_addr/v2/models/wine/infer" <<'PY'
import os, sys, urllib.request
body = open(os.environ["BODY_FILE"], "rb").read()
req = urllib.request.Request(sys.argv[1], data=body, method="POST", headers={
    "Content-Type": "application/octet-stream",
    "Inference-Header-Content-Length": os.environ["HEADER_LEN"]})
with urllib.request.urlopen(req, timeout=10) as r:
    print(r.status, r.headers.get("Inference-Header-Content-Length") is not None)
PY
)"
if [ "$probe" != "200 True" ]; then
  echo "bench: the binary v2 request was not answered with binary framing: $probe" >&2
  exit 1
fi
timeout 30 wrk -t"$threads" -c"$batch_conns" -d2s -s predictor/bench/v2_binary.lua \
  "http://$batch_addr/v2/models/wine/infer" >/dev/null
run_wrk v2binary "$batch_conns" predictor/bench/v2_binary.lua "http://$batch_addr/v2/models/wine/infer"
batch_peak_kb="$(rss_kb "$batch_pid" VmHWM)"
rss_now_kb="$(rss_kb "$batch_pid" VmRSS)"
rss_peak_kb=$((single_peak_kb > batch_peak_kb ? single_peak_kb : batch_peak_kb))

field() { sed -n "s/.*$2=\([0-9]*\).*/\1/p" "$work/$1"; }
rps() { awk -v r="$(field "$1" requests)" -v d="$(field "$1" duration_us)" 'BEGIN { printf "%.0f", r / (d / 1e6) }'; }
ms() { awk -v us="$(field "$1" "$2")" 'BEGIN { printf "%.2f", us / 1000 }'; }

ceiling_rps="$(rps ceiling)"
predict_rps="$(rps predict)"
batch_rps="$(rps v2batch)"
binary_rps="$(rps v2binary)"
binary_rows_per_s="$(awk -v r="$binary_rps" -v n="$batch_rows" 'BEGIN { printf "%.0f", r * n }')"
binary_speedup="$(awk -v b="$binary_rps" -v j="$batch_rps" 'BEGIN { printf "%.2f", b / j }')"
ratio="$(awk -v p="$predict_rps" -v c="$ceiling_rps" 'BEGIN { printf "%.2f", p / c }')"
rows_per_s="$(awk -v r="$batch_rps" -v n="$batch_rows" 'BEGIN { printf "%.0f", r * n }')"
predict_p99_us="$(field predict p99_us)"
# median_rps PREFIX: the median requests/s of the runs $work/PREFIX_1.. (and its p99 in ms).
median_rps() {
  for r in $(seq 1 "$drift_rounds"); do echo "$(rps "$1_$r") $(field "$1_$r" p99_us)"; done |
    sort -n | awk '{ v[NR] = $1; p[NR] = $2 } END { m = int((NR + 1) / 2); printf "%s %.2f", v[m], p[m] / 1000 }'
}
read -r drift_on_rps drift_on_p99 <<<"$(median_rps drift_on)"
read -r drift_off_rps drift_off_p99 <<<"$(median_rps drift_off)"
drift_all_on="$(for r in $(seq 1 "$drift_rounds"); do printf '%s ' "$(rps "drift_on_$r")"; done)"
drift_all_off="$(for r in $(seq 1 "$drift_rounds"); do printf '%s ' "$(rps "drift_off_$r")"; done)"
drift_failed() {
  for r in $(seq 1 "$drift_rounds"); do echo "$(field "$1_$r" non2xx) $(field "$1_$r" errors)"; done |
    awk '{ n += $1; e += $2 } END { printf "%d / %d", n, e }'
}
drift_ratio="$(awk -v a="$drift_on_rps" -v b="$drift_off_rps" 'BEGIN { printf "%.3f", a / b }')"
verdict() { if awk "BEGIN { exit !($1) }"; then echo PASS; else echo FAIL; fi; }

cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo
echo "### predictor benchmark ($(nproc) cores, ${cpu:-unknown CPU}; wrk -t$threads, ${duration}s per run, same machine)"
echo
echo "| scenario | server threads | connections | requests/s | p50 ms | p99 ms | non-2xx / errors | load avg at start | goal | result |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"
echo "| ceiling: bare hyper, fixed body | $workers | $conns | $ceiling_rps | $(ms ceiling p50_us) | $(ms ceiling p99_us) | $(field ceiling non2xx) / $(field ceiling errors) | $(cat "$work/ceiling.load") | – | – |"
echo "| predictor: POST /predict, 1 row | $workers | $conns | $predict_rps | $(ms predict p50_us) | $(ms predict p99_us) | $(field predict non2xx) / $(field predict errors) | $(cat "$work/predict.load") | ≥ 25,000 req/s, p99 ≤ 5 ms | $(verdict "$predict_rps >= 25000 && $predict_p99_us <= 5000") |"
echo "| predictor ÷ ceiling | | | $ratio | | | | | ≥ 0.5 | $(verdict "$ratio >= 0.5") |"
echo "| POST /predict, 1 row, DRIFT_TRACKING=on (median of $drift_rounds: ${drift_all_on% }) | $workers | $conns | $drift_on_rps | | $drift_on_p99 | $(drift_failed drift_on) | $(cat "$work/drift_on_1.load") | – | – |"
echo "| POST /predict, 1 row, DRIFT_TRACKING=off (median of $drift_rounds: ${drift_all_off% }) | $workers | $conns | $drift_off_rps | | $drift_off_p99 | $(drift_failed drift_off) | $(cat "$work/drift_off_1.load") | – | – |"
echo "| drift on ÷ off | | | $drift_ratio | | | | | ≥ 0.95 | $(verdict "$drift_ratio >= 0.95") |"
drift_share="$(awk -v ns="$drift_ns" -v r="$drift_off_rps" -v w="$workers" 'BEGIN { printf "%.2f", 100 * ns * r / (w * 1e9) }')"
echo "| drift counting in-process: ns per row (11 features) | 1 | | $drift_ns ns ($drift_share % of a worker's time per request at the off rate) | | | | | – | – |"
echo "| v2 infer, $batch_rows-row FP64 tensor, JSON in and out | $batch_workers | $batch_conns | $batch_rps ($rows_per_s rows/s) | $(ms v2batch p50_us) | $(ms v2batch p99_us) | $(field v2batch non2xx) / $(field v2batch errors) | $(cat "$work/v2batch.load") | ≥ 1,000,000 rows/s | $(verdict "$rows_per_s >= 1000000") |"
echo "| v2 infer, the same rows as binary tensor data in and out | $batch_workers | $batch_conns | $binary_rps ($binary_rows_per_s rows/s) | $(ms v2binary p50_us) | $(ms v2binary p99_us) | $(field v2binary non2xx) / $(field v2binary errors) | $(cat "$work/v2binary.load") | ≥ 1,000,000 rows/s | $(verdict "$binary_rows_per_s >= 1000000") |"
echo "| binary ÷ JSON ($batch_rows-row batch) | | | $binary_speedup | | | | | – | – |"
echo "| predictor resident memory | | | peak $((rss_peak_kb / 1024)) MiB, now $((rss_now_kb / 1024)) MiB | | | | | ≤ 30 MB | $(verdict "$rss_peak_kb * 1024 <= 30000000") |"
echo
echo "load average (1, 5, 15 min) at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
