"""ROC curve and AUC without scikit-learn (AUC: the Mann-Whitney statistic, ties counted half)."""
import numpy as np


def _midranks(values):
    """1-based ranks, tied values sharing their mean rank."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(len(values))
    start = 0
    while start < len(values):
        stop = start
        while stop + 1 < len(values) and sorted_values[stop + 1] == sorted_values[start]:
            stop += 1
        ranks[order[start:stop + 1]] = (start + stop) / 2 + 1
        start = stop + 1
    return ranks


def roc_auc(labels, scores):
    """Probability that a random positive scores above a random negative (ties: 1/2);
    NaN when either class is absent."""
    labels = np.asarray(labels, dtype=bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if not positives or not negatives:
        return float("nan")
    ranks = _midranks(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def roc_curve(labels, scores):
    """``(fpr, tpr, thresholds)``: one point per distinct score, from the highest down, for
    "positive when score >= threshold", after a first point (0, 0) at threshold +inf. Its
    trapezoid area equals :func:`roc_auc`. Empty arrays when either class is absent."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if not positives or not negatives:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    last_of_each_score = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    true_positives = np.cumsum(labels)[last_of_each_score]
    false_positives = np.cumsum(~labels)[last_of_each_score]
    return (np.r_[0.0, false_positives / negatives], np.r_[0.0, true_positives / positives],
            np.r_[np.inf, scores[last_of_each_score]])
