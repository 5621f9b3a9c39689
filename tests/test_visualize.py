"""Prediction-versus-truth images: outcome naming by the penalised-IoU matching, drawing, selection, the tool."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT, run_train_net
from phantom_model import CONFIG, SMALL_MODEL, run_tool_on, trained_phantom_model, truth_boxes
from ustumor.visualization.drawing import FP_COLOR, TP_COLOR, TRUTH_COLOR, contact_sheet
from ustumor.visualization.outcome_images import image_names, image_outcome, render_outcome, select_outcomes

LESION = [10, 10, 30, 30]
NAME_PATTERN = re.compile(r"^(TP|FP|FN|TN)_(.+)_iou_(\d\.\d\d)_score_(\d\.\d\d)\.png$")


def name_of(gt, predictions, **thresholds):
    boxes = [p[0] for p in predictions]
    scores = [p[1] for p in predictions]
    outcome = image_outcome("x/img.png", "img", boxes, scores, gt, **thresholds)
    return outcome.file_stem + ".png"


@pytest.mark.parametrize("gt, predictions, expected", [
    ([LESION], [(LESION, 0.9)], "TP_img_iou_1.00_score_0.90.png"),
    # found but below the 0.45 operating point: named by that near miss (IoU 360/400)
    ([LESION], [([12, 10, 30, 30], 0.3)], "FN_img_iou_0.90_score_0.30.png"),
    # confident but in the wrong place
    ([LESION], [([60, 60, 80, 80], 0.8)], "FN_img_iou_0.00_score_0.80.png"),
    # overlap below IOU_THRESH 0.25 is no hit: IoU 100/700
    ([LESION], [([20, 20, 40, 40], 0.9)], "FN_img_iou_0.14_score_0.90.png"),
    # TOP_K 1: the far 0.9 box is the only kept one, the 0.8 hit does not count
    ([LESION], [([60, 60, 80, 80], 0.9), (LESION, 0.8)], "FN_img_iou_0.00_score_0.90.png"),
    ([], [([5, 5, 25, 25], 0.7)], "FP_img_iou_0.00_score_0.70.png"),
    ([], [([5, 5, 25, 25], 0.2)], "TN_img_iou_0.00_score_0.20.png"),
    ([], [], "TN_img_iou_0.00_score_0.00.png"),
    ([LESION], [], "FN_img_iou_0.00_score_0.00.png"),
])
def test_files_are_named_by_the_penalised_iou_outcome(gt, predictions, expected):
    assert name_of(gt, predictions, score_thresh=0.45, iou_thresh=0.25, top_k=1) == expected


def test_thresholds_change_the_outcome():
    predictions = [([60, 60, 80, 80], 0.9), (LESION, 0.8)]
    assert name_of([LESION], predictions, top_k=2).startswith("TP_img_iou_1.00_score_0.80")
    assert name_of([LESION], [([20, 20, 40, 40], 0.9)], iou_thresh=0.1).startswith("TP_img_iou_0.14")
    assert name_of([LESION], [(LESION, 0.9)], score_thresh=0.95).startswith("FN_img_iou_1.00_score_0.90")


def test_image_names_are_safe_and_unique():
    files = ["/d/a/benign (1).png", "/d/b/benign (1).png", "/d/c/normal (2).png", "/d/c/normal (2).png"]
    names = image_names(files)
    assert names == ["a_benign_1", "b_benign_1", "normal_2", "normal_2_2"]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in names)


def test_selection_keeps_outcomes_and_ranks_worst_first():
    outcomes = [
        image_outcome("tp.png", "tp", [LESION], [0.9], [LESION]),
        image_outcome("tp_poor.png", "tp_poor", [[10, 10, 30, 24]], [0.9], [LESION]),  # IoU 0.7
        image_outcome("fp_sure.png", "fp_sure", [LESION], [0.95], []),
        image_outcome("fp_unsure.png", "fp_unsure", [LESION], [0.5], []),
        image_outcome("fn.png", "fn", [], [], [LESION]),
        image_outcome("tn.png", "tn", [], [], []),
    ]
    assert [o.name for o in select_outcomes(outcomes, only=["FP"])] == ["fp_sure", "fp_unsure"]
    assert [o.name for o in select_outcomes(outcomes, only=["fn", "tn"])] == ["fn", "tn"]
    worst = select_outcomes(outcomes, worst=4)
    # own penalised IoU 0 first (the surer FP before the other), then the poorer hit
    assert [o.name for o in worst] == ["fn", "fp_sure", "fp_unsure", "tp_poor"]


def colour_pixels(image, color, tolerance=40):
    target = np.array(color) * 255
    return int((np.abs(image.astype(int) - target).max(axis=2) < tolerance).sum())


def test_drawing_shows_truth_and_predictions_in_distinct_colours():
    rng = np.random.default_rng(0)
    grey = rng.integers(60, 120, (100, 120), dtype=np.uint8)
    hit = render_outcome(grey, image_outcome("a.png", "a", [[12, 12, 32, 30]], [0.9], [LESION]))
    assert hit.shape[1] > 120 * 2  # small scans are drawn enlarged, with a caption band on top
    assert colour_pixels(hit, TRUTH_COLOR) > 50 and colour_pixels(hit, TP_COLOR) > 50
    assert colour_pixels(hit, FP_COLOR) == 0
    false_positive = render_outcome(grey, image_outcome("b.png", "b", [LESION], [0.9], []))
    assert colour_pixels(false_positive, FP_COLOR) > 50
    assert colour_pixels(false_positive, TRUTH_COLOR) == 0 and colour_pixels(false_positive, TP_COLOR) == 0
    sheet = contact_sheet([hit, false_positive], columns=2, tile_width=200)
    assert sheet.shape[1] >= 400 and colour_pixels(sheet, FP_COLOR) > 0 and colour_pixels(sheet, TP_COLOR) > 0


@pytest.fixture(scope="module")
def phantom():
    return trained_phantom_model()


def run_tool(phantom, output, *args):
    return run_tool_on(phantom, "visualize_predictions.py", output, "outcomes.json",
                       "--dataset", "phantom_test", *args)


@pytest.mark.slow
def test_tool_names_every_image_by_its_outcome(phantom, tmp_path):
    output = str(tmp_path / "all")
    index = run_tool(phantom, output)
    test_images = {d["file_name"]: d for d in phantom.held_out if d["split"] == "test"}
    assert {e["image"] for e in index["images"]} == set(test_images)
    assert sum(index["counts"].values()) == len(test_images)
    written = sorted(f for f in os.listdir(output) if f.endswith(".png") and f != "contact_sheet.png")
    assert sorted(e["file"] for e in index["images"]) == written
    for entry in index["images"]:
        outcome, _, iou, score = NAME_PATTERN.match(entry["file"]).groups()
        assert outcome == entry["outcome"].upper()
        has_lesion = len(truth_boxes(test_images[entry["image"]])) > 0
        assert outcome in (("TP", "FN") if has_lesion else ("FP", "TN"))
        assert (float(iou), float(score)) == (round(entry["iou"], 2), round(entry["score"], 2))
    # a trained model: most images with a lesion are hits
    assert index["counts"]["TP"] >= 0.7 * (index["counts"]["TP"] + index["counts"]["FN"])
    assert os.path.isfile(os.path.join(output, "contact_sheet.png"))


@pytest.mark.slow
def test_tool_keeps_only_the_asked_outcomes_and_takes_overrides(phantom, tmp_path):
    output = str(tmp_path / "fn")
    # nothing reaches a score of 1.01: every lesion image is a miss, every other a TN
    # --only last: the KEY VALUE overrides after it must not be taken for outcomes
    index = run_tool(phantom, output, "--worst", "2", "--only", "FN", "TEST.PENALIZED_IOU.SCORE_THRESH", "1.01")
    assert index["counts"]["TP"] == index["counts"]["FP"] == 0 and index["counts"]["FN"] > 0
    written = sorted(f for f in os.listdir(output) if f.endswith(".png") and f != "contact_sheet.png")
    assert len(written) == min(2, index["counts"]["FN"]) and all(f.startswith("FN_") for f in written)


@pytest.mark.slow
def test_tool_counts_images_and_lesions_as_eval_only_does(phantom, tmp_path):
    """The pictures and the --eval-only numbers agree, for the same weights and dataset:
    images with images (``image_level``), lesions with lesions (``lesion_level``), and the
    printed table says which is which. A low threshold keeping every prediction makes the
    two counts differ (several false boxes on one image)."""
    operating_point = ["TEST.PENALIZED_IOU.SCORE_THRESH", "0.05", "TEST.PENALIZED_IOU.TOP_K", "0"]
    output = tmp_path / "eval"
    printed = run_train_net(phantom.datasets_root, CONFIG, "--eval-only", "OUTPUT_DIR", str(output), *SMALL_MODEL,
                            "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", phantom.weights,
                            "DATASETS.TEST", '("phantom_test",)', "TEST.BOOTSTRAP.NUM_SAMPLES", "0", *operating_point)
    results = json.load(open(output / "inference" / "phantom_test" / "results.json"))
    images = {k: results["image_level"][k] for k in ("tp", "fp", "fn", "tn")}
    lesions = {k: results["lesion_level"][k] for k in ("tp", "fp", "fn")}
    assert lesions != {k: images[k] for k in lesions}, "this check needs image and lesion counts that differ"

    index = run_tool(phantom, str(tmp_path / "pictures"), "--no-contact-sheet", *operating_point)
    assert index["image_counts"] == images and index["lesion_counts"] == lesions
    assert index["counts"] == {k.upper(): v for k, v in images.items()}  # the older key: images
    assert sum(e["lesions"] for e in index["images"]) == lesions["tp"] + lesions["fn"]
    assert sum(e["lesions_found"] for e in index["images"]) == lesions["tp"]
    pictures = [f for f in os.listdir(tmp_path / "pictures") if f.endswith(".png")]
    for outcome, count in images.items():  # file name prefixes are the image outcomes
        assert sum(f.startswith(outcome.upper() + "_") for f in pictures) == count
    # drawn again from the predictions --eval-only saved, without the model: the same outcomes
    predictions = output / "inference" / "phantom_test" / "instances_predictions.pth"
    saved = tmp_path / "from_saved"
    command = [sys.executable, os.path.join(REPO_ROOT, "tools", "visualize_predictions.py"), "--config-file", CONFIG,
               "--dataset", "phantom_test", "--predictions", str(predictions), "--output", str(saved),
               "--no-contact-sheet", *SMALL_MODEL, "MODEL.DEVICE", "cpu", *operating_point]
    env = dict(os.environ, USTUMOR_DATASETS=phantom.datasets_root, OMP_NUM_THREADS="1")
    redrawn = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert redrawn.returncode == 0, redrawn.stdout[-2000:] + redrawn.stderr[-3000:]
    from_saved = json.load(open(saved / "outcomes.json"))
    assert from_saved["image_counts"] == images and from_saved["lesion_counts"] == lesions
    # the saved boxes are x, y, width, height: corners come back to float rounding
    exact = ("image", "frame", "outcome", "lesions", "lesions_found", "false_predictions")
    assert [{k: e[k] for k in exact} for e in from_saved["images"]] == [{k: e[k] for k in exact} for e in index["images"]]
    for entry, reference in zip(from_saved["images"], index["images"]):
        assert [entry[k] for k in ("iou", "score")] == pytest.approx([reference[k] for k in ("iou", "score")], abs=1e-5)

    assert re.search(r"\| lesions TP/FP/FN +\| {tp}/{fp}/{fn} ".format(**lesions), printed), printed[-3000:]
    assert re.search(r"\| images TP/FP/FN/TN +\| {tp}/{fp}/{fn}/{tn} ".format(**images), printed), printed[-3000:]
