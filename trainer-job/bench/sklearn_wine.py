"""scikit-learn's figures on a wine split, for `make bench-trainer` and as the reference values
of trainer-job/tests/train_wine.rs.

WINE_DIR holds data_1.csv, data_2.csv and test_data.csv (`trainer-job dataset wine --out DIR`
writes the repository's cut of linfa-datasets' red-wine set: 1,066 training rows, 533 test
rows). Train = data_1 ∪ data_2, test = test_data, target "good" = quality > 5,
StandardScaler + AdaBoostClassifier(random_state=42) (SAMME over 50 stumps). Prints one JSON
object. Usage: python3 sklearn_wine.py WINE_DIR [RUNS]
"""
import json
import os
import statistics
import sys
import time

import numpy as np
import sklearn
from sklearn.ensemble import AdaBoostClassifier
from sklearn.metrics import f1_score
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

if len(sys.argv) < 2:
    sys.exit("usage: python3 sklearn_wine.py WINE_DIR [RUNS] (WINE_DIR: data_1.csv, data_2.csv, test_data.csv)")
seed_dir = sys.argv[1]
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 21


def load(name):
    a = np.genfromtxt(os.path.join(seed_dir, name), delimiter=",", skip_header=1)
    return a[:, :11], a[:, 11]


X1, y1 = load("data_1.csv")
X2, y2 = load("data_2.csv")
Xt, yt = load("test_data.csv")
X = np.vstack([X1, X2])
q = np.concatenate([y1, y2])
y = (q > 5).astype(int)
scaler = StandardScaler().fit(X)
Z, Zt = scaler.transform(X), scaler.transform(Xt)

times = []
for _ in range(runs):
    t0 = time.perf_counter()
    model = AdaBoostClassifier(random_state=42).fit(Z, y)
    times.append(time.perf_counter() - t0)
pred = model.predict(Zt)
yt2 = (yt > 5).astype(int)

multiclass = {}
for depth in (1, 3):
    m = AdaBoostClassifier(DecisionTreeClassifier(max_depth=depth), random_state=42).fit(Z, q)
    multiclass[f"f1_weighted_quality_depth{depth}"] = f1_score(yt, m.predict(Zt), average="weighted")

print(json.dumps({
    "sklearn": sklearn.__version__,
    "rows": int(len(y)),
    "test_rows": int(len(yt)),
    "fit_median_s": statistics.median(times),
    "f1_binary": f1_score(yt2, pred),
    "f1_macro": f1_score(yt2, pred, average="macro"),
    **multiclass,
}))
