"""COCO AP that can be recomputed on any multiset of images (for bootstrap intervals).

pycocotools' ``COCOeval.evaluate`` matches detections to ground truth per image and
category; ``accumulate`` then pools the matches. Matching is per image, so it is run once
(by pycocotools) and only the pooling is redone for each resample, here for the
"all areas, 100 detections" setting behind AP, AP50 and AP75. On the full set the numbers
are pycocotools' own (a test checks this).
"""
import contextlib
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def _xywh(box):
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


class CocoMatches:
    """Per-image COCO matches of :class:`~ustumor.evaluation.records.ImageRecord` s.

    Args:
        records: the images.
        class_names: category names (contiguous ids); ignored when ``class_agnostic``.
        class_agnostic: treat every box as one "lesion" class.
    """

    def __init__(self, records, class_names=("lesion",), class_agnostic=True, max_detections=100):
        self.class_names = ["lesion"] if class_agnostic else list(class_names)
        self.num_images = len(records)
        category = (lambda c: 1) if class_agnostic else (lambda c: int(c) + 1)
        annotations, detections = [], []
        for i, record in enumerate(records):
            for box, cls in zip(record.gt_boxes, record.gt_classes):
                x, y, w, h = _xywh(box)
                annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": category(cls),
                                    "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
            for box, score, cls in zip(record.pred_boxes, record.pred_scores, record.pred_classes):
                detections.append({"image_id": i, "category_id": category(cls), "bbox": _xywh(box),
                                   "score": float(score)})
        ground_truth = COCO()
        ground_truth.dataset = {
            "images": [{"id": i} for i in range(len(records))],
            "annotations": annotations,
            "categories": [{"id": k + 1, "name": n} for k, n in enumerate(self.class_names)],
        }
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            ground_truth.createIndex()
            self.iou_thresholds = COCOeval(iouType="bbox").params.iouThrs
            self.recall_thresholds = COCOeval(iouType="bbox").params.recThrs
            # per category: per image, None or (scores, matched (T, D), ignored (T, D), lesions)
            self.per_image = [[None] * len(records) for _ in self.class_names]
            self._pooled_cache = {}
            if detections:
                evaluation = COCOeval(ground_truth, ground_truth.loadRes(detections), "bbox")
                evaluation.params.areaRng = [[0, 1e10]]
                evaluation.params.areaRngLbl = ["all"]
                evaluation.params.maxDets = [max_detections]
                evaluation.evaluate()
                self._keep(evaluation)
            else:  # no detection at all: every present category has AP 0
                for k in range(len(self.class_names)):
                    for i, record in enumerate(records):
                        lesions = int(sum(category(c) == k + 1 for c in record.gt_classes))
                        if lesions:
                            empty = np.zeros((len(self.iou_thresholds), 0), bool)
                            self.per_image[k][i] = (np.zeros(0), empty, empty, lesions)

    def _keep(self, evaluation):
        image_ids = evaluation.params.imgIds
        for k in range(len(self.class_names)):
            for i in range(len(image_ids)):
                entry = evaluation.evalImgs[k * len(image_ids) + i]
                if entry is None:
                    continue
                self.per_image[k][image_ids[i]] = (
                    np.asarray(entry["dtScores"], dtype=np.float64),
                    np.asarray(entry["dtMatches"]) > 0,
                    np.asarray(entry["dtIgnore"], dtype=bool),
                    int(np.count_nonzero(np.asarray(entry["gtIgnore"]) == 0)),
                )

    def _pooled(self, category):
        """All of a category's detections, sorted once as COCOeval.accumulate sorts them for
        the full set: (image of each, score of each, TP (T, D), FP (T, D), lesions per image)."""
        if category not in self._pooled_cache:
            images, scores, true_positives, false_positives = [], [], [], []
            lesions = np.zeros(self.num_images, dtype=np.int64)
            for i, entry in enumerate(self.per_image[category]):
                if entry is None:
                    continue
                entry_scores, matched, ignored, lesions[i] = entry
                matched = matched.reshape(len(self.iou_thresholds), -1)
                ignored = ignored.reshape(len(self.iou_thresholds), -1)
                images.append(np.full(len(entry_scores), i))
                scores.append(entry_scores)
                true_positives.append(matched & ~ignored)
                false_positives.append(~matched & ~ignored)
            empty = np.zeros((len(self.iou_thresholds), 0), bool)
            scores = np.concatenate(scores) if scores else np.zeros(0)
            order = np.argsort(-scores, kind="mergesort")
            self._pooled_cache[category] = (
                np.concatenate(images)[order] if images else np.zeros(0, np.int64),
                scores[order],
                np.concatenate(true_positives, axis=1)[:, order] if images else empty,
                np.concatenate(false_positives, axis=1)[:, order] if images else empty,
                lesions,
            )
        return self._pooled_cache[category]

    def pr_curve(self, iou_threshold=0.5, category=0):
        """The raw precision-recall curve behind AP at ``iou_threshold`` (one of COCO's),
        pooled as COCOeval.accumulate pools it, before interpolation. Between two detections
        that find a lesion recall stays put while precision falls, so only the corners are
        kept: each finding detection and the last detection before the next one (at most
        two points per lesion, plus the end). ``{"recall", "precision", "score_thresh",
        "iou_thresh", "num_lesions"}``."""
        _, scores, true_positives, false_positives, lesions = self._pooled(category)
        t = int(np.argmin(np.abs(self.iou_thresholds - iou_threshold)))
        counted = true_positives[t] | false_positives[t]
        hits = true_positives[t][counted]
        tp_sum, fp_sum = np.cumsum(hits), np.cumsum(false_positives[t][counted])
        corners = hits | np.r_[hits[1:], True]
        num_lesions = int(lesions.sum())
        return {"recall": (tp_sum[corners] / max(num_lesions, 1)).tolist(),
                "precision": (tp_sum[corners] / (tp_sum[corners] + fp_sum[corners])).tolist(),
                "score_thresh": scores[counted][corners].tolist(),
                "iou_thresh": float(self.iou_thresholds[t]), "num_lesions": num_lesions}

    def precision(self, category, counts):
        """(T, R) interpolated precision as COCOeval.accumulate, or None without lesions.

        ``counts[i]``: how often image ``i`` is in the sample (a bootstrap resample repeats
        images); a repeated image's detections count that many times, in place.
        """
        images, _, true_positives, false_positives, lesions = self._pooled(category)
        num_lesions = int(counts @ lesions)
        if not num_lesions:
            return None
        weights = counts[images].astype(np.float64)
        tp_sum = np.cumsum(true_positives * weights, axis=1)
        fp_sum = np.cumsum(false_positives * weights, axis=1)
        precision = np.zeros((len(self.iou_thresholds), len(self.recall_thresholds)))
        if not len(weights):
            return precision
        recall = tp_sum / num_lesions
        # pycocotools' loop: precision made non-increasing from the right
        envelope = np.maximum.accumulate((tp_sum / (fp_sum + tp_sum + np.spacing(1)))[:, ::-1], axis=1)[:, ::-1]
        for t in range(len(self.iou_thresholds)):
            positions = np.searchsorted(recall[t], self.recall_thresholds, side="left")
            reached = positions < len(weights)
            precision[t, reached] = envelope[t, positions[reached]]
        return precision

    def average_precision(self, image_indices=None):
        """``{"AP", "AP50", "AP75"}`` in percent (as Detectron2's COCOEvaluator) averaged over
        categories with lesions, and per category ``"AP-<name>"`` etc. when there are several."""
        if image_indices is None:
            image_indices = np.arange(self.num_images)
        counts = np.bincount(np.asarray(image_indices, dtype=np.int64), minlength=self.num_images)
        per_category = [self.precision(k, counts) for k in range(len(self.class_names))]
        present = [p for p in per_category if p is not None]
        t50 = int(np.argmin(np.abs(self.iou_thresholds - 0.5)))
        t75 = int(np.argmin(np.abs(self.iou_thresholds - 0.75)))

        def summary(precisions, suffix=""):
            if not precisions:
                return {f"AP{suffix}": float("nan"), f"AP50{suffix}": float("nan"), f"AP75{suffix}": float("nan")}
            stacked = np.stack(precisions)
            return {f"AP{suffix}": 100 * float(stacked.mean()), f"AP50{suffix}": 100 * float(stacked[:, t50].mean()),
                    f"AP75{suffix}": 100 * float(stacked[:, t75].mean())}

        result = summary(present)
        if len(self.class_names) > 1:
            for name, precision in zip(self.class_names, per_category):
                result.update(summary([precision] if precision is not None else [], f"-{name}"))
        return result
