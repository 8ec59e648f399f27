"""Drives a running predictor with the real Triton HTTP client (tritonclient[http]).

Usage: python3 triton_client.py HOST:PORT ROWS.json

ROWS.json holds {"rows": [[...], ...]} (feature order). Every case is sent the way a user of
the client sends it; the results go to stdout as one JSON object, which the Rust test checks
against the model. The script itself only checks what the client reports about the framing
(binary or JSON outputs), so that a wrong framing fails loudly here with the client's own view.
"""

import json
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

MODEL = "wine"


def result(res, binary_expected):
    """Labels and probabilities from an InferResult, and how each output was framed."""
    out = {}
    for name in ("label", "probabilities"):
        meta = res.get_output(name)
        if meta is None:
            continue
        is_binary = "binary_data_size" in (meta.get("parameters") or {})
        want = binary_expected[name]
        if is_binary != want:
            raise SystemExit(f"output {name}: binary={is_binary}, expected binary={want}: {meta}")
        arr = res.as_numpy(name)
        if name == "label":
            out[name] = [x.decode() if isinstance(x, bytes) else str(x) for x in arr.tolist()]
        else:
            out[name] = arr.tolist()
        out[name + "_shape"] = list(arr.shape)
    return out


def main():
    addr, rows_path = sys.argv[1], sys.argv[2]
    with open(rows_path) as f:
        rows = np.array(json.load(f)["rows"], dtype=np.float64)
    n, k = rows.shape
    client = httpclient.InferenceServerClient(url=addr, connection_timeout=10, network_timeout=30)
    report = {
        "live": client.is_server_live(),
        "ready": client.is_model_ready(MODEL),
        "extensions": client.get_server_metadata().get("extensions", []),
        "inputs": client.get_model_metadata(MODEL)["inputs"],
    }

    def infer(arr, datatype, outputs=None, binary_inputs=True, request_id=""):
        inp = httpclient.InferInput("input-0", list(arr.shape), datatype)
        inp.set_data_from_numpy(arr, binary_data=binary_inputs)
        return client.infer(MODEL, [inp], outputs=outputs, request_id=request_id)

    both = {"label": True, "probabilities": True}
    neither = {"label": False, "probabilities": False}

    # 1. The client's defaults: binary FP64 input, no outputs named -> binary_data_output.
    res = infer(rows, "FP64", request_id="bin-1")
    report["fp64_binary"] = result(res, both)
    report["fp64_binary"]["id"] = res.get_response().get("id")

    # 2. FP32 binary input, outputs requested as JSON.
    outs = [httpclient.InferRequestedOutput("label", binary_data=False),
            httpclient.InferRequestedOutput("probabilities", binary_data=False)]
    report["fp32_binary_json_out"] = result(infer(rows.astype(np.float32), "FP32", outs), neither)

    # 3. JSON input, only the probabilities, binary.
    outs = [httpclient.InferRequestedOutput("probabilities", binary_data=True)]
    report["fp64_json_in_binary_proba"] = result(
        infer(rows, "FP64", outs, binary_inputs=False), {"probabilities": True})

    # 4. Integer and BOOL tensors (binary), labels only as binary.
    outs = [httpclient.InferRequestedOutput("label", binary_data=True)]
    report["int64_binary"] = result(
        infer(np.floor(rows).astype(np.int64), "INT64", outs), {"label": True})
    report["uint8_binary"] = result(
        infer(np.floor(rows).clip(0, 255).astype(np.uint8), "UINT8", outs), {"label": True})
    report["int16_binary"] = result(
        infer(np.floor(rows).astype(np.int16), "INT16", outs), {"label": True})
    report["bool_binary"] = result(
        infer(np.floor(rows).astype(np.int64) % 2 == 1, "BOOL", outs), {"label": True})

    # 5. Errors come back as the client's exception with our message and a 4xx status.
    errors = {}
    try:
        infer(rows[:, :-1].copy(), "FP64")
    except InferenceServerException as e:
        errors["wrong_shape"] = {"status": str(e.status()), "message": e.message()}
    try:
        infer(rows.astype(np.float16), "FP16")
    except InferenceServerException as e:
        errors["fp16"] = {"status": str(e.status()), "message": e.message()}
    report["errors"] = errors
    report["rows"] = n
    report["features"] = k
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
