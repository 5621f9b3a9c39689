"""One self-contained HTML page per run: what was trained, on what, how well, and what it looks at.

:func:`build_report` reads a run's ``OUTPUT_DIR`` as the tools leave it:

- ``config.yaml``, ``splits/*.json``, ``metrics.json``, ``model_best.json`` (training);
- ``inference/<dataset>/results.json`` (``train_net.py --eval-only``);
- ``visualization/<dataset>/outcomes.json`` (``tools/visualize_predictions.py``);
- ``gradcam/<dataset>/gradcam.json`` (``tools/gradcam.py``);

draws the training curves and evaluation plots into ``report/``, and writes
``report.html``. Images are embedded (base64), so the page is one file that can be
mailed or archived; ``embed=False`` links them relatively instead. A missing part is
named on the page with the command that makes it, never silently left out.

Every count says what it counts: ``lesions TP/FP/FN`` (lesions found and missed, kept
predictions that found none) apart from ``images TP/FP/FN/TN`` (each image once, by its
outcome; the sample pictures' ``TP_``/``FP_``/``FN_`` prefixes are these image outcomes).

The page checks itself when opened: a small script counts images that failed to load
and shows a warning (and sets ``data-images-*`` on ``<body>`` for automated checks).
"""
import base64
import datetime
import html
import json
import os
import random

import yaml

from ..config import config_value
from ..evaluation.suite import COUNT_DEFINITIONS, count_legend, count_rows
from ..utils.numbers import format_number
from . import eval_plots, metric_plots

__all__ = ["build_report", "config_summary", "split_summary", "metrics_rows"]

# Config keys worth a line in the summary, in order.
CONFIG_KEYS = (
    "MODEL.META_ARCHITECTURE", "MODEL.BACKBONE.NAME", "MODEL.RESNETS.DEPTH", "MODEL.RESNETS.NORM", "MODEL.WEIGHTS",
    "MODEL.ROI_HEADS.NUM_CLASSES", "MODEL.ANCHOR_GENERATOR.SIZES", "DATASETS.TRAIN", "DATASETS.TEST",
    "INPUT.MIN_SIZE_TRAIN", "INPUT.MAX_SIZE_TRAIN", "INPUT.MIN_SIZE_TEST", "INPUT.CROP_ULTRASOUND",
    "INPUT.NORMALIZATION", "SOLVER.IMS_PER_BATCH", "SOLVER.BASE_LR", "SOLVER.MAX_ITER", "SOLVER.STEPS",
    "TEST.EVAL_PERIOD", "TEST.PENALIZED_IOU.SCORE_THRESH", "TEST.PENALIZED_IOU.IOU_THRESH",
    "TEST.PENALIZED_IOU.TOP_K", "TEST.BEST_CHECKPOINT.METRIC", "SEED",
)

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1200px;
       color: #222; line-height: 1.4; padding: 0 16px; }
h1 { margin-bottom: 0; } .subtitle { color: #666; margin-top: 4px; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 36px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 14px; }
th, td { border: 1px solid #ddd; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.number { text-align: right; font-variant-numeric: tabular-nums; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 12px; color: #555; max-width: 560px; word-break: break-all; }
.plot img { width: 560px; } .sample img { width: 280px; }
.missing { color: #8a5a00; background: #fff6e0; border: 1px solid #f0d890; padding: 6px 10px; }
#image-check { display: none; color: #fff; background: #b00020; padding: 8px 12px; font-weight: bold; }
pre { background: #f7f7f7; padding: 8px; overflow-x: auto; font-size: 12px; }
"""

# Counts images that did not load; visible warning + attributes for headless checks.
CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (img) { return !(img.complete && img.naturalWidth > 0); });
  document.body.setAttribute("data-images-total", images.length);
  document.body.setAttribute("data-images-loaded", images.length - broken.length);
  if (broken.length) {
    var banner = document.getElementById("image-check");
    banner.textContent = broken.length + " of " + images.length + " images could not be loaded: " +
      broken.map(function (img) { return img.getAttribute("data-source"); }).join(", ");
    banner.style.display = "block";
  }
});
"""


def _escape(value):
    return html.escape(str(value))


def _load_json(path):
    with open(path) as f:
        return json.load(f)


def config_summary(config_path):
    """``[(key, value)]`` of :data:`CONFIG_KEYS` found in a run's ``config.yaml``."""
    with open(config_path) as f:
        cfg = yaml.safe_load(f) or {}
    rows = []
    for key in CONFIG_KEYS:
        value = config_value(cfg, key)
        if value is not None:
            rows.append((key, value if not isinstance(value, list) else json.dumps(value)))
    return rows


def split_summary(split_path):
    """``(dataset, rows, notes)``: images per split (and per class folder when ids have one)."""
    split = _load_json(split_path)
    assignment = split.get("assignment", {})
    names = sorted(set(assignment.values()), key=lambda s: ("train", "val", "test").index(s)
                   if s in ("train", "val", "test") else 9)
    classes = sorted({image_id.split("/", 1)[0] for image_id in assignment if "/" in image_id})
    classes = classes if 1 < len(classes) <= 10 else []  # BUSI-style "<class>/<file>" ids only
    rows = []
    for name in names:
        ids = [i for i, s in assignment.items() if s == name]
        groups = {split.get("group", {}).get(i) for i in ids}
        row = {"split": name, "images": len(ids), "groups": len(groups - {None}) or ""}
        for c in classes:
            row[c] = sum(1 for i in ids if i.startswith(c + "/"))
        rows.append(row)
    notes = []
    if split.get("method"):
        notes.append(f"method: {split['method']}")
    if "seed" in split:
        notes.append(f"seed {split['seed']}, ratios {split.get('ratios')}")
    if "near_duplicate_pairs" in split:
        notes.append(f"{len(split['near_duplicate_pairs'])} near-duplicate pairs kept within one split")
    return split.get("dataset", os.path.splitext(os.path.basename(split_path))[0]), rows, notes


def metrics_rows(results):
    """``[(metric, estimate, CI text)]``: every metric with a confidence interval, then the
    operating point's counts. AP values are in percent, rates in [0, 1]."""
    rows = []
    intervals = results.get("confidence_intervals") or {}
    confidence = ((results.get("settings") or {}).get("bootstrap") or {}).get("confidence", 0.95)
    for name, interval in intervals.items():
        digits = 1 if "/AP" in name else 3
        ci = (f"[{format_number(interval.get('low'), digits)}, {format_number(interval.get('high'), digits)}]"
              if interval.get("num_valid") else "")
        rows.append((name, format_number(interval.get("estimate"), digits), ci))
    # Detectron2's COCO numbers (no CI of their own; bbox_agnostic has them), or everything
    # there is when the results come without the suite
    sections = ("bbox", "penalized_iou") if not intervals else ("bbox",)
    for section in sections:
        for name, value in (results.get(section) or {}).items():
            if f"{section}/{name}" not in intervals and isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.append((f"{section}/{name}", format_number(float(value), 1 if section == "bbox" else 3), ""))
    for _, label, counts in count_rows(results):  # e.g. "lesions TP/FP/FN", "images TP/FP/FN/TN"
        rows.append((label.replace("/", " / "), counts.replace("/", " / "), ""))
    return rows, f"{100 * confidence:g}% CI"


def outcome_count_text(index):
    """``outcomes.json``'s counts, each with its unit (older indexes have image counts only)."""
    images = index.get("image_counts") or {k.lower(): v for k, v in (index.get("counts") or {}).items()}
    parts = []
    for unit, counts in (("images", images), ("lesions", index.get("lesion_counts"))):
        if counts:
            numbers = ", ".join(f"{k.upper()} {v}" for k, v in counts.items())
            parts.append(f"{unit} {numbers} ({COUNT_DEFINITIONS[unit]})")
    return "; ".join(parts)


class _Page:
    """Accumulates the HTML body; images are embedded or linked relative to the page."""

    def __init__(self, page_path, embed):
        self.page_dir = os.path.dirname(os.path.abspath(page_path))
        self.embed = embed
        self.parts = []
        self.missing = []
        self.level_offset = 0  # 1 on a page of several runs: each run's sections sit under its heading

    def add(self, text):
        self.parts.append(text)

    def heading(self, text, level=2):
        level += self.level_offset
        self.add(f"<h{level}>{_escape(text)}</h{level}>")

    def note_missing(self, what, how):
        self.missing.append(what)
        self.add(f'<p class="missing">{_escape(what)} not found. Make it with: <code>{_escape(how)}</code></p>')

    def table(self, header, rows, numeric=()):
        out = ["<table><tr>" + "".join(f"<th>{_escape(h)}</th>" for h in header) + "</tr>"]
        for row in rows:
            cells = []
            for column, value in enumerate(row):
                css = ' class="number"' if column in numeric else ""
                cells.append(f"<td{css}>{_escape(value)}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        self.add("".join(out) + "</table>")

    def image(self, path, caption="", css="plot"):
        if self.embed:
            with open(path, "rb") as f:
                source = "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")
        else:
            source = os.path.relpath(os.path.abspath(path), self.page_dir).replace(os.sep, "/")
        label = os.path.basename(path)
        return (f'<figure class="{css}"><img src="{_escape(source)}" alt="{_escape(caption or label)}" '
                f'data-source="{_escape(label)}"><figcaption>{_escape(caption or label)}</figcaption></figure>')

    def images(self, items, css="plot"):
        self.add('<div class="grid">' + "".join(self.image(p, c, css) for p, c in items) + "</div>")


def _datasets_under(output_dir, folder, index_name):
    """``{dataset: path}`` of ``output_dir/<folder>/<dataset>/<index_name>``."""
    root = os.path.join(output_dir, folder)
    found = {}
    if os.path.isdir(root):
        for name in sorted(os.listdir(root)):
            path = os.path.join(root, name, index_name)
            if os.path.isfile(path):
                found[name] = path
    return found


def _sample_outcomes(index_path, per_outcome, seed):
    """Up to ``per_outcome`` TP, FP and FN images: the worst FPs and FNs (the index lists images
    worst first), a seeded random sample of TPs."""
    index = _load_json(index_path)
    folder = os.path.dirname(index_path)
    chosen = []
    for outcome in ("tp", "fp", "fn"):
        entries = [e for e in index.get("images", []) if e.get("outcome") == outcome and e.get("file")]
        if outcome == "tp":
            entries = random.Random(seed).sample(entries, min(per_outcome, len(entries)))
        chosen.append((outcome, [(os.path.join(folder, e["file"]), e["file"]) for e in entries[:per_outcome]
                                 if os.path.isfile(os.path.join(folder, e["file"]))]))
    return index, chosen


def build_report(output_dirs, page_path=None, datasets=None, embed=True, samples=4, seed=0):
    """Write the report page of one run, or of several (e.g. both stages of the two-stage
    workflow, in order); returns ``(page path, list of parts that were missing)``.

    Args:
        output_dirs: a run's ``OUTPUT_DIR``, or a list of them.
        page_path: default ``<OUTPUT_DIR>/report.html`` (required for several runs).
        datasets: evaluated datasets to include (default: every ``inference/<dataset>/results.json``).
        samples: images per outcome (TP, FP, FN) and Grad-CAM images per dataset.
    """
    output_dirs = [output_dirs] if isinstance(output_dirs, str) else list(output_dirs)
    output_dirs = [os.path.abspath(d) for d in output_dirs]
    if page_path is None:
        if len(output_dirs) > 1:
            raise ValueError("a report of several runs needs page_path")
        page_path = os.path.join(output_dirs[0], "report.html")
    page = _Page(page_path, embed)
    run_names = [os.path.basename(d.rstrip(os.sep)) for d in output_dirs]
    if len(output_dirs) > 1:
        page.level_offset = 1
        page.add("<p>Runs: " + ", ".join(f'<a href="#run-{_escape(n)}">{_escape(n)}</a>' for n in run_names) + "</p>")
    for output_dir, run_name in zip(output_dirs, run_names):
        if len(output_dirs) > 1:
            page.add(f'<h2 id="run-{_escape(run_name)}">Run: {_escape(run_name)}</h2>'
                     f'<p class="subtitle">{_escape(output_dir)}</p>')
        _add_run(page, output_dir, datasets, samples, seed)

    created = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    missing = ("" if not page.missing else
               f'<p class="missing">Missing from this report: {_escape(", ".join(page.missing))}.</p>')
    title = ", ".join(run_names)
    document = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ustumor report: {_escape(title)}</title>
<style>{STYLE}</style></head>
<body><div id="image-check"></div>
<h1>ustumor run report: {_escape(title)}</h1>
<p class="subtitle">{_escape(", ".join(output_dirs))} &middot; generated {created}</p>
{missing}
{''.join(page.parts)}
<script>{CHECK_SCRIPT}</script>
</body></html>
"""
    os.makedirs(os.path.dirname(os.path.abspath(page_path)), exist_ok=True)
    temporary = f"{page_path}.tmp{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(document)
    os.replace(temporary, page_path)
    return page_path, page.missing


def _add_run(page, output_dir, datasets, samples, seed):
    """The sections of one run: configuration, splits, curves, evaluation, pictures."""
    assets = os.path.join(output_dir, "report")

    # --- what was trained
    page.heading("Configuration")
    config_path = os.path.join(output_dir, "config.yaml")
    if os.path.isfile(config_path):
        page.table(("key", "value"), config_summary(config_path))
        with open(config_path) as f:
            page.add(f"<details><summary>full config.yaml</summary><pre>{_escape(f.read())}</pre></details>")
    else:
        page.note_missing("config.yaml", "tools/train_net.py --config-file ... OUTPUT_DIR " + output_dir)

    page.heading("Data splits")
    split_files = sorted(f for f in os.listdir(os.path.join(output_dir, "splits"))
                         if f.endswith(".json")) if os.path.isdir(os.path.join(output_dir, "splits")) else []
    if not split_files:
        page.note_missing("splits/*.json", "tools/train_net.py (copies the splits into OUTPUT_DIR/splits)")
    for name in split_files:
        dataset, rows, notes = split_summary(os.path.join(output_dir, "splits", name))
        header = list(rows[0].keys()) if rows else ["split", "images"]
        page.add(f"<p><b>{_escape(dataset)}</b>: " + "; ".join(_escape(n) for n in notes) + "</p>")
        page.table(header, [[r[h] for h in header] for r in rows], numeric=range(1, len(header)))

    # --- how it trained
    page.heading("Training curves")
    if os.path.isfile(os.path.join(output_dir, "metrics.json")):
        run = metric_plots.load_run(output_dir)
        written = metric_plots.plot_runs([run], os.path.join(assets, "training"))
        if run.best:
            best = run.best
            page.add(f"<p>Best checkpoint: <b>{_escape(best.get('metric'))} = {format_number(float(best.get('value')), 4)}"
                     f"</b> at iteration {_escape(best.get('iteration'))} (<code>model_best.pth</code>).</p>")
        page.images([(p, name.replace("_", " ")) for name, p in written.items()])
    else:
        page.note_missing("metrics.json", "tools/train_net.py --config-file ... OUTPUT_DIR " + output_dir)

    # --- how well, per evaluated dataset
    results_files = _datasets_under(output_dir, "inference", "results.json")
    if datasets:
        results_files = {d: p for d, p in results_files.items() if d in datasets}
    if not results_files:
        page.heading("Evaluation")
        page.note_missing("inference/<dataset>/results.json", "tools/train_net.py --eval-only "
                          "MODEL.WEIGHTS <run>/model_best.pth DATASETS.TEST '(\"<dataset>\",)'")
    for dataset, results_path in results_files.items():
        results = _load_json(results_path)
        page.heading(f"Evaluation on {dataset}")
        rows, ci_header = metrics_rows(results)
        page.table(("metric", "estimate", ci_header), rows, numeric=(1, 2))
        if count_rows(results):
            page.add("<p>" + "<br>".join(_escape(line) for line in count_legend(results)) + "</p>")
        written = eval_plots.plot_results(results, os.path.join(assets, "eval", dataset))
        page.images([(p, name.replace("_", " ")) for name, p in written.items()])

    # --- what it gets right and wrong, and where it looks
    outcome_indexes = _datasets_under(output_dir, "visualization", "outcomes.json")
    page.heading("Prediction samples")
    if not outcome_indexes:
        page.note_missing("visualization/<dataset>/outcomes.json",
                          f"tools/visualize_predictions.py --config-file {config_path} --weights <weights> "
                          f"--dataset <dataset> --output {output_dir}/visualization/<dataset>")
    for dataset, index_path in outcome_indexes.items():
        index, chosen = _sample_outcomes(index_path, samples, seed)
        settings = index.get("settings", {})
        page.add(f"<p><b>{_escape(dataset)}</b>: image outcomes at score \u2265 "
                 f"{_escape(settings.get('score_thresh'))}, IoU \u2265 {_escape(settings.get('iou_thresh'))}, "
                 f"top {_escape(settings.get('top_k'))}; "
                 f"{_escape(outcome_count_text(index))}. Teal dashed: truth; blue: hit; orange: false positive; "
                 f"dotted yellow: best prediction below the threshold.</p>")
        for outcome, items in chosen:
            page.heading(f"{outcome.upper()} images ({'worst first' if outcome != 'tp' else 'random sample'})",
                         level=3)
            if items:
                page.images(items, css="sample")
            else:
                page.add(f"<p>No {outcome.upper()} images.</p>")

    gradcam_indexes = _datasets_under(output_dir, "gradcam", "gradcam.json")
    page.heading("Grad-CAM samples")
    if not gradcam_indexes:
        page.note_missing("gradcam/<dataset>/gradcam.json",
                          f"tools/gradcam.py --config-file {config_path} --weights <weights> --dataset <dataset> "
                          f"--output {output_dir}/gradcam/<dataset>")
    for dataset, index_path in gradcam_indexes.items():
        index = _load_json(index_path)
        folder = os.path.dirname(index_path)
        # explained detections first (most confident first), then notes such as "no detection"
        entries = sorted((e for e in index.get("images", []) if e.get("file")),
                         key=lambda e: (e.get("heat_in_box") is None, -(e.get("score") or 0.0)))[:samples]
        page.add(f"<p><b>{_escape(dataset)}</b>: {_escape(index.get('method'))} at layer "
                 f"<code>{_escape(index.get('layer'))}</code>, target: each kept detection's class score. "
                 f"Share of heat in the box vs. the box's share of the image: a ratio above 1 means the map "
                 f"concentrates on the detection.</p>")
        items = []
        for e in entries:
            ratio = e.get("heat_ratio")
            caption = e["file"]
            if isinstance(ratio, (int, float)):
                caption += f" (heat in box / box area = {ratio:.1f})"
            if os.path.isfile(os.path.join(folder, e["file"])):
                items.append((os.path.join(folder, e["file"]), caption))
        page.images(items, css="sample")
