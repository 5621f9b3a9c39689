"""Training curves from Detectron2's ``metrics.json``: losses, learning rate, validation loss,
penalised IoU and AP, with the best checkpoint marked; several runs overlaid.

``metrics.json`` has one JSON object per line, each with an ``iteration``. A run resumed
from a checkpoint logs the iterations after that checkpoint again: the later line wins,
so each curve shows what the final run did. Evaluation results (``bbox/AP``,
``penalized_iou/piou``, or ``<dataset>/...`` with several test sets) arrive on lines of
their own.
"""
import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import matplotlib

matplotlib.use("Agg")  # files only: no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .figures import save_figures  # noqa: E402

__all__ = ["RunMetrics", "read_metrics_json", "load_run", "make_figure", "plot_runs", "PLOTS"]

LOSS_PREFIX = "loss_"
PIOU_SUFFIX = "penalized_iou/piou"
AP_SUFFIXES = ("bbox/AP", "bbox/AP50")
VALIDATION_PREFIX = "validation/"


@dataclass
class RunMetrics:
    """One run's scalars: ``series[key] = (iterations, values)``, sorted by iteration."""

    name: str
    output_dir: str
    series: Dict[str, tuple] = field(default_factory=dict)
    best: Optional[dict] = None  # model_best.json, when the run kept one

    def keys(self, predicate):
        return sorted(k for k in self.series if predicate(k))


def read_metrics_json(path):
    """``{key: {iteration: value}}`` from a ``metrics.json``; later lines override earlier ones."""
    by_key = {}
    with open(path) as f:
        lines = f.read().splitlines()
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # a run killed mid-write leaves a torn last line
                break
            raise ValueError(f"{path}:{number}: not a JSON line")
        iteration = entry.get("iteration")
        if iteration is None:
            continue
        for key, value in entry.items():
            if key == "iteration" or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            by_key.setdefault(key, {})[int(iteration)] = float(value)
    return by_key


def load_run(output_dir, name=None):
    """A run's :class:`RunMetrics` from ``output_dir/metrics.json`` (and ``model_best.json``)."""
    path = output_dir if output_dir.endswith(".json") else os.path.join(output_dir, "metrics.json")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: is {output_dir} a training run's OUTPUT_DIR?")
    run = RunMetrics(name=name or os.path.basename(folder.rstrip(os.sep)), output_dir=folder)
    for key, points in read_metrics_json(path).items():
        iterations = np.array(sorted(points), dtype=np.int64)
        run.series[key] = (iterations, np.array([points[i] for i in iterations], dtype=np.float64))
    best_path = os.path.join(folder, "model_best.json")
    if os.path.isfile(best_path):
        with open(best_path) as f:
            run.best = json.load(f)
    return run


def _is_loss(key):
    return key.startswith(LOSS_PREFIX)


def _is_validation(key):
    return key.startswith(VALIDATION_PREFIX) or "/" + VALIDATION_PREFIX in key


def _is_piou(key):
    return key.endswith(PIOU_SUFFIX)


def _is_ap(key):
    return key.endswith(AP_SUFFIXES) and not key.endswith("bbox_agnostic/AP")


def _offsets(runs, sequential):
    """Per-run x offset: 0 when overlaid; each run after the previous one's end when sequential."""
    offsets, start = [], 0
    for run in runs:
        offsets.append(start if sequential else 0)
        last = max((its[-1] for its, _ in run.series.values() if len(its)), default=-1)
        start += last + 1
    return offsets


def _mark_best(axis, run, offset, key, color):
    """A dotted line at the best checkpoint's iteration, and a star on the curve of its metric."""
    best = run.best
    if not best or best.get("iteration") is None:
        return
    iteration = int(best["iteration"])
    metric = best.get("metric", "")
    on_curve = key == metric or key.endswith("/" + metric)
    if on_curve:
        # model_best.json counts the last completed iteration; Detectron2 logs the final
        # evaluation one later (at MAX_ITER): put the star on the logged point it came from
        iterations, values = run.series[key]
        same = np.flatnonzero((np.abs(iterations - iteration) <= 1) & np.isclose(values, float(best["value"])))
        if len(same):
            iteration = int(iterations[same[0]])
    axis.axvline(iteration + offset, color=color, linestyle=":", linewidth=1)
    if on_curve:
        axis.plot([iteration + offset], [float(best["value"])], marker="*", markersize=14, color=color,
                  markeredgecolor="black", linestyle="none",
                  label=f"{run.name}: best checkpoint (iteration {best['iteration']})")


def _plot_series(axis, runs, offsets, predicate, label_of, marker=None):
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", "--", "-.", ":"]
    drawn = []
    for r, (run, offset) in enumerate(zip(runs, offsets)):
        for k, key in enumerate(run.keys(predicate)):
            iterations, values = run.series[key]
            label = label_of(key)
            if len(runs) > 1:
                label = f"{run.name}: {label}"
            color = colors[(r if len(runs) > 1 else k) % len(colors)]
            style = styles[k % len(styles)] if len(runs) > 1 else "-"
            axis.plot(iterations + offset, values, style, color=color, marker=marker, markersize=4, label=label)
            drawn.append((run, offset, key, color))
    return drawn


def _finish(axis, title, ylabel, log_y=False):
    axis.set_title(title)
    axis.set_xlabel("iteration (count)")
    axis.set_ylabel(ylabel)
    if log_y:
        axis.set_yscale("log")
    axis.grid(True, alpha=0.3)
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize=8)


def _stage_boundaries(axis, runs, offsets, sequential):
    if sequential:
        for run, offset in zip(runs[1:], offsets[1:]):
            axis.axvline(offset, color="grey", linewidth=0.8)
            axis.annotate(run.name, (offset, 1.0), xycoords=("data", "axes fraction"), fontsize=8,
                          ha="left", va="top", color="grey")


def plot_loss_components(axis, runs, offsets):
    _plot_series(axis, runs, offsets, _is_loss, lambda k: k)
    _finish(axis, "Training loss components", "loss (a.u.)", log_y=_all_positive(axis))


def plot_total_loss(axis, runs, offsets):
    _plot_series(axis, runs, offsets, lambda k: k == "total_loss", lambda k: "training")
    _plot_series(axis, runs, offsets, lambda k: _is_validation(k) and k.endswith("total_loss"),
                 lambda k: "validation", marker="o")
    _finish(axis, "Total loss", "loss (a.u.)", log_y=_all_positive(axis))


def plot_learning_rate(axis, runs, offsets):
    _plot_series(axis, runs, offsets, lambda k: k == "lr", lambda k: "learning rate")
    _finish(axis, "Learning rate", "learning rate (per step)")


def plot_validation_loss(axis, runs, offsets):
    _plot_series(axis, runs, offsets, _is_validation, lambda k: k.split("/")[-1], marker="o")
    _finish(axis, "Validation loss", "loss (a.u.)", log_y=_all_positive(axis))


def plot_penalized_iou(axis, runs, offsets):
    for run, offset, key, color in _plot_series(axis, runs, offsets, _is_piou, lambda k: k, marker="o"):
        _mark_best(axis, run, offset, key, color)
    axis.set_ylim(bottom=0)
    _finish(axis, "Penalised IoU on the validation set", "penalised IoU (fraction, 0-1)")


def plot_ap(axis, runs, offsets):
    for run, offset, key, color in _plot_series(axis, runs, offsets, _is_ap, lambda k: k, marker="o"):
        _mark_best(axis, run, offset, key, color)
    axis.set_ylim(bottom=0)
    _finish(axis, "COCO AP on the validation set", "AP (%)")


def _all_positive(axis):
    values = [line.get_ydata() for line in axis.get_lines()]
    return bool(values) and all(len(v) and np.all(np.asarray(v, dtype=float) > 0) for v in values)


# name -> (predicate that the runs have something to show, plotting function)
PLOTS = {
    "loss_components": (_is_loss, plot_loss_components),
    "total_loss": (lambda k: k == "total_loss", plot_total_loss),
    "learning_rate": (lambda k: k == "lr", plot_learning_rate),
    "validation_loss": (_is_validation, plot_validation_loss),
    "penalized_iou": (_is_piou, plot_penalized_iou),
    "ap": (_is_ap, plot_ap),
}


def make_figure(name, runs: List[RunMetrics], sequential=False):
    """The matplotlib figure of one curve type (a key of :data:`PLOTS`), or None without data.

    ``sequential``: place each run after the previous one on the iteration axis (a
    fine-tuning stage after its pre-training stage) instead of overlaying them.
    """
    has_data, plot = PLOTS[name]
    if not any(run.keys(has_data) for run in runs):
        return None
    offsets = _offsets(runs, sequential)
    figure, axis = plt.subplots(figsize=(7, 4.2))
    plot(axis, runs, offsets)
    _stage_boundaries(axis, runs, offsets, sequential)
    figure.tight_layout()
    return figure


def plot_runs(runs: List[RunMetrics], output_dir, sequential=False, dpi=150):
    """One PNG per curve type that any run has data for (see :func:`make_figure`); returns ``{name: path}``."""
    return save_figures(((name, make_figure(name, runs, sequential)) for name in PLOTS), output_dir, dpi)
