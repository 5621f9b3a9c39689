"""The ``--eval-only`` medical evaluation suite.

:class:`MedicalEvaluationSuite` runs beside Detectron2's ``COCOEvaluator`` (see
``UltrasoundTrainer.build_evaluator``); ``UltrasoundTrainer.test`` merges their results,
prints them as a table and writes them to ``OUTPUT_DIR/inference/<dataset>/results.json``.

Definitions (TP/FP/FN/TN at the operating point are those of
:mod:`ustumor.evaluation.penalized_iou`, with ``TEST.PENALIZED_IOU.SCORE_THRESH``,
``IOU_THRESH`` and ``TOP_K``):

- an image's outcome: "tp" (has lesions, at least one found), "fn" (has lesions, none
  found), "fp" (no lesion, a kept prediction), "tn" (no lesion, no kept prediction);
- a patient (or clip) with lesions is detected ("tp") if any of its frames is "tp",
  otherwise "fn"; one without lesions is "tn" if all its frames are, otherwise "fp";
- ``image_level`` (``patient_level``, ``clip_level``) ``tp/fn/fp/tn`` count images
  (patients, clips) by those outcomes; ``lesion_level`` ``tp/fn`` count lesions (found,
  missed) and ``fp`` kept predictions that found none, so an image with two lesions, one
  missed, adds one image TP but a lesion TP and a lesion FN. ``penalized_iou``'s
  ``tp/fp/fn`` are the lesion-level ones and its ``tn`` counts images. Printed tables,
  ``tools/visualize_predictions.py`` and the report label every count with its unit
  (:data:`COUNTS`);
- sensitivity = tp / (tp + fn), specificity = tn / (tn + fp) at each level;
- FROC: :mod:`ustumor.evaluation.froc` (all detections, hit at IoU >= TEST.FROC.IOU_THRESH);
- image-level ROC ("is there a lesion?"): an image scores its highest detection score (0
  without a detection), the images with lesions are the positives;
- lesion-level precision-recall: the raw curve behind class-agnostic AP50 (COCO matching at
  IoU 0.5), its corners only (``CocoMatches.pr_curve``);
- malignancy AUC (two-class mode only): over images with lesions, malignant ones (any
  malignant box) against benign ones, scored by their highest "malignant" detection
  score (0 without one);
- confidence intervals: :mod:`ustumor.evaluation.bootstrap`, resampling whole units: the
  first dataset-dict field of ``TEST.BOOTSTRAP.CLUSTER_BY`` an image has (its patient, else
  its near-duplicate group), images with neither on their own.

Results JSON schema (``results.json``; undefined values are NaN, written ``NaN`` as Python's
json does; AP values in percent, every other rate in [0, 1])::

    {
      "bbox":           {"AP", "AP50", "AP75", "APs", "APm", "APl", "AP-<class>", ...}
                        # Detectron2's COCOEvaluator, per class
      "bbox_agnostic":  {"AP", "AP50", "AP75"}           # every box one "lesion" class
      "per_class":      {"AP-<class>", "AP50-<class>", "AP75-<class>"}   # only with >1 class
      "froc":           {"sensitivity@0.125", ..., "sensitivity@8", "cpm",
                         "num_lesions", "num_images", "iou_thresh"}
      "froc_curve":     {"fps_per_image": [...], "sensitivity": [...], "score_thresh": [...]}
      "lesion_level":   {"sensitivity", "precision", "mean_iou_tp", "tp", "fp", "fn"}
      "image_level":    {"sensitivity", "specificity", "tp", "fn", "fp", "tn",
                         "num_positive", "num_negative"}
      "patient_level":  same keys as image_level          # only if images have patient_id
      "clip_level":     same keys as image_level          # only if images have clip_id
      "image_roc":      {"auc", "num_positive", "num_negative", "fpr": [...], "tpr": [...],
                         "score_thresh": [...]}            # first point (0, 0) at +inf
      "pr_curve":       {"recall": [...], "precision": [...], "score_thresh": [...],
                         "iou_thresh", "num_lesions"}
      "malignancy":     {"auc", "num_malignant", "num_benign"}   # only in two-class mode
      "penalized_iou":  {"piou", "tp", "fp", "fn", "tn", "iou_sum", "mean_iou_tp",
                         "precision", "sensitivity", "image_sensitivity", "specificity",
                         "accuracy", "num_images", "num_positive_images",
                         "num_negative_images", "score_thresh", "iou_thresh", "top_k"}
      "penalized_iou_sweep": {"0.00": {<penalized_iou's row columns>}, ..., "0.95": {...}}
      "confidence_intervals": {"<section>/<metric>": {"estimate", "low", "high",
                                                      "num_valid"}, ...}
      "settings":       {"dataset", "num_images", "class_names", "score_thresh",
                         "iou_thresh", "top_k", "froc_iou_thresh", "fps_per_image",
                         "bootstrap": {"num_samples", "seed", "confidence",
                                       "cluster_by", "num_clusters"}}
    }

Beside it, in the same folder: ``penalized_iou_sweep.json``/``.csv`` (the sweep as rows)
and ``per_image.json``: one entry per image, ``{"image_id", "file_name", <the identity
fields the image has: "patient_id", "accession", "clip_id", "frame_id", "dicom_frame">,
"outcome", "tp", "fp", "fn", "gt_boxes", "predictions": [{"box", "score",
"class", "outcome", "iou"}]}`` with the kept predictions at the operating point.
"""
import json
import logging
import os

import numpy as np
from detectron2.data import MetadataCatalog
from tabulate import tabulate

from ..data.fields import CLIP_ID, IDENTITY_FIELDS, PATIENT_ID
from ..utils.file_io import atomic_write_text, json_safe
from ..utils.numbers import format_number, ratio
from .average_precision import CocoMatches
from .bootstrap import all_once, bootstrap, clusters_of
from .froc import DEFAULT_FPS_PER_IMAGE, PooledHits, image_hits
from .penalized_iou import (SWEEP_THRESHOLDS, match_image, save_sweep,
                            summarize_matches, sweep, sweep_as_dict)
from .records import DetectionCollector
from .roc import roc_auc, roc_curve

logger = logging.getLogger(__name__)

__all__ = ["MedicalEvaluationSuite", "SuiteAnalysis", "evaluate_suite", "format_results_table", "count_rows",
           "count_legend", "COUNTS", "COUNT_DEFINITIONS"]

# Metrics that get confidence intervals, per section (counts and settings do not).
HEADLINE = {
    "bbox_agnostic": ("AP", "AP50", "AP75"),
    "per_class": None,  # all of them
    "froc": tuple(f"sensitivity@{t:g}" for t in DEFAULT_FPS_PER_IMAGE) + ("cpm",),
    "lesion_level": ("sensitivity", "precision", "mean_iou_tp"),
    "image_level": ("sensitivity", "specificity"),
    "patient_level": ("sensitivity", "specificity"),
    "clip_level": ("sensitivity", "specificity"),
    "image_roc": ("auc",),
    "malignancy": ("auc",),
    "penalized_iou": ("piou",),
}


# Aggregation levels above the image: a patient (clip) is detected if any of its frames is.
LEVELS = {"patient_level": PATIENT_ID, "clip_level": CLIP_ID}


def _level_summary(outcomes):
    counts = {o: outcomes.count(o) for o in ("tp", "fn", "fp", "tn")}
    positives, negatives = counts["tp"] + counts["fn"], counts["tn"] + counts["fp"]
    return {"sensitivity": ratio(counts["tp"], positives), "specificity": ratio(counts["tn"], negatives),
            **counts, "num_positive": positives, "num_negative": negatives}


def _group_outcome(image_outcomes):
    """A patient's or clip's outcome from its frames' (module docstring)."""
    if any(o in ("tp", "fn") for o in image_outcomes):
        return "tp" if "tp" in image_outcomes else "fn"
    return "fp" if "fp" in image_outcomes else "tn"


class SuiteAnalysis:
    """Everything per image that the suite's numbers are pooled from, computed once, so that
    :meth:`metrics` can be re-run on bootstrap resamples cheaply."""

    def __init__(self, records, class_names=("lesion",), score_thresh=0.45, iou_thresh=0.25, top_k=1,
                 froc_iou_thresh=0.1, fps_per_image=DEFAULT_FPS_PER_IMAGE, cluster_by="patient_id,group_id"):
        self.records = records
        self.class_names = list(class_names)
        self.fps_per_image = tuple(fps_per_image)
        self.matches = [match_image(r.pred_boxes, r.pred_scores, r.gt_boxes, score_thresh, iou_thresh, top_k)
                        for r in records]
        self.lesions = np.array([len(r.gt_boxes) for r in records], dtype=np.int64)
        self.image_score = np.array([float(np.max(r.pred_scores, initial=0.0)) for r in records])
        self.hits = PooledHits([image_hits(r.pred_boxes, r.pred_scores, r.gt_boxes, froc_iou_thresh)
                                for r in records], self.lesions)
        self.coco_agnostic = CocoMatches(records, class_agnostic=True)
        self.coco_classes = (CocoMatches(records, self.class_names, class_agnostic=False)
                             if len(self.class_names) > 1 else None)
        self.units = [r.unit(cluster_by) for r in records]
        self.levels = {level: key for level, key in LEVELS.items()
                       if any(r.meta.get(key) not in (None, "") for r in records)}
        self.malignant = None
        if {"benign", "malignant"} <= set(self.class_names):
            self.malignant = self.class_names.index("malignant")
            self.malignancy_score = np.array([
                float(r.pred_scores[r.pred_classes == self.malignant].max(initial=0.0)) for r in records])
            self.is_malignant = np.array([bool((r.gt_classes == self.malignant).any()) for r in records])

    def metrics(self, indices=None, draws=None):
        """The suite's sections (module docstring) over the images ``indices`` (repeats
        allowed); ``draws`` tells apart repeated draws of one patient or clip."""
        if indices is None:
            indices, draws = all_once(self.units)
        records = self.records
        matches = [self.matches[i] for i in indices]
        result = {"bbox_agnostic": self.coco_agnostic.average_precision(indices)}
        if self.coco_classes is not None:
            result["per_class"] = {k: v for k, v in self.coco_classes.average_precision(indices).items() if "-" in k}
        counts = np.bincount(np.asarray(indices, dtype=np.int64), minlength=len(records))
        result["froc"] = self.hits.froc(self.fps_per_image, counts)
        pooled = summarize_matches(matches)
        result["lesion_level"] = {"sensitivity": pooled["sensitivity"], "precision": pooled["precision"],
                                  "mean_iou_tp": pooled["mean_iou_tp"], "tp": pooled["tp"], "fp": pooled["fp"],
                                  "fn": pooled["fn"]}
        result["image_level"] = _level_summary([m.outcome for m in matches])
        for level, key in self.levels.items():
            groups = {}
            for i, draw in zip(indices, draws):
                groups.setdefault((int(draw), records[i].unit(key)), []).append(self.matches[i].outcome)
            result[level] = _level_summary([_group_outcome(g) for g in groups.values()])
        has_lesion = self.lesions[indices] > 0
        result["image_roc"] = {"auc": roc_auc(has_lesion, self.image_score[indices]),
                               "num_positive": int(has_lesion.sum()), "num_negative": int((~has_lesion).sum())}
        if self.malignant is not None:
            with_lesion = [i for i in indices if self.lesions[i]]
            labels = self.is_malignant[with_lesion]
            result["malignancy"] = {"auc": roc_auc(labels, self.malignancy_score[with_lesion]),
                                    "num_malignant": int(labels.sum()), "num_benign": int((~labels).sum())}
        result["penalized_iou"] = pooled
        return result

    def headline(self, indices=None, draws=None):
        """The metrics that get confidence intervals, flattened to ``section/name``."""
        flat = {}
        for section, values in self.metrics(indices, draws).items():
            names = HEADLINE.get(section, ())
            for name, value in values.items():
                if names is None or name in names:
                    flat[f"{section}/{name}"] = value
        return flat


def evaluate_suite(records, class_names=("lesion",), score_thresh=0.45, iou_thresh=0.25, top_k=1,
                   froc_iou_thresh=0.1, fps_per_image=DEFAULT_FPS_PER_IMAGE, num_bootstrap=1000,
                   bootstrap_seed=0, confidence=0.95, cluster_by="patient_id,group_id", output_dir=None,
                   dataset_name=""):
    """The suite's results (module docstring) for a list of ImageRecord."""
    analysis = SuiteAnalysis(records, class_names, score_thresh, iou_thresh, top_k, froc_iou_thresh,
                             fps_per_image, cluster_by)
    results = analysis.metrics()
    results["froc"]["iou_thresh"] = float(froc_iou_thresh)
    results["penalized_iou"].update(score_thresh=float(score_thresh), iou_thresh=float(iou_thresh),
                                    top_k=int(top_k or 0))
    _, results["froc_curve"] = analysis.hits.froc(fps_per_image, with_curve=True)
    fpr, tpr, thresholds = roc_curve(analysis.lesions > 0, analysis.image_score)
    results["image_roc"].update(fpr=fpr.tolist(), tpr=tpr.tolist(), score_thresh=thresholds.tolist())
    results["pr_curve"] = analysis.coco_agnostic.pr_curve(0.5)
    predictions = [(r.pred_boxes, r.pred_scores) for r in records]
    rows = sweep(predictions, [r.gt_boxes for r in records], iou_thresh, top_k, SWEEP_THRESHOLDS)
    results["penalized_iou_sweep"] = sweep_as_dict(rows)

    estimates = analysis.headline()
    intervals = {}
    if num_bootstrap > 0 and records:
        intervals = bootstrap(analysis.headline, analysis.units, num_bootstrap, bootstrap_seed, confidence)
    results["confidence_intervals"] = with_intervals(estimates, intervals)
    results["settings"] = {
        "dataset": dataset_name, "num_images": len(records), "class_names": list(class_names),
        "score_thresh": float(score_thresh), "iou_thresh": float(iou_thresh), "top_k": int(top_k or 0),
        "froc_iou_thresh": float(froc_iou_thresh), "fps_per_image": [float(t) for t in fps_per_image],
        "bootstrap": {"num_samples": int(num_bootstrap), "seed": int(bootstrap_seed), "confidence": float(confidence),
                      "cluster_by": cluster_by, "num_clusters": len(clusters_of(analysis.units))},
    }
    if output_dir:
        save_sweep(rows, output_dir)
        atomic_write_text(os.path.join(output_dir, "per_image.json"),
                          json.dumps(json_safe(per_image_entries(analysis, class_names)), indent=1))
    return results


def paired_differences(records_a, records_b, class_names=("lesion",), num_bootstrap=1000, bootstrap_seed=0,
                       confidence=0.95, cluster_by="patient_id,group_id", **settings):
    """Each headline metric of ``records_b`` minus that of ``records_a``: two models'
    predictions on the same images, compared on the same resamples. Its interval is the
    comparison's own, narrower than two separate intervals wherever both models find and miss
    the same lesions. ``settings``: the operating point and FROC keywords of :func:`evaluate_suite`.

    Returns ``{name: {"estimate", "low", "high", "num_valid"}}`` like ``confidence_intervals``.
    """
    images_a, images_b = [r.image_id for r in records_a], [r.image_id for r in records_b]
    if images_a != images_b:
        differing = next((a, b) for a, b in zip(images_a + [None], images_b + [None]) if a != b)
        raise ValueError(f"paired_differences needs the same images in the same order: {len(images_a)} "
                         f"against {len(images_b)} images, first difference {differing}")
    analysis_a = SuiteAnalysis(records_a, class_names, cluster_by=cluster_by, **settings)
    analysis_b = SuiteAnalysis(records_b, class_names, cluster_by=cluster_by, **settings)

    def difference(indices=None, draws=None):
        headline_a = analysis_a.headline(indices, draws)
        return {name: value - headline_a[name] for name, value in analysis_b.headline(indices, draws).items()}

    estimates = difference()
    intervals = bootstrap(difference, analysis_a.units, num_bootstrap, bootstrap_seed, confidence) \
        if num_bootstrap > 0 else {}
    return with_intervals(estimates, intervals)


def with_intervals(estimates, intervals):
    """``{name: {"estimate", "low", "high", "num_valid"}}``; NaN bounds where none was computed."""
    missing = {"low": float("nan"), "high": float("nan"), "num_valid": 0}
    return {name: {"estimate": value, **intervals.get(name, missing)} for name, value in estimates.items()}


def per_image_entries(analysis, class_names):
    entries = []
    for record, match in zip(analysis.records, analysis.matches):
        predictions = [
            {"box": record.pred_boxes[k].tolist(), "score": float(record.pred_scores[k]),
             "class": class_names[int(record.pred_classes[k])] if int(record.pred_classes[k]) < len(class_names)
             else int(record.pred_classes[k]),
             "outcome": outcome, "iou": float(iou)}
            for k, outcome, iou in zip(match.kept, match.pred_outcome, match.pred_iou)
        ]
        entries.append({
            "image_id": record.image_id, "file_name": record.meta.get("file_name"),
            **{key: record.meta.get(key) for key in IDENTITY_FIELDS if key in record.meta},
            "outcome": match.outcome, "tp": match.tp, "fp": match.fp, "fn": match.fn,
            "gt_boxes": record.gt_boxes.tolist(), "predictions": predictions,
        })
    return entries


def suite_settings(cfg, dataset_name):
    """The keywords of :func:`evaluate_suite` (and :func:`paired_differences`) that a config sets."""
    return dict(
        class_names=MetadataCatalog.get(dataset_name).get("thing_classes", ["lesion"]),
        score_thresh=cfg.TEST.PENALIZED_IOU.SCORE_THRESH, iou_thresh=cfg.TEST.PENALIZED_IOU.IOU_THRESH,
        top_k=cfg.TEST.PENALIZED_IOU.TOP_K, froc_iou_thresh=cfg.TEST.FROC.IOU_THRESH,
        fps_per_image=tuple(cfg.TEST.FROC.FPS_PER_IMAGE), num_bootstrap=cfg.TEST.BOOTSTRAP.NUM_SAMPLES,
        bootstrap_seed=cfg.TEST.BOOTSTRAP.SEED, confidence=cfg.TEST.BOOTSTRAP.CONFIDENCE,
        cluster_by=cfg.TEST.BOOTSTRAP.CLUSTER_BY,
    )


class MedicalEvaluationSuite(DetectionCollector):
    """DatasetEvaluator returning :func:`evaluate_suite`'s results (module docstring)."""

    def __init__(self, dataset_name, output_dir=None, distributed=True, **settings):
        super().__init__(dataset_name, distributed=distributed)
        self.output_dir = output_dir
        self.settings = settings

    @classmethod
    def from_config(cls, cfg, dataset_name, output_dir=None):
        return cls(dataset_name, output_dir=output_dir, **suite_settings(cfg, dataset_name))

    def evaluate(self):
        records = self.collect()
        if records is None:  # not the main process
            return {}
        if not records:
            logger.warning("No images to evaluate on %s", self.dataset_name)
            return {}
        return evaluate_suite(records, output_dir=self.output_dir, dataset_name=self.dataset_name, **self.settings)


# Sections and metrics shown in the printed table, in order; per-class entries are added.
TABLE = (
    ("bbox", ("AP", "AP50", "AP75")),
    ("bbox_agnostic", ("AP", "AP50", "AP75")),
    ("per_class", None),
    ("froc", HEADLINE["froc"]),
    ("lesion_level", ("sensitivity", "precision", "mean_iou_tp")),
    ("image_level", ("sensitivity", "specificity")),
    ("patient_level", ("sensitivity", "specificity")),
    ("clip_level", ("sensitivity", "specificity")),
    ("image_roc", ("auc",)),
    ("malignancy", ("auc",)),
    ("penalized_iou", ("piou",)),
)


def format_results_table(results):
    """A text table of the headline numbers (with 95% CIs when the results have them)."""
    intervals = results.get("confidence_intervals", {})
    rows = []
    for section, names in TABLE:
        values = results.get(section)
        if not isinstance(values, dict):
            continue
        if section == "bbox":
            names = list(names) + sorted(k for k in values if k.startswith("AP-"))
        for name in (names if names is not None else sorted(values)):
            if name not in values:
                continue
            interval = intervals.get(f"{section}/{name}")
            ci = f"[{format_number(interval['low'], 4)}, {format_number(interval['high'], 4)}]" if interval else ""
            rows.append((section, name, format_number(values[name], 4), ci))
    counts = count_rows(results)
    rows.extend((section, label, value, "") for section, label, value in counts)
    settings = results.get("settings", {}).get("bootstrap", {})
    header = ("section", "metric", "value",
              f"{100 * settings.get('confidence', 0.95):g}% CI" if intervals else "")
    table = tabulate(rows, headers=header, tablefmt="pipe")
    return "\n".join([table, *count_legend(results)]) if counts else table


# The operating point's counts, each with the unit it counts (module docstring).
COUNTS = (
    ("lesion_level", "lesions", ("tp", "fp", "fn")),
    ("image_level", "images", ("tp", "fp", "fn", "tn")),
    ("patient_level", "patients", ("tp", "fp", "fn", "tn")),
    ("clip_level", "clips", ("tp", "fp", "fn", "tn")),
)
COUNT_DEFINITIONS = {
    "lesions": "TP a lesion found, FN a lesion missed, FP a kept prediction that found no lesion",
    "images": "TP has lesions and one was found, FN has lesions and none was found, "
              "FP no lesion but a kept prediction, TN no lesion and no kept prediction",
}


def count_rows(results):
    """``[(section, label, "a/b/c")]``: the operating point's counts, labelled with their unit,
    e.g. ``("lesion_level", "lesions TP/FP/FN", "46/0/5")``. Results holding penalised IoU
    alone (evaluation during training) give its lesion TP/FP/FN and its image TN."""
    rows = []
    for section, unit, names in COUNTS:
        values = results.get(section)
        if isinstance(values, dict) and all(name in values for name in names):
            rows.append((section, f"{unit} {'/'.join(n.upper() for n in names)}",
                         "/".join(str(values[n]) for n in names)))
    piou = results.get("penalized_iou")
    if not rows and isinstance(piou, dict) and all(k in piou for k in ("tp", "fp", "fn", "tn")):
        rows.append(("penalized_iou", "lesions TP/FP/FN", f"{piou['tp']}/{piou['fp']}/{piou['fn']}"))
        rows.append(("penalized_iou", "images TN", str(piou["tn"])))
    return rows


def count_legend(results):
    """Lines saying what the counts of :func:`count_rows` count, at which operating point."""
    point = results.get("settings") or results.get("penalized_iou") or {}
    lines = []
    if "score_thresh" in point:
        lines.append(f"Counts at score >= {point['score_thresh']:g}, IoU >= {point['iou_thresh']:g}, "
                     f"at most {point['top_k'] or 'all'} kept prediction(s) per image.")
    lines.append(f"lesions: {COUNT_DEFINITIONS['lesions']}.")
    lines.append(f"images: {COUNT_DEFINITIONS['images']}; a patient or clip is TP if any of its images is.")
    return lines
