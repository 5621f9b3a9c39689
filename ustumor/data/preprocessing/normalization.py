"""Pixel normalisation: ImageNet statistics of the weights, or the data's own.

The model normalises inputs with ``MODEL.PIXEL_MEAN``/``PIXEL_STD``. With
``INPUT.NORMALIZATION: ultrasound`` those are replaced by the training split's
grey mean and std, as written by ``tools/compute_pixel_stats.py``.
"""
import json
import os

import numpy as np

NORMALIZATIONS = ("imagenet", "ultrasound")


def compute_pixel_stats(image_iterator):
    """Mean and std over every pixel of the grey images, in one streaming pass."""
    total = total_sq = count = 0
    for grey in image_iterator:
        values = grey.astype(np.float64)
        total += values.sum()
        total_sq += np.square(values).sum()
        count += values.size
    if count == 0:
        raise ValueError("no pixels to compute statistics from")
    mean = total / count
    return {"mean": float(mean), "std": float(np.sqrt(max(total_sq / count - mean * mean, 0.0))), "pixels": int(count)}


def load_pixel_stats(path):
    if not path or not os.path.exists(path):
        raise FileNotFoundError(
            f"INPUT.NORMALIZATION is 'ultrasound' but INPUT.PIXEL_STATS_FILE {path!r} does not exist; "
            "create it with: tools/compute_pixel_stats.py --config-file <your config> --output <file>.json"
        )
    with open(path) as f:
        stats = json.load(f)
    if not stats.get("std", 0) > 0:
        raise ValueError(f"{path}: pixel std must be positive, got {stats.get('std')}")
    return stats


def apply_normalization(cfg):
    """Set ``MODEL.PIXEL_MEAN``/``PIXEL_STD`` as ``INPUT.NORMALIZATION`` asks (cfg must be mutable)."""
    mode = cfg.INPUT.NORMALIZATION
    if mode not in NORMALIZATIONS:
        raise ValueError(f"INPUT.NORMALIZATION must be one of {NORMALIZATIONS}, got {mode!r}")
    if mode == "ultrasound":
        stats = load_pixel_stats(cfg.INPUT.PIXEL_STATS_FILE)
        channels = len(cfg.MODEL.PIXEL_MEAN)
        cfg.MODEL.PIXEL_MEAN = [stats["mean"]] * channels
        cfg.MODEL.PIXEL_STD = [stats["std"]] * channels
    return cfg
