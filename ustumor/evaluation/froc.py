"""FROC: lesion-level sensitivity against the average number of false positives per image.

Definition (as nnDetection's FROC, but read off the curve without interpolation):

- every detection of every image takes part, whatever its score;
- per image, detections in descending score order each take the still-unmatched lesion
  they overlap most; IoU ``>= iou_thresh`` (default 0.1) makes it a hit (TP), anything
  else is a false positive (FP) -- a second detection on a found lesion included;
- sweeping a score threshold from high to low pools TPs and FPs over all images;
  ``sensitivity = TPs / lesions`` and ``FPs per image = FPs / images``, where *images*
  counts every image of the split, normals included;
- the sensitivity at a target rate (1/8, 1/4, 1/2, 1, 2, 4, 8 FPs per image) is the
  highest one of an operating point (a threshold between distinct scores) with at most
  that many FPs per image; a target beyond the model's last detection gets the final
  sensitivity;
- CPM (the competition performance metric of LUNA16) is their mean.

nnDetection (and LUNA16's script) interpolate linearly between operating points, which
credits sensitivities no single threshold gives; the step reading here never does, and
is equal or lower. ``coco-froc-analysis`` is not used: its default mode counts a hit when
the lesion's centre lies in the box (not IoU), and its README calls its IoU mode unreliable.
"""
from typing import Sequence

import numpy as np

from .penalized_iou import match_image

DEFAULT_FPS_PER_IMAGE = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def image_hits(pred_boxes, pred_scores, gt_boxes, iou_thresh=0.1):
    """(scores, hit flags) of one image's detections, highest score first."""
    match = match_image(pred_boxes, pred_scores, gt_boxes, score_thresh=-np.inf, iou_thresh=iou_thresh, top_k=None)
    scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)[match.kept]
    return scores, np.asarray([o == "tp" for o in match.pred_outcome], dtype=bool)


class PooledHits:
    """Every image's ``(scores, hits)`` (:func:`image_hits`) pooled and sorted once, so FROC
    can be read for any multiset of the images (bootstrap resamples) without re-sorting."""

    def __init__(self, per_image, lesions_per_image):
        self.num_images = len(per_image)
        self.lesions = np.asarray(lesions_per_image, dtype=np.int64)
        scores = np.concatenate([s for s, _ in per_image]) if per_image else np.zeros(0)
        hits = np.concatenate([h for _, h in per_image]) if per_image else np.zeros(0, bool)
        images = np.concatenate([np.full(len(s), i) for i, (s, _) in enumerate(per_image)]) if per_image else \
            np.zeros(0, np.int64)
        order = np.argsort(-scores, kind="stable")
        self.scores, self.hits, self.images = scores[order], hits[order].astype(bool), images[order]
        # a threshold can only fall between distinct scores: the last of each tie group
        self.last_of_ties = np.r_[self.scores[1:] != self.scores[:-1], True] if len(self.scores) else \
            np.zeros(0, bool)

    def curve(self, counts=None):
        """Operating points (FPs per image, sensitivity, score threshold), one per distinct
        score from the highest down; ``counts[i]``: how often image ``i`` is in the sample."""
        counts = np.ones(self.num_images, dtype=np.int64) if counts is None else np.asarray(counts)
        weights = counts[self.images]
        true_positives = np.cumsum(weights * self.hits)[self.last_of_ties]
        false_positives = np.cumsum(weights * ~self.hits)[self.last_of_ties]
        num_images, num_lesions = int(counts.sum()), int(counts @ self.lesions)
        fps = false_positives / max(num_images, 1)
        sensitivity = true_positives / num_lesions if num_lesions else np.full(len(fps), np.nan)
        return fps, sensitivity, self.scores[self.last_of_ties]

    def froc(self, fps_per_image=DEFAULT_FPS_PER_IMAGE, counts=None, with_curve=False):
        """:func:`froc`'s dict for the sample ``counts`` (default: every image once)."""
        counts = np.ones(self.num_images, dtype=np.int64) if counts is None else np.asarray(counts)
        fps, sensitivity, thresholds = self.curve(counts)
        num_lesions = int(counts @ self.lesions)
        if num_lesions:
            values = sensitivity_at(fps, sensitivity, fps_per_image)
            result = {f"sensitivity@{t:g}": v for t, v in zip(fps_per_image, values)}
            result["cpm"] = float(np.mean(values))
        else:  # sensitivity is undefined without lesions
            result = {f"sensitivity@{t:g}": float("nan") for t in fps_per_image}
            result["cpm"] = float("nan")
        result["num_lesions"] = num_lesions
        result["num_images"] = int(counts.sum())
        if with_curve:
            curve = {"fps_per_image": fps.tolist(), "sensitivity": np.asarray(sensitivity).tolist(),
                     "score_thresh": thresholds.tolist()}
            return result, curve
        return result


def sensitivity_at(fps, sensitivity, targets):
    """Highest sensitivity of an operating point with at most ``target`` FPs per image (0 when
    none, i.e. only "no detection at all" qualifies)."""
    values = []
    for target in targets:
        within = fps <= target + 1e-12
        values.append(float(sensitivity[within].max()) if within.any() else 0.0)
    return values


def froc(predictions, ground_truths, iou_thresh=0.1, fps_per_image: Sequence[float] = DEFAULT_FPS_PER_IMAGE):
    """FROC over a split.

    Args:
        predictions: list, one entry per image, of ``(boxes (N, 4) XYXY, scores (N,))``.
        ground_truths: list, one entry per image, of (M, 4) XYXY boxes.
    Returns:
        dict ``{"sensitivity@0.125": ..., ..., "sensitivity@8": ..., "cpm": ..., "num_lesions",
        "num_images"}``.
    """
    if len(predictions) != len(ground_truths):
        raise ValueError(f"{len(predictions)} images of predictions but {len(ground_truths)} of ground truth")
    per_image = [image_hits(b, s, g, iou_thresh) for (b, s), g in zip(predictions, ground_truths)]
    lesions = [len(np.asarray(g).reshape(-1, 4)) for g in ground_truths]
    return PooledHits(per_image, lesions).froc(fps_per_image)
