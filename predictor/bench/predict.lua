-- wrk script: single-row POST /predict (the original API's request), as old clients send it.
-- Usage: wrk -t2 -c64 -d10s -s predictor/bench/predict.lua http://127.0.0.1:8080/predict
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"fixed_acidity":7.4,"volatile_acidity":0.7,"citric_acid":0.0,"residual_sugar":1.9,' ..
  '"chlorides":0.076,"free_sulfur_dioxide":11.0,"total_sulfur_dioxide":34.0,"density":0.9978,' ..
  '"ph":3.51,"sulphates":0.56,"alcohol":9.4}'

-- One machine-readable line for predictor/bench/run.sh (latency in microseconds).
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
