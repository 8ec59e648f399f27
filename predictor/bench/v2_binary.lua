-- wrk script: Open Inference Protocol v2 inference with the binary tensor data extension, as the
-- Triton client sends it by default (set_data_from_numpy binary_data=True, no outputs named, so
-- binary_data_output): a JSON inference header, then the rows as raw little-endian FP64; the
-- answer is a JSON header plus binary label and probability tensors.
-- The body is written by predictor/bench/run.sh (the same rows as v2_batch.lua) because wrk's
-- LuaJIT has no float packing.
-- Usage: BODY_FILE=body.bin HEADER_LEN=123 wrk -t1 -c8 -d10s -s predictor/bench/v2_binary.lua \
--   http://127.0.0.1:8080/v2/models/NAME/infer
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["Inference-Header-Content-Length"] = os.getenv("HEADER_LEN")
wrk.body = f:read("*a")
f:close()

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
