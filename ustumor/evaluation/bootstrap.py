"""Seeded percentile-bootstrap confidence intervals, resampling whole clusters (patients).

Frames of one patient are not independent; resampling them one by one would give
intervals that are too narrow. :func:`bootstrap` draws clusters with replacement (as many
as there are) and passes the statistic every image of every drawn cluster, with the draw
each came from, so a patient drawn twice counts as two patients.
"""
from typing import Callable, Dict, Sequence

import numpy as np
from tqdm import tqdm


def clusters_of(units: Sequence):
    """Index arrays, one per distinct unit, in order of first appearance."""
    members = {}
    for index, unit in enumerate(units):
        members.setdefault(unit, []).append(index)
    return [np.asarray(m, dtype=np.int64) for m in members.values()]


def all_once(units: Sequence):
    """(indices, draws) of the original sample: each cluster drawn once."""
    clusters = clusters_of(units)
    indices = np.concatenate(clusters) if clusters else np.zeros(0, np.int64)
    draws = np.concatenate([np.full(len(c), k) for k, c in enumerate(clusters)]) if clusters else indices
    return indices, draws


def bootstrap(statistic: Callable[[np.ndarray, np.ndarray], Dict[str, float]], units: Sequence,
              num_samples=1000, seed=0, confidence=0.95):
    """Percentile intervals of every number ``statistic`` returns.

    Args:
        statistic: ``(indices, draws) -> {name: value}``; ``indices`` into the items (with
            repeats), ``draws`` the number of the cluster draw each index belongs to.
        units: each item's cluster (e.g. its patient, or the item itself).
        num_samples: resamples.
        seed: the intervals are reproducible given it.
        confidence: e.g. 0.95 for the 2.5th and 97.5th percentiles.
    Returns:
        ``{name: {"low", "high", "num_valid"}}``; resamples where a value is NaN (e.g. no
        negative image drawn for a specificity) are left out and counted by ``num_valid``.
    """
    clusters = clusters_of(units)
    rng = np.random.default_rng(seed)
    values = {}
    for _ in tqdm(range(num_samples), desc="bootstrap", unit="resample"):
        chosen = rng.integers(0, len(clusters), len(clusters))
        indices = np.concatenate([clusters[c] for c in chosen])
        draws = np.concatenate([np.full(len(clusters[c]), k) for k, c in enumerate(chosen)])
        for name, value in statistic(indices, draws).items():
            values.setdefault(name, []).append(float(value))
    alpha = (1.0 - confidence) / 2
    intervals = {}
    for name, samples in values.items():
        samples = np.asarray(samples)
        valid = samples[np.isfinite(samples)]
        low, high = np.quantile(valid, [alpha, 1 - alpha]) if len(valid) else (np.nan, np.nan)
        intervals[name] = {"low": float(low), "high": float(high), "num_valid": int(len(valid))}
    return intervals
