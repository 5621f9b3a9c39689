"""Penalised IoU: the mean IoU of detections after charging every false positive and
false negative an IoU of 0.

Per image (:func:`match_image`):

1. keep at most ``top_k`` predictions with ``score >= score_thresh``, highest score first
   (``top_k <= 0`` or ``None`` keeps all);
2. in that order, each kept prediction takes the still-unmatched ground-truth box it
   overlaps most; with IoU ``>= iou_thresh`` it is a true positive (TP) and contributes
   that IoU, otherwise it is a false positive (FP) and contributes 0;
3. every ground-truth box left unmatched is a false negative (FN) and contributes 0;
4. an image with no ground truth and no kept prediction is a true negative (TN): it is
   counted, but excluded from the score.

Over a whole split (:func:`compute`), counts and IoUs are pooled, not averaged per batch::

    piou = sum(IoU of TPs) / (TP + FP + FN)        (0 when the denominator is 0)

The other numbers :func:`compute` returns:

- ``precision = TP / (TP + FP)`` and ``sensitivity = TP / (TP + FN)`` (lesion level);
- ``mean_iou_tp = sum(IoU of TPs) / TP``;
- image level, with each image's ``outcome`` from :class:`ImageMatch` ("tp": it has
  lesions and at least one was found; "fn": it has lesions and none was found;
  "fp": it has no lesion but a kept prediction; "tn": neither):
  ``image_sensitivity = #tp / #images with lesions``,
  ``specificity = #tn / #images without lesions``,
  ``accuracy = (#tp + #tn) / #images``.

Ratios with a zero denominator are NaN (except ``piou``, which is 0 as specified).
:func:`sweep` repeats :func:`compute` at score thresholds 0.00-0.95; :class:`PenalizedIoUEvaluator`
is the Detectron2 DatasetEvaluator (``penalized_iou/piou`` for EvalHook and model selection).
Boxes are XYXY in the same (original image) coordinates for predictions and ground
truth; matching ignores classes (a lesion is a lesion).
"""
import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import List, Sequence

import numpy as np
import torch
from torchvision.ops import box_iou

from ..utils.file_io import atomic_write_text, json_safe
from ..utils.numbers import ratio
from .records import DetectionCollector

logger = logging.getLogger(__name__)

__all__ = [
    "pairwise_iou",
    "ImageMatch",
    "match_image",
    "compute",
    "sweep",
    "SWEEP_THRESHOLDS",
    "PenalizedIoUEvaluator",
]

# The score thresholds of the sweep: 0.00, 0.05, ..., 0.95.
SWEEP_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(20))


def pairwise_iou(boxes1, boxes2):
    """(N, M) IoU matrix of two sets of XYXY boxes (array-likes), as float64 numpy:
    torchvision's ``box_iou``, with 0 where both boxes are empty (0/0)."""
    boxes1 = torch.as_tensor(np.asarray(boxes1, dtype=np.float64).reshape(-1, 4))
    boxes2 = torch.as_tensor(np.asarray(boxes2, dtype=np.float64).reshape(-1, 4))
    return np.nan_to_num(box_iou(boxes1, boxes2).numpy(), nan=0.0)


@dataclass
class ImageMatch:
    """The outcome of matching one image's predictions to its ground truth.

    Prediction arrays are indexed like ``kept`` (kept predictions, highest score first);
    ``kept`` holds their indices into the image's original prediction arrays.
    """

    kept: np.ndarray  # (K,) indices into the input predictions
    pred_outcome: List[str]  # (K,) "tp" or "fp"
    pred_gt: np.ndarray  # (K,) matched ground-truth index, -1 for an FP
    # (K,) IoU with the matched ground truth for a TP; for an FP, its best IoU with any
    # ground-truth box (0 if none), shown for diagnosis only: an FP contributes 0
    pred_iou: np.ndarray
    gt_outcome: List[str]  # (M,) "tp" or "fn"
    gt_pred: np.ndarray  # (M,) index into the input predictions of its TP, -1 for an FN
    gt_iou: np.ndarray  # (M,) IoU of its TP, 0 for an FN
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0  # 1 when the image has no ground truth and no kept prediction
    iou_sum: float = 0.0  # sum of the TPs' IoUs
    outcome: str = field(default="tn")  # image level: "tp", "fn", "fp" or "tn" (module docstring)


def _as_predictions(boxes, scores):
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"{len(boxes)} predicted boxes but {len(scores)} scores")
    return boxes, scores


def keep_top_predictions(scores, score_thresh, top_k):
    """Indices of at most ``top_k`` scores ``>= score_thresh``, highest first (stable on ties)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    order = order[scores[order] >= score_thresh]
    if top_k is not None and top_k > 0:
        order = order[:top_k]
    return order


def match_image(pred_boxes, pred_scores, gt_boxes, score_thresh=0.45, iou_thresh=0.25, top_k=1):
    """Match one image's predictions to its ground truth (module docstring, steps 1-4).

    Args:
        pred_boxes: (N, 4) XYXY predicted boxes.
        pred_scores: (N,) their scores.
        gt_boxes: (M, 4) XYXY ground-truth boxes.
    Returns:
        ImageMatch
    """
    pred_boxes, pred_scores = _as_predictions(pred_boxes, pred_scores)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    kept = keep_top_predictions(pred_scores, score_thresh, top_k)
    iou = pairwise_iou(pred_boxes[kept], gt_boxes)
    gt_pred = np.full(len(gt_boxes), -1, dtype=np.int64)
    gt_iou = np.zeros(len(gt_boxes))
    pred_gt = np.full(len(kept), -1, dtype=np.int64)
    pred_iou = np.zeros(len(kept))
    pred_outcome = []
    for k in range(len(kept)):
        if len(gt_boxes):
            pred_iou[k] = iou[k].max()
        candidates = np.where(gt_pred < 0, iou[k], -1.0)  # only still-unmatched ground truth
        best = int(np.argmax(candidates)) if len(gt_boxes) else -1
        if best >= 0 and candidates[best] >= iou_thresh:
            gt_pred[best] = kept[k]
            gt_iou[best] = candidates[best]
            pred_gt[k] = best
            pred_iou[k] = candidates[best]
            pred_outcome.append("tp")
        else:
            pred_outcome.append("fp")
    tp = pred_outcome.count("tp")
    fp = len(kept) - tp
    fn = int((gt_pred < 0).sum())
    tn = int(len(gt_boxes) == 0 and len(kept) == 0)
    if len(gt_boxes):
        outcome = "tp" if tp else "fn"
    else:
        outcome = "fp" if len(kept) else "tn"
    return ImageMatch(
        kept=kept,
        pred_outcome=pred_outcome,
        pred_gt=pred_gt,
        pred_iou=pred_iou,
        gt_outcome=["tp" if p >= 0 else "fn" for p in gt_pred],
        gt_pred=gt_pred,
        gt_iou=gt_iou,
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        iou_sum=float(gt_iou.sum()),
        outcome=outcome,
    )


def summarize_matches(matches: Sequence[ImageMatch]):
    """Pool per-image matches into the split's counts and rates (module docstring)."""
    tp = sum(m.tp for m in matches)
    fp = sum(m.fp for m in matches)
    fn = sum(m.fn for m in matches)
    tn = sum(m.tn for m in matches)
    iou_sum = float(sum(m.iou_sum for m in matches))
    outcomes = [m.outcome for m in matches]
    positives = outcomes.count("tp") + outcomes.count("fn")
    negatives = outcomes.count("tn") + outcomes.count("fp")
    denominator = tp + fp + fn
    return {
        "piou": iou_sum / denominator if denominator else 0.0,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "iou_sum": iou_sum,
        "mean_iou_tp": ratio(iou_sum, tp),
        "precision": ratio(tp, tp + fp),
        "sensitivity": ratio(tp, tp + fn),
        "image_sensitivity": ratio(outcomes.count("tp"), positives),
        "specificity": ratio(outcomes.count("tn"), negatives),
        "accuracy": ratio(outcomes.count("tp") + outcomes.count("tn"), len(matches)),
        "num_images": len(matches),
        "num_positive_images": positives,
        "num_negative_images": negatives,
    }


def _check_lengths(predictions, ground_truths):
    if len(predictions) != len(ground_truths):
        raise ValueError(f"{len(predictions)} images of predictions but {len(ground_truths)} of ground truth")


def compute(predictions, ground_truths, score_thresh=0.45, iou_thresh=0.25, top_k=1):
    """Penalised IoU over a split.

    Args:
        predictions: list, one entry per image, of ``(boxes (N, 4) XYXY, scores (N,))``.
        ground_truths: list, one entry per image, of (M, 4) XYXY boxes.
        score_thresh, iou_thresh, top_k: see the module docstring.
    Returns:
        dict with ``piou, tp, fp, fn, tn`` and the other numbers of the module docstring,
        plus the settings ``score_thresh, iou_thresh, top_k``.
    """
    _check_lengths(predictions, ground_truths)
    matches = [
        match_image(boxes, scores, gt, score_thresh, iou_thresh, top_k)
        for (boxes, scores), gt in zip(predictions, ground_truths)
    ]
    result = summarize_matches(matches)
    result.update(score_thresh=float(score_thresh), iou_thresh=float(iou_thresh), top_k=int(top_k or 0))
    return result


SWEEP_COLUMNS = ("score_thresh", "tp", "fp", "fn", "tn", "precision", "sensitivity", "image_sensitivity",
                 "specificity", "accuracy", "piou", "mean_iou_tp")


def sweep(predictions, ground_truths, iou_thresh=0.25, top_k=1, thresholds=SWEEP_THRESHOLDS):
    """:func:`compute` at each score threshold: a list of rows with :data:`SWEEP_COLUMNS`."""
    rows = []
    for threshold in thresholds:
        result = compute(predictions, ground_truths, threshold, iou_thresh, top_k)
        rows.append({column: result[column] for column in SWEEP_COLUMNS})
    return rows


def sweep_as_dict(rows):
    """Sweep rows keyed by ``"0.45"``-style thresholds: a nested dict of floats, which
    Detectron2's EvalHook accepts (it rejects lists)."""
    return {f"{row['score_thresh']:.2f}": {k: v for k, v in row.items() if k != "score_thresh"} for row in rows}


def save_sweep(rows, output_dir, prefix="penalized_iou_sweep"):
    """Write the sweep as ``<prefix>.json`` and ``<prefix>.csv``; returns both paths."""
    json_path = os.path.join(output_dir, f"{prefix}.json")
    csv_path = os.path.join(output_dir, f"{prefix}.csv")
    atomic_write_text(json_path, json.dumps(json_safe(rows), indent=1))
    lines = [",".join(SWEEP_COLUMNS)]
    for row in rows:
        lines.append(",".join("" if isinstance(row[c], float) and math.isnan(row[c]) else f"{row[c]:.6g}"
                              for c in SWEEP_COLUMNS))
    atomic_write_text(csv_path, "\n".join(lines) + "\n")
    return json_path, csv_path


class PenalizedIoUEvaluator(DetectionCollector):
    """A DatasetEvaluator wrapping :func:`compute` and :func:`sweep`.

    Returns ``{"penalized_iou": {"piou": ..., "tp": ..., ...}, "penalized_iou_sweep":
    {"0.00": {...}, ..., "0.95": {...}}}``, which EvalHook flattens to
    ``penalized_iou/piou`` etc.; writes the sweep to ``output_dir`` as
    ``penalized_iou_sweep.json`` and ``.csv``.
    """

    def __init__(self, dataset_name, score_thresh=0.45, iou_thresh=0.25, top_k=1, output_dir=None,
                 distributed=True, sweep_thresholds=SWEEP_THRESHOLDS):
        super().__init__(dataset_name, distributed=distributed)
        self.score_thresh = score_thresh
        self.iou_thresh = iou_thresh
        self.top_k = top_k
        self.output_dir = output_dir
        self.sweep_thresholds = tuple(sweep_thresholds)

    def evaluate(self):
        records = self.collect()
        if records is None:  # not the main process
            return {}
        return evaluate_records(records, self.score_thresh, self.iou_thresh, self.top_k, self.output_dir,
                                self.sweep_thresholds)


def evaluate_records(records, score_thresh, iou_thresh, top_k, output_dir=None, thresholds=SWEEP_THRESHOLDS):
    """Penalised IoU and its sweep for a list of :class:`ImageRecord`, in evaluator format."""
    predictions = [(r.pred_boxes, r.pred_scores) for r in records]
    ground_truths = [r.gt_boxes for r in records]
    result = compute(predictions, ground_truths, score_thresh, iou_thresh, top_k)
    rows = sweep(predictions, ground_truths, iou_thresh, top_k, thresholds)
    if output_dir:
        save_sweep(rows, output_dir)
    logger.info(
        "Penalised IoU %.4f at score >= %.2f, IoU >= %.2f, top %s: TP %d FP %d FN %d TN %d over %d images",
        result["piou"], score_thresh, iou_thresh, top_k, result["tp"], result["fp"], result["fn"], result["tn"],
        result["num_images"],
    )
    return {"penalized_iou": result, "penalized_iou_sweep": sweep_as_dict(rows)}
