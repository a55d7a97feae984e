"""Writes the reference data for core/metrics.c.

    /usr/bin/python3 tests/reference/make_metrics_reference.py OUT_DIR

tests/unit/test_metrics.c reads OUT_DIR/metrics_reference.json:
  {"cases": [{"name", "k", "n",
              "labels": [n], "scores": [n*k] row-major float32 values,
              "pred": [n] argmax of each row (numpy, first maximum),
              "confusion": [k*k] [true][pred],
              "accuracy", "balanced_accuracy", "majority_share",
              "precision", "recall", "f1": [k], "support", "predicted": [k],
              "class_weights": [k], "class_weights_sum"}, ...]}

The expected values are computed here in numpy, independently of the C code
(one-hot products rather than counting loops), from scikit-learn's definitions
(scikit-learn itself is not needed; its formulas are restated below):
  precision_recall_fscore_support(y, p, labels=range(k), average=None,
      zero_division=0): precision = tp / pred_sum, recall = tp / true_sum,
      f1 = 2 tp / (true_sum + pred_sum), each 0 where its denominator is 0
  balanced_accuracy_score: mean over the classes present in y of tp / true_sum
      (sklearn drops the NaN rows of classes absent from y)
  accuracy_score: mean(y == p)
  compute_class_weight('balanced'): n_samples / (n_classes * bincount(y)),
      with n_classes = k and 0 for a class absent from y (sklearn refuses it)
Scores are quantised to a few levels so rows often tie, which tests that the
C argmax, like numpy's, takes the first maximum.

The stamp metrics_reference.stamp holds the hash of this script and the numpy
version; the file is regenerated only when it changes.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import refdata  # noqa: E402

# name, k, n, seed, classes never given as labels, classes never predicted
CASES = [
    ("k5_gaps", 5, 200, 11, [1], [3]),
    ("k10_skewed", 10, 1000, 12, [], [7]),
    ("k2", 2, 37, 13, [], []),
    ("k7_mixed", 7, 300, 14, [2, 6], [4, 6]),
    ("k3_all_one_class", 3, 50, 15, [0, 2], []),
]


def make_data(k, n, seed, no_support, never_pred):
    rng = np.random.default_rng(seed)
    allowed = np.array([c for c in range(k) if c not in no_support])
    # skewed class frequencies, so balanced and plain accuracy differ
    freq = rng.uniform(0.2, 1.0, size=len(allowed)) ** 2
    labels = rng.choice(allowed, size=n, p=freq / freq.sum())
    # levels 0, 0.25, ..., 1: many ties; the true class gets a bonus most of the time
    scores = rng.integers(0, 5, size=(n, k)).astype(np.float32) / 4
    bonus = rng.random(n) < 0.6
    scores[np.arange(n)[bonus], labels[bonus]] += 0.5
    for c in never_pred:
        scores[:, c] = -1.0
    return labels.astype(np.int64), scores.astype(np.float32)


def expected(k, labels, scores):
    n = len(labels)
    pred = np.argmax(scores, axis=1)
    eye = np.eye(k, dtype=np.int64)
    conf = eye[labels].T @ eye[pred]          # [true][pred]
    tp = np.diag(conf).astype(np.float64)
    true_sum = conf.sum(axis=1).astype(np.float64)
    pred_sum = conf.sum(axis=0).astype(np.float64)

    def divide0(a, b):
        out = np.zeros_like(a)
        np.divide(a, b, out=out, where=b != 0)
        return out

    precision = divide0(tp, pred_sum)
    recall = divide0(tp, true_sum)
    f1 = divide0(2 * tp, true_sum + pred_sum)
    present = true_sum > 0
    balanced = float(np.mean(tp[present] / true_sum[present]))
    counts = np.bincount(labels, minlength=k)
    weights = divide0(np.full(k, float(n)), k * counts.astype(np.float64))
    return {
        "pred": pred.tolist(),
        "confusion": conf.reshape(-1).tolist(),
        "accuracy": float(np.mean(labels == pred)),
        "balanced_accuracy": balanced,
        "majority_share": float(counts.max() / n),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "support": true_sum.astype(np.int64).tolist(),
        "predicted": pred_sum.astype(np.int64).tolist(),
        "class_weights": weights.tolist(),
        "class_weights_sum": float(weights.sum()),
    }


def check(case, exp):
    """The cases must contain what they claim to (a missing class, a tie)."""
    name, k, n, _, no_support, never_pred = case
    for c in no_support:
        assert exp["support"][c] == 0, (name, c)
    for c in never_pred:
        assert exp["predicted"][c] == 0, (name, c)
    assert sum(exp["support"]) == n and sum(exp["predicted"]) == n


def main():
    out = sys.argv[1]
    stamp = refdata.Stamp(out, "metrics_reference", __file__, "numpy " + np.__version__)
    if stamp.fresh():
        print("metrics reference data up to date in", out)
        return
    cases = []
    ties = 0
    for case in CASES:
        name, k, n, seed, no_support, never_pred = case
        labels, scores = make_data(k, n, seed, no_support, never_pred)
        exp = expected(k, labels, scores)
        check(case, exp)
        ties += int(np.sum((scores == scores.max(axis=1, keepdims=True)).sum(axis=1) > 1))
        cases.append(dict(name=name, k=k, n=n, labels=labels.tolist(),
                          scores=[float(v) for v in scores.reshape(-1)], **exp))
        print("case %s: accuracy %.4f, balanced %.4f" % (name, exp["accuracy"],
                                                         exp["balanced_accuracy"]))
    assert ties > 0, "no tied rows: the argmax tie rule would go untested"
    print("%d tied rows" % ties)
    stamp.write_json("metrics_reference.json", {"cases": cases})


if __name__ == "__main__":
    main()
