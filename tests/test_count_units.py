"""Every count says what it counts: lesions (``lesion_level``) or images (``image_level``), in the
``--eval-only`` table, the outcome pictures' captions and index, and the HTML report.

The records below make the two disagree on purpose (counted by hand):

- "two": two lesions, TOP_K 1 keeps one hit: image TP; lesions TP 1, FN 1;
- "miss": one lesion, the only kept prediction elsewhere: image FN; lesions FN 1, FP 1;
- "alarm": no lesion, a kept prediction: image FP; lesion-level FP 1;
- "clean": no lesion, no prediction: image TN;
- "hit": one lesion, found: image TP; lesions TP 1.

So images TP/FP/FN/TN = 2/1/1/1 and lesions TP/FP/FN = 2/2/2.
"""
import json
import os

import numpy as np

from ustumor.evaluation.penalized_iou import compute
from ustumor.evaluation.records import ImageRecord
from ustumor.evaluation.suite import evaluate_suite, format_results_table
from ustumor.visualization.outcome_images import image_outcome, outcome_caption, outcome_counts
from ustumor.visualization.report import build_report

A, B = [0, 0, 10, 10], [50, 50, 60, 60]
FAR = [80, 80, 90, 90]
CASES = {  # name: (truth, predicted boxes, scores)
    "two": ([A, B], [A], [0.9]),
    "miss": ([A], [FAR], [0.8]),
    "alarm": ([], [A], [0.7]),
    "clean": ([], [], []),
    "hit": ([B], [B], [0.95]),
}
IMAGES = {"tp": 2, "fp": 1, "fn": 1, "tn": 1}
LESIONS = {"tp": 2, "fp": 2, "fn": 2}


def as_boxes(boxes):
    return np.array(boxes, dtype=float).reshape(-1, 4)


def records():
    return [ImageRecord(image_id=name, gt_boxes=as_boxes(gt), gt_classes=np.zeros(len(gt), np.int64),
                        pred_boxes=as_boxes(pred), pred_scores=np.array(scores, float),
                        pred_classes=np.zeros(len(scores), np.int64), meta={"file_name": f"{name}.png"})
            for name, (gt, pred, scores) in CASES.items()]


def outcomes():
    return [image_outcome(f"{name}.png", name, pred, scores, gt) for name, (gt, pred, scores) in CASES.items()]


def table_rows(table):
    """``{metric: value}`` of a pipe table's rows."""
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3:
            rows[cells[1]] = cells[2]
    return rows


def test_eval_only_table_labels_lesion_and_image_counts():
    results = evaluate_suite(records(), num_bootstrap=0)
    assert {k: results["image_level"][k] for k in IMAGES} == IMAGES
    assert {k: results["lesion_level"][k] for k in LESIONS} == LESIONS
    table = format_results_table(results)
    rows = table_rows(table)
    assert rows["lesions TP/FP/FN"] == "2/2/2"
    assert rows["images TP/FP/FN/TN"] == "2/1/1/1"
    assert "TP/FP/FN/TN" not in rows  # no count without its unit
    assert "lesions: TP a lesion found" in table and "images: TP has lesions" in table
    # the penalised IoU section keeps its mixed counts in results.json (lesions, and TN images)
    assert {k: results["penalized_iou"][k] for k in ("tp", "fp", "fn", "tn")} == {**LESIONS, "tn": 1}


def test_training_table_labels_penalised_iou_counts():
    """During training only penalised IoU is computed: its TP/FP/FN are lesions, its TN images."""
    piou = compute([(r.pred_boxes, r.pred_scores) for r in records()], [r.gt_boxes for r in records()])
    rows = table_rows(format_results_table({"penalized_iou": piou}))
    assert rows["lesions TP/FP/FN"] == "2/2/2" and rows["images TN"] == "1"
    assert "TP/FP/FN/TN" not in rows


def test_outcome_pictures_count_like_the_suite():
    results = evaluate_suite(records(), num_bootstrap=0)
    counts = outcome_counts(outcomes())
    assert counts == {"image_counts": IMAGES, "lesion_counts": LESIONS}
    assert counts["image_counts"] == {k: results["image_level"][k] for k in IMAGES}
    assert counts["lesion_counts"] == {k: results["lesion_level"][k] for k in LESIONS}


def test_caption_says_image_outcome_and_lesions_found():
    by_name = {o.name: o for o in outcomes()}
    assert outcome_caption(by_name["two"])[0].startswith("image TP")
    assert "lesions found 1/2" in outcome_caption(by_name["two"])[0]
    assert "lesions found 0/1" in outcome_caption(by_name["miss"])[0]
    assert "false predictions 1" in outcome_caption(by_name["miss"])[0]
    assert "lesions found" not in outcome_caption(by_name["clean"])[0]


def write_run(folder, index):
    os.makedirs(os.path.join(folder, "inference", "x_test"))
    with open(os.path.join(folder, "inference", "x_test", "results.json"), "w") as f:
        json.dump(evaluate_suite(records(), num_bootstrap=20), f)
    os.makedirs(os.path.join(folder, "visualization", "x_test"))
    with open(os.path.join(folder, "visualization", "x_test", "outcomes.json"), "w") as f:
        json.dump({"settings": {"score_thresh": 0.45, "iou_thresh": 0.25, "top_k": 1}, **index,
                   "images": [{"image": o.file_name, "outcome": o.outcome, "file": None} for o in outcomes()]}, f)


def test_report_labels_every_count(tmp_path):
    write_run(str(tmp_path), outcome_counts(outcomes()))
    page, _ = build_report(str(tmp_path), embed=False)
    html = open(page, encoding="utf-8").read()
    assert "<td>lesions TP / FP / FN</td><td class=\"number\">2 / 2 / 2</td>" in html
    assert "<td>images TP / FP / FN / TN</td><td class=\"number\">2 / 1 / 1 / 1</td>" in html
    assert "(lesions; TN: images)" not in html
    assert "images TP 2, FP 1, FN 1, TN 1" in html and "lesions TP 2, FP 2, FN 2" in html
    assert ">FN images (worst first)</h3>" in html


def test_report_reads_older_outcome_indexes_as_image_counts(tmp_path):
    # outcomes.json before lesion counts: "counts" was always the image outcomes
    write_run(str(tmp_path), {"counts": {"TP": 2, "FP": 1, "FN": 1, "TN": 1}})
    page, _ = build_report(str(tmp_path), embed=False)
    html = open(page, encoding="utf-8").read()
    assert "images TP 2, FP 1, FN 1, TN 1" in html and "lesions TP 2, FP 2, FN 2" not in html
