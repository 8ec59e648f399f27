"""Locust load test for a champion predictor Service.

The original system was load-tested with Locust; this file drives the same single-row
``POST /predict`` plus the KServe v1 and Open Inference Protocol v2 routes, and checks every
answer (status, label, model version), so a wrong answer counts as a failure, not a success.

    pip install locust
    locust -f predictor/loadtest/locustfile.py --headless -u 10 -r 10 -t 30s \
        --host http://wine-predictor.default.svc:8080

Environment:
    MODEL_NAME      name in /v1 and /v2 URLs; default: asked from the first v2 metadata call
                    that answers (tries "model" and the pipeline names in MODEL_NAME_CANDIDATES)
    PREDICT_CSV     optional CSV with a header of feature names (e.g. the wine test set);
                    rows are sent in turn. Default: three built-in wine rows.
    LOAD_MODE       which traffic to send (default predict):
                    predict   the mix above;
                    feedback  replays PREDICT_CSV with its labels: each prediction (one row, or
                              a list of 10 rows one time in ten) is followed by POST /feedback
                              with the x-request-id the answer carried and the true label(s),
                              on the same session, so the same keep-alive connection and the
                              same predictor pod (ground truth for the online F1 / accuracy);
                    shifted   single-row predictions of rows moved by SHIFT_STDS standard
                              deviations on every feature (drift: predictor_feature_psi rises).
    TARGET          feedback mode: the label column of PREDICT_CSV (default quality)
    POSITIVE_ABOVE  feedback mode: the pipeline's positiveAbove, when it binarised the target:
                    the label sent is "1" above it, "0" otherwise. Without it the column's value
                    is sent as a number (the predictor matches it to a numeric class label).
    SHIFT_STDS      shifted mode: how many standard deviations each feature moves (default 3)

The wine test set with its labels, without anything beside the repository:

    cargo run -q -p trainer-job -- dataset wine --out /tmp/wine
    LOAD_MODE=feedback POSITIVE_ABOVE=5 PREDICT_CSV=/tmp/wine/test_data.csv \
        locust -f predictor/loadtest/locustfile.py --headless -u 4 -r 4 -t 60s --host http://...
"""

import csv
import itertools
import json
import os
import re

from locust import HttpUser, between, events, task

FEATURES = [
    "fixed_acidity", "volatile_acidity", "citric_acid", "residual_sugar", "chlorides",
    "free_sulfur_dioxide", "total_sulfur_dioxide", "density", "ph", "sulphates", "alcohol",
]
BUILTIN_ROWS = [
    [7.4, 0.7, 0.0, 1.9, 0.076, 11.0, 34.0, 0.9978, 3.51, 0.56, 9.4],
    [7.2, 0.38, 0.3, 1.8, 0.073, 31.0, 70.0, 0.99685, 3.42, 0.59, 9.5],
    [8.7, 0.42, 0.45, 2.4, 0.072, 32.0, 59.0, 0.99617, 3.33, 0.77, 12.0],
]


MODE = os.environ.get("LOAD_MODE", "predict").strip().lower()
if MODE not in ("predict", "feedback", "shifted"):
    raise SystemExit(f"LOAD_MODE={MODE!r}: expected predict, feedback or shifted")


def normalise(name):
    # The predictor normalises names the same way ("Fixed Acidity" == "fixed_acidity").
    return re.sub(r"[\s_-]+", "_", name.strip().lower()).strip("_")


def load_records():
    path = os.environ.get("PREDICT_CSV")
    if not path:
        return [dict(zip(FEATURES, r)) for r in BUILTIN_ROWS]
    with open(path, newline="") as f:
        return [{normalise(k): v for k, v in rec.items()} for rec in csv.DictReader(f)]


RECORDS = load_records()
ROWS = [{f: float(r[f]) for f in FEATURES} for r in RECORDS]


def true_label(record):
    """The label feedback sends for a CSV record: "1"/"0" against POSITIVE_ABOVE, else the
    target value as a number."""
    target = normalise(os.environ.get("TARGET", "quality"))
    if target not in record:
        raise SystemExit(f"feedback mode needs PREDICT_CSV with a {target!r} column (TARGET)")
    value = float(record[target])
    above = os.environ.get("POSITIVE_ABOVE")
    if above:
        return "1" if value > float(above) else "0"
    return int(value) if value == int(value) else value


def shifted_rows():
    """Every row moved by SHIFT_STDS standard deviations (of the rows themselves) per feature."""
    k = float(os.environ.get("SHIFT_STDS", "3"))
    n = len(ROWS)
    out = [dict(r) for r in ROWS]
    for f in FEATURES:
        mean = sum(r[f] for r in ROWS) / n
        std = (sum((r[f] - mean) ** 2 for r in ROWS) / n) ** 0.5 or abs(mean) * 0.1 or 1.0
        for r in out:
            r[f] += k * std
    return out


if MODE == "feedback":
    LABELLED = [(row, true_label(rec)) for row, rec in zip(ROWS, RECORDS)]
if MODE == "shifted":
    SHIFTED = shifted_rows()


@events.test_start.add_listener
def _announce(environment, **_):
    print(f"locust: {MODE} mode, {len(ROWS)} distinct rows against {environment.host}")


class PredictorUser(HttpUser):
    # A closed loop with a tiny think time: what the original load test measured.
    wait_time = between(0.0, 0.01)
    abstract = MODE != "predict"

    def on_start(self):
        self.rows = itertools.cycle(ROWS)
        self.model = os.environ.get("MODEL_NAME")
        self.version = None
        if not self.model:
            for name in os.environ.get("MODEL_NAME_CANDIDATES", "model").split(","):
                r = self.client.get(f"/v2/models/{name}", name="/v2/models/[name]")
                if r.status_code == 200:
                    self.model = name
                    break
        if self.model:
            meta = self.client.get(f"/v2/models/{self.model}", name="/v2/models/[name]").json()
            self.version = meta["versions"][0]

    def _check(self, r, labels):
        if r.status_code != 200:
            r.failure(f"status {r.status_code}: {r.text[:200]}")
            return
        version = r.headers.get("x-model-version")
        if not version or (self.version and version != self.version):
            r.failure(f"x-model-version {version!r}, expected {self.version!r}")
            return
        if not labels or not all(isinstance(l, str) and l for l in labels):
            r.failure(f"no labels in {r.text[:200]}")
            return
        r.success()

    @task(8)
    def predict_one(self):
        with self.client.post("/predict", json=next(self.rows), catch_response=True) as r:
            body = r.json() if r.status_code == 200 else {}
            self._check(r, [body.get("label")])

    @task(1)
    def predict_list(self):
        rows = [next(self.rows) for _ in range(10)]
        with self.client.post("/predict", json=rows, catch_response=True) as r:
            body = r.json() if r.status_code == 200 else []
            self._check(r, [b.get("label") for b in body] if len(body) == 10 else [])

    @task(1)
    def kserve_v1(self):
        if not self.model:
            return
        rows = [[next(self.rows)[f] for f in FEATURES] for _ in range(10)]
        with self.client.post(f"/v1/models/{self.model}:predict", json={"instances": rows},
                              name="/v1/models/[name]:predict", catch_response=True) as r:
            body = r.json() if r.status_code == 200 else {}
            self._check(r, body.get("predictions", []))

    @task(1)
    def open_inference_v2(self):
        if not self.model:
            return
        rows = [[next(self.rows)[f] for f in FEATURES] for _ in range(10)]
        payload = {"inputs": [{"name": "input-0", "shape": [10, len(FEATURES)],
                               "datatype": "FP64", "data": rows}]}
        with self.client.post(f"/v2/models/{self.model}/infer", data=json.dumps(payload),
                              headers={"content-type": "application/json"},
                              name="/v2/models/[name]/infer", catch_response=True) as r:
            body = r.json() if r.status_code == 200 else {}
            outputs = {o["name"]: o for o in body.get("outputs", [])}
            self._check(r, outputs.get("label", {}).get("data", []))


class FeedbackUser(HttpUser):
    """LOAD_MODE=feedback: predict, then send the true label for the x-request-id the answer
    carried, on the same session (the same keep-alive connection, so the same pod)."""

    wait_time = between(0.0, 0.01)
    abstract = MODE != "feedback"

    def on_start(self):
        self.labelled = itertools.cycle(LABELLED)

    def _feedback(self, request_id, labels):
        body = {"requestId": request_id}
        if len(labels) == 1:
            body["label"] = labels[0]
        else:
            body["labels"] = labels
        with self.client.post("/feedback", json=body, catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"feedback status {r.status_code}: {r.text[:200]}")
            elif r.json().get("labels") != len(labels):
                r.failure(f"feedback matched {r.text[:200]}, expected {len(labels)} labels")
            else:
                r.success()

    def _predict(self, payload, n):
        with self.client.post("/predict", json=payload, name="/predict (feedback)",
                              catch_response=True) as r:
            request_id = r.headers.get("x-request-id")
            if r.status_code != 200:
                r.failure(f"status {r.status_code}: {r.text[:200]}")
                return None
            if not request_id:
                r.failure("no x-request-id on the prediction")
                return None
            body = r.json()
            got = len(body) if isinstance(body, list) else 1
            if got != n:
                r.failure(f"{got} predictions for {n} rows")
                return None
            r.success()
            return request_id

    @task(9)
    def one_row(self):
        row, label = next(self.labelled)
        request_id = self._predict(row, 1)
        if request_id:
            self._feedback(request_id, [label])

    @task(1)
    def ten_rows(self):
        batch = [next(self.labelled) for _ in range(10)]
        request_id = self._predict([row for row, _ in batch], 10)
        if request_id:
            self._feedback(request_id, [label for _, label in batch])


class ShiftedUser(HttpUser):
    """LOAD_MODE=shifted: valid rows from a moved distribution; every answer must still be
    a 200 with a label (drift shows in predictor_feature_psi, not in errors)."""

    wait_time = between(0.0, 0.01)
    abstract = MODE != "shifted"

    def on_start(self):
        self.rows = itertools.cycle(SHIFTED)

    @task
    def predict_shifted(self):
        with self.client.post("/predict", json=next(self.rows), name="/predict (shifted)",
                              catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"status {r.status_code}: {r.text[:200]}")
            elif not isinstance(r.json().get("label"), str):
                r.failure(f"no label in {r.text[:200]}")
            else:
                r.success()
