"""Evaluation figures from the ``--eval-only`` results JSON (``ustumor.evaluation.suite``).

- ``froc``: lesion sensitivity against false positives per image, with the bootstrap
  confidence band at the FROC's reading points and the CPM;
- ``pr``: lesion-level precision against recall, from the results' ``pr_curve`` (COCO
  matching at IoU 0.5, the curve behind AP50). Results written before that section
  existed are read off the FROC curve instead, which lists every operating point of all
  detections: ``TP = sensitivity * lesions`` and ``FP = FPs per image * images``, a hit
  being the FROC's (IoU >= ``froc.iou_thresh``);
- ``sweep_rates``, ``sweep_counts``, ``sweep_piou``: the penalised-IoU score-threshold
  sweep (accuracy, precision and recall; TP/FP/FN/TN; penalised IoU), with the
  operating point marked;
- ``roc``: image-level ROC from the results' ``image_roc`` section; for results written
  before it existed, from the sweep's image-level sensitivity and specificity at its 20
  cut-offs (a coarse curve; its AUC is the trapezoid through those points);
- ``confusion``: image-level confusion matrix at the operating point (and patient- and
  clip-level ones when the results have them).
"""
import json

import matplotlib

matplotlib.use("Agg")  # files only: no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .figures import save_figures  # noqa: E402

__all__ = ["load_results", "pr_from_froc", "roc_from_sweep", "sweep_table", "make_figures", "plot_results",
           "FIGURES"]


def load_results(path):
    with open(path) as f:
        return json.load(f)


def _float(value):
    return float("nan") if value is None else float(value)


def sweep_table(results):
    """The penalised-IoU sweep as ``{column: array}`` sorted by ``score_thresh``."""
    sweep = results.get("penalized_iou_sweep") or {}
    thresholds = sorted(sweep, key=float)
    if not thresholds:
        return {}
    columns = sorted({c for row in sweep.values() for c in row})
    table = {"score_thresh": np.array([float(t) for t in thresholds])}
    for column in columns:
        table[column] = np.array([_float(sweep[t].get(column)) for t in thresholds])
    return table


def pr_from_froc(results):
    """(recall, precision) of every FROC operating point (module docstring)."""
    if "pr_curve" in results:
        curve = results["pr_curve"]
        return np.asarray(curve["recall"], float), np.asarray(curve["precision"], float)
    curve, froc = results.get("froc_curve") or {}, results.get("froc") or {}
    lesions, images = froc.get("num_lesions") or 0, froc.get("num_images") or 0
    sensitivity = np.asarray(curve.get("sensitivity", []), dtype=float)
    fps = np.asarray(curve.get("fps_per_image", []), dtype=float)
    if not len(sensitivity) or not lesions:
        return np.zeros(0), np.zeros(0)
    true_positives = sensitivity * lesions
    false_positives = fps * images
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = true_positives / (true_positives + false_positives)
    return sensitivity, precision


def roc_from_sweep(results):
    """(false-positive rate, true-positive rate, source) at image level, from (0, 0) to (1, 1)."""
    if "image_roc" in results:
        roc = results["image_roc"]
        return np.asarray(roc["fpr"], float), np.asarray(roc["tpr"], float), "image_roc"
    table = sweep_table(results)
    if not table or "specificity" not in table or "image_sensitivity" not in table:
        return np.zeros(0), np.zeros(0), "none"
    fpr = 1 - table["specificity"]
    tpr = table["image_sensitivity"]
    valid = np.isfinite(fpr) & np.isfinite(tpr)
    order = np.lexsort((tpr[valid], fpr[valid]))
    fpr = np.r_[0.0, fpr[valid][order], 1.0]
    tpr = np.r_[0.0, tpr[valid][order], 1.0]
    return fpr, tpr, "sweep"


def _operating_threshold(results):
    return (results.get("settings") or {}).get("score_thresh", (results.get("penalized_iou") or {}).get("score_thresh"))


def _finish(axis, title, xlabel, ylabel, legend=True):
    axis.set_title(title)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.grid(True, alpha=0.3)
    if legend and axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize=8)


def plot_froc(axis, results):
    curve, froc = results.get("froc_curve") or {}, results.get("froc") or {}
    fps = np.asarray(curve.get("fps_per_image", []), float)
    sensitivity = np.asarray(curve.get("sensitivity", []), float)
    targets = (results.get("settings") or {}).get("fps_per_image") or [0.125, 0.25, 0.5, 1, 2, 4, 8]
    # the curve starts at "no detection": 0 FPs, 0 sensitivity
    axis.step(np.r_[0.0, fps], np.r_[0.0, sensitivity], where="post", label="FROC", color="C0")
    if len(fps) and fps[-1] < max(targets):  # past the last detection the sensitivity stays put
        axis.plot([fps[-1], max(targets)], [sensitivity[-1]] * 2, ":", color="C0", label="beyond the last detection")
    points = np.array([_float(froc.get(f"sensitivity@{t:g}")) for t in targets])
    intervals = results.get("confidence_intervals") or {}
    low = np.array([_float((intervals.get(f"froc/sensitivity@{t:g}") or {}).get("low")) for t in targets])
    high = np.array([_float((intervals.get(f"froc/sensitivity@{t:g}") or {}).get("high")) for t in targets])
    if np.isfinite(low).any():
        confidence = ((results.get("settings") or {}).get("bootstrap") or {}).get("confidence", 0.95)
        axis.fill_between(targets, low, high, color="C0", alpha=0.2, label=f"{100 * confidence:g}% bootstrap CI")
    axis.plot(targets, points, "o", color="C0", label=f"CPM {_float(froc.get('cpm')):.3f}")
    axis.set_xscale("log", base=2)
    axis.set_xlim(min(targets) / 1.5, max(targets) * 1.5)
    axis.set_xticks(targets)
    axis.set_xticklabels([f"{t:g}" for t in targets])
    axis.set_ylim(0, 1.02)
    _finish(axis, f"FROC (hit: IoU \u2265 {_float(froc.get('iou_thresh')):g})", "false positives per image (count)",
            "lesion sensitivity (fraction)")


def plot_pr(axis, results):
    recall, precision = pr_from_froc(results)
    froc = results.get("froc") or {}
    if "pr_curve" in results:
        source = f" (hit: IoU \u2265 {_float(results['pr_curve'].get('iou_thresh')):g})"
    else:
        source = f" (from the FROC curve, hit: IoU \u2265 {_float(froc.get('iou_thresh')):g})"
    axis.plot(recall, precision, "-", color="C0", label="all detections" + source)
    piou = results.get("penalized_iou") or {}
    if piou.get("sensitivity") is not None and piou.get("precision") is not None:
        axis.plot([piou["sensitivity"]], [piou["precision"]], "*", markersize=12, color="C3",
                  label=f"operating point: score \u2265 {_float(piou.get('score_thresh')):.2f}, "
                        f"top {piou.get('top_k')}, IoU \u2265 {_float(piou.get('iou_thresh')):.2f}")
    axis.set_xlim(0, 1.02)
    axis.set_ylim(0, 1.02)
    _finish(axis, "Precision-recall (lesion level)", "recall = lesion sensitivity (fraction)", "precision (fraction)")


def _mark_threshold(axis, results):
    threshold = _operating_threshold(results)
    if threshold is not None:
        axis.axvline(float(threshold), color="grey", linestyle=":", label=f"operating point {float(threshold):.2f}")


def plot_sweep_rates(axis, results):
    table = sweep_table(results)
    for column, label in (("accuracy", "accuracy (image level)"), ("precision", "precision (lesion level)"),
                          ("sensitivity", "recall (lesion level)")):
        if column in table:
            axis.plot(table["score_thresh"], table[column], "o-", markersize=3, label=label)
    _mark_threshold(axis, results)
    axis.set_ylim(0, 1.02)
    _finish(axis, "Score-threshold sweep: rates", "score threshold (cut-off)", "rate (fraction)")


def plot_sweep_counts(axis, results):
    table = sweep_table(results)
    for column in ("tp", "fp", "fn", "tn"):
        if column in table:
            axis.plot(table["score_thresh"], table[column], "o-", markersize=3, label=column.upper())
    _mark_threshold(axis, results)
    axis.set_ylim(bottom=0)
    _finish(axis, "Score-threshold sweep: counts", "score threshold (cut-off)", "count (lesions; TN: images)")


def plot_sweep_piou(axis, results):
    table = sweep_table(results)
    if "piou" in table:
        axis.plot(table["score_thresh"], table["piou"], "o-", markersize=3, color="C2", label="penalised IoU")
    _mark_threshold(axis, results)
    axis.set_ylim(0, 1.02)
    _finish(axis, "Score-threshold sweep: penalised IoU", "score threshold (cut-off)", "penalised IoU (fraction, 0-1)")


def plot_roc(axis, results):
    fpr, tpr, source = roc_from_sweep(results)
    auc = float(np.trapezoid(tpr, fpr)) if len(fpr) > 1 else float("nan")
    if "image_roc" in results and results["image_roc"].get("auc") is not None:
        auc = float(results["image_roc"]["auc"])
    label = f"AUC {auc:.3f}" + (" (through the sweep's cut-offs)" if source == "sweep" else "")
    axis.plot(fpr, tpr, "o-" if source == "sweep" else "-", markersize=3, color="C0", label=label)
    axis.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8, label="chance")
    axis.set_xlim(-0.01, 1.01)
    axis.set_ylim(-0.01, 1.01)
    axis.set_aspect("equal")
    _finish(axis, "Image-level ROC (lesion present?)", "false-positive rate = 1 - specificity (fraction)",
            "true-positive rate = sensitivity (fraction)")


def confusion_levels(results):
    """``[(level name, 2x2 counts [[TP, FN], [FP, TN]])]`` for the levels the results have."""
    levels = []
    for key, name in (("image_level", "images"), ("patient_level", "patients"), ("clip_level", "clips")):
        counts = results.get(key)
        if counts and all(c in counts for c in ("tp", "fn", "fp", "tn")):
            levels.append((name, np.array([[counts["tp"], counts["fn"]], [counts["fp"], counts["tn"]]], dtype=int)))
    return levels


def plot_confusion(figure, results):
    levels = confusion_levels(results)
    axes = figure.subplots(1, max(len(levels), 1), squeeze=False)[0]
    for axis, (name, matrix) in zip(axes, levels):
        axis.imshow(matrix, cmap="Blues", vmin=0, vmax=max(int(matrix.max()), 1))
        for (row, column), count in np.ndenumerate(matrix):
            total = matrix[row].sum()
            share = f"\n{100 * count / total:.0f}% of row" if total else ""
            dark = count > matrix.max() / 2
            axis.text(column, row, f"{count}{share}", ha="center", va="center",
                      color="white" if dark else "black", fontsize=10)
        axis.set_xticks([0, 1], ["lesion detected", "no detection"])
        axis.set_yticks([0, 1], ["lesion", "no lesion"])
        axis.set_xlabel(f"prediction ({name}, count)")
        axis.set_ylabel(f"truth ({name}, count)")
        axis.set_title(f"Confusion matrix: {name}")
    threshold = _operating_threshold(results)
    if threshold is not None:
        figure.suptitle(f"at score \u2265 {float(threshold):.2f}", fontsize=9)


# name -> (needs, draw on one axis / on the figure)
FIGURES = {
    "froc": (lambda r: bool((r.get("froc_curve") or {}).get("fps_per_image") is not None), plot_froc),
    "pr": (lambda r: "pr_curve" in r or bool((r.get("froc_curve") or {}).get("sensitivity")), plot_pr),
    "sweep_rates": (lambda r: bool(r.get("penalized_iou_sweep")), plot_sweep_rates),
    "sweep_counts": (lambda r: bool(r.get("penalized_iou_sweep")), plot_sweep_counts),
    "sweep_piou": (lambda r: bool(r.get("penalized_iou_sweep")), plot_sweep_piou),
    "roc": (lambda r: "image_roc" in r or bool(r.get("penalized_iou_sweep")), plot_roc),
    "confusion": (lambda r: bool(confusion_levels(r)), plot_confusion),
}


def make_figure(name, results):
    """The matplotlib figure ``name`` (a key of :data:`FIGURES`), or None when the results lack its data."""
    needs, draw = FIGURES[name]
    if not needs(results):
        return None
    if name == "confusion":
        figure = plt.figure(figsize=(4.8 * len(confusion_levels(results)), 4.4))
        draw(figure, results)
    else:
        figure, axis = plt.subplots(figsize=(6.4, 4.8) if name != "roc" else (5.6, 5.6))
        draw(axis, results)
    figure.tight_layout()
    return figure


def make_figures(results):
    return {name: figure for name in FIGURES if (figure := make_figure(name, results)) is not None}


def plot_results(results, output_dir, dpi=150):
    """Write each figure the results have data for as ``<name>.png``; returns ``{name: path}``."""
    return save_figures(((name, make_figure(name, results)) for name in FIGURES), output_dir, dpi)
