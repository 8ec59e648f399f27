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


def load_rows():
    path = os.environ.get("PREDICT_CSV")
    if not path:
        return [dict(zip(FEATURES, r)) for r in BUILTIN_ROWS]
    with open(path, newline="") as f:
        rows = []
        for rec in csv.DictReader(f):
            # The predictor normalises names the same way ("Fixed Acidity" == "fixed_acidity").
            norm = {re.sub(r"[\s_-]+", "_", k.strip().lower()).strip("_"): v for k, v in rec.items()}
            rows.append({f: float(norm[f]) for f in FEATURES})
        return rows


ROWS = load_rows()


@events.test_start.add_listener
def _announce(environment, **_):
    print(f"locust: {len(ROWS)} distinct rows against {environment.host}")


class PredictorUser(HttpUser):
    # A closed loop with a tiny think time: what the original load test measured.
    wait_time = between(0.0, 0.01)

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
