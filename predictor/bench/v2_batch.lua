-- wrk script: Open Inference Protocol v2 inference with a 1,000-row FP64 tensor per request.
-- Usage: wrk -t2 -c8 -d10s -s predictor/bench/v2_batch.lua http://127.0.0.1:8080/v2/models/NAME/infer
local rows = tonumber(os.getenv("BATCH_ROWS") or "1000")
local base = {7.4, 0.7, 0.0, 1.9, 0.076, 11.0, 34.0, 0.9978, 3.51, 0.56, 9.4}
local data = {}
for r = 1, rows do
  for f = 1, #base do
    -- Deterministic spread around a real wine row so the stumps split both ways.
    data[#data + 1] = string.format("%.4f", base[f] * (0.7 + ((r * 7 + f * 13) % 61) / 100))
  end
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"id":"bench","inputs":[{"name":"input-0","shape":[' .. rows .. ',' .. #base ..
  '],"datatype":"FP64","data":[' .. table.concat(data, ",") .. ']}]}'

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
