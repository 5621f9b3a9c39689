"""Prediction-versus-truth images, named by their outcome at the penalised-IoU operating point.

Each image's outcome is :func:`ustumor.evaluation.penalized_iou.match_image`'s, with the
run's ``TEST.PENALIZED_IOU`` thresholds, so the pictures agree with the numbers:

- ``TP``: the image has lesions and at least one kept prediction hit one;
- ``FN``: it has lesions and none was hit;
- ``FP``: it has no lesion but a kept prediction;
- ``TN``: no lesion, no kept prediction.

These are image outcomes: an image counts once, whatever its number of lesions. They
are what the evaluation suite counts in ``image_level`` (:func:`outcome_counts`), not the
lesion-level TP/FP/FN (lesions found, false predictions, lesions missed) of
``lesion_level`` and penalised IoU: an image with two lesions, one found, is one image TP
but one lesion TP and one lesion FN.

Files are named ``{TP|FP|FN|TN}_<image>_iou_<x>_score_<y>.png`` (the scheme of the
original notebooks), the prefix being the image outcome, and ``x``/``y`` describing the
prediction that decided it:

- TP: the best hit's IoU and score;
- FP: 0 and the highest kept score;
- FN: the highest-scoring prediction, kept or not, with its best IoU with the truth:
  a high IoU with a low score means "found but not confident enough", a low IoU with a
  high score means "confident, but in the wrong place";
- TN: 0 and the highest score of any prediction (how close the image came to an FP).

The drawing shows truth boxes (dashed, teal), kept predictions (blue for a hit, orange
for a false positive) and, on FN and TN images, that best prediction below the operating
point (dotted yellow); its caption gives the image outcome and, on images with lesions,
how many of them were found.
"""
import os
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from ..evaluation.penalized_iou import ImageMatch, match_image, pairwise_iou, summarize_matches
from .drawing import add_caption, draw_boxes, to_rgb

__all__ = ["OUTCOMES", "ImageOutcome", "image_outcome", "outcome_file_name", "image_names",
           "outcome_caption", "render_outcome", "outcome_counts", "select_outcomes", "wrongness"]

OUTCOMES = ("tp", "fp", "fn", "tn")


@dataclass
class ImageOutcome:
    """One image's predictions, truth and outcome at the operating point."""

    file_name: str
    name: str  # file-name-safe image name, unique within its dataset
    outcome: str  # "tp", "fp", "fn" or "tn"
    iou: float  # see the module docstring
    score: float
    deciding: int  # index of the prediction that the name describes, -1 for none
    quality: float  # the image's own penalised IoU (a TN, which the score excludes, counts as 1)
    match: ImageMatch
    pred_boxes: np.ndarray
    pred_scores: np.ndarray
    pred_classes: np.ndarray
    gt_boxes: np.ndarray

    @property
    def file_stem(self):
        return outcome_file_name(self.outcome, self.name, self.iou, self.score)[:-4]


def outcome_file_name(outcome, name, iou, score):
    return f"{outcome.upper()}_{name}_iou_{iou:.2f}_score_{score:.2f}.png"


def _safe(text):
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_") or "image"


def image_names(file_names: Sequence[str], frame_ids: Optional[Sequence] = None) -> List[str]:
    """File-name-safe names: the file's stem (``benign (12).png`` -> ``benign_12``), prefixed
    with its parent folders where stems repeat within the dataset. ``frame_ids``: each
    image's frame within a multi-frame file (None for a single image), appended as
    ``_frame<id>`` so the frames of one DICOM cine get names of their own."""
    parts = [os.path.normpath(f).split(os.sep) for f in file_names]
    suffixes = ["" if frame is None else f"_frame{frame}" for frame in (frame_ids or [None] * len(parts))]
    depth = {i: 1 for i in range(len(parts))}
    while True:
        names = [_safe("_".join([*p[-depth[i]:-1], os.path.splitext(p[-1])[0]]) + suffixes[i])
                 for i, p in enumerate(parts)]
        seen = {}
        for i, name in enumerate(names):
            seen.setdefault(name, []).append(i)
        # only different files that share a name need a longer one
        clashes = [i for group in seen.values() if len({(tuple(parts[j]), suffixes[j]) for j in group}) > 1
                   for i in group if depth[i] < len(parts[i])]
        if not clashes:
            break
        for i in clashes:
            depth[i] += 1
    # identical paths (the same file listed twice) still clash: number them
    counts = {}
    for i, name in enumerate(names):
        counts[name] = counts.get(name, 0) + 1
        if counts[name] > 1:
            names[i] = f"{name}_{counts[name]}"
    return names


def image_outcome(file_name, name, pred_boxes, pred_scores, gt_boxes, score_thresh=0.45, iou_thresh=0.25,
                  top_k=1, pred_classes=None):
    """The :class:`ImageOutcome` of one image (module docstring)."""
    pred_boxes = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4)
    pred_scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    pred_classes = (np.zeros(len(pred_scores), np.int64) if pred_classes is None
                    else np.asarray(pred_classes, dtype=np.int64).reshape(-1))
    match = match_image(pred_boxes, pred_scores, gt_boxes, score_thresh, iou_thresh, top_k)
    deciding, iou, score = -1, 0.0, 0.0
    if match.outcome == "tp":
        hits = [k for k, o in enumerate(match.pred_outcome) if o == "tp"]
        best = max(hits, key=lambda k: match.pred_iou[k])
        deciding, iou = int(match.kept[best]), float(match.pred_iou[best])
    elif match.outcome == "fp":
        deciding = int(match.kept[0])  # kept predictions are highest score first
    elif len(pred_scores):  # fn, tn: the best prediction, whether kept or not
        deciding = int(np.argmax(pred_scores))
        if len(gt_boxes):
            iou = float(pairwise_iou(pred_boxes[deciding:deciding + 1], gt_boxes).max())
    if deciding >= 0:
        score = float(pred_scores[deciding])
    errors = match.tp + match.fp + match.fn
    quality = match.iou_sum / errors if errors else 1.0
    return ImageOutcome(file_name=file_name, name=name, outcome=match.outcome, iou=iou, score=score,
                        deciding=deciding, quality=float(quality), match=match, pred_boxes=pred_boxes,
                        pred_scores=pred_scores, pred_classes=pred_classes, gt_boxes=gt_boxes)


def render_outcome(image, outcome: ImageOutcome, class_names: Optional[Sequence[str]] = None, score_thresh=None):
    """The image (grey, or BGR as OpenCV reads it) with truth and predictions drawn, captioned; RGB."""
    predictions = []
    multi_class = class_names is not None and len(class_names) > 1
    for k, index in enumerate(outcome.match.kept):
        label = class_names[outcome.pred_classes[index]] if multi_class else ""
        predictions.append({"box": outcome.pred_boxes[index], "score": outcome.pred_scores[index],
                            "outcome": outcome.match.pred_outcome[k], "label": label})
    below = outcome.outcome in ("fn", "tn") and outcome.deciding >= 0 and outcome.deciding not in outcome.match.kept
    if below:
        index = outcome.deciding
        predictions.append({"box": outcome.pred_boxes[index], "score": outcome.pred_scores[index],
                            "outcome": "below", "label": "below"})
    drawn = draw_boxes(to_rgb(image), outcome.gt_boxes, predictions)
    caption = outcome_caption(outcome)
    if below:
        threshold = f" {score_thresh:.2f}" if score_thresh is not None else ""
        caption.append(f"dotted yellow: best prediction, below the score threshold{threshold}")
    return add_caption(drawn, caption)


def outcome_caption(outcome: ImageOutcome):
    """The picture's caption lines: the image outcome, the deciding prediction's IoU and
    score, and the lesion-level counts behind it."""
    match = outcome.match
    parts = [f"image {outcome.outcome.upper()}", f"IoU {outcome.iou:.2f}", f"score {outcome.score:.2f}"]
    if len(outcome.gt_boxes):
        parts.append(f"lesions found {match.tp}/{match.tp + match.fn}")
    if match.fp:
        parts.append(f"false predictions {match.fp}")
    return [", ".join(parts + [os.path.basename(outcome.file_name)])]


def outcome_counts(outcomes: Sequence[ImageOutcome]):
    """``{"image_counts": {tp, fp, fn, tn}, "lesion_counts": {tp, fp, fn}}``: images by their
    outcome, and lesions found (tp) and missed (fn) with the kept predictions that found
    none (fp), pooled as the evaluation suite pools its ``image_level`` and ``lesion_level``."""
    matches = [o.match for o in outcomes]
    images = [m.outcome for m in matches]
    lesions = summarize_matches(matches)
    return {"image_counts": {o: images.count(o) for o in OUTCOMES},
            "lesion_counts": {o: int(lesions[o]) for o in ("tp", "fp", "fn")}}


def select_outcomes(outcomes: Sequence[ImageOutcome], only=None, worst=None):
    """The outcomes to draw.

    Args:
        only: outcome names to keep (e.g. ``("fp",)``); None keeps all.
        worst: keep the ``worst`` lowest-quality images, worst first: lowest own penalised
            IoU, then, among equals, the most confidently wrong (see :func:`wrongness`).
    """
    selected = [o for o in outcomes if only is None or o.outcome in {x.lower() for x in only}]
    if worst is not None:
        selected = sorted(selected, key=lambda o: (o.quality, -wrongness(o)))[:worst]
    return selected


def wrongness(outcome: ImageOutcome):
    """How firmly the model stood by its answer's wrong side, in [0, 1]: a false positive's
    score; for a miss, one minus the best score (no detection at all: 1); for a hit, one
    minus its score; for a true negative, the best score (how close it came to an FP)."""
    if outcome.outcome in ("fp", "tn"):
        return outcome.score
    return 1.0 - outcome.score
