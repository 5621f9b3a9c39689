"""Training and evaluation plots: the numbers drawn are the numbers in the files, and the PNGs are real pictures."""
import json
import os

import cv2
import numpy as np
import pytest

from conftest import load_tool
from ustumor.evaluation.records import ImageRecord
from ustumor.evaluation.suite import evaluate_suite
from ustumor.visualization import eval_plots, metric_plots


def assert_real_png(path, min_colours=8):
    """The file is a PNG with content: not one flat colour, several distinct colours."""
    assert os.path.isfile(path) and os.path.getsize(path) > 0, path
    image = cv2.imread(path)
    assert image is not None, f"{path} is not an image"
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 5, f"{path} is blank"
    packed = image.reshape(-1, 3).astype(np.int32) @ np.array([1, 256, 65536], np.int32)
    assert len(np.unique(packed)) >= min_colours, f"{path} has almost no content"


def line_by_label(axis, label):
    lines = [line for line in axis.get_lines() if line.get_label() == label]
    assert len(lines) == 1, f"expected one line labelled {label!r}, got {[l.get_label() for l in axis.get_lines()]}"
    return lines[0]


# ---------------------------------------------------------------- training curves

def write_metrics(folder, lines, best=None):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "metrics.json"), "w") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
    if best:
        with open(os.path.join(folder, "model_best.json"), "w") as f:
            json.dump(best, f)
    return folder


@pytest.fixture
def resumed_run(tmp_path):
    """A run interrupted after iteration 39 and resumed from its iteration-19 checkpoint:
    iterations 19..39 are logged twice, and the second time they differ."""
    lines = []
    for it in range(0, 40, 10):
        lines.append({"iteration": it + 9, "total_loss": 2.0 - it / 40, "loss_cls": 1.0 - it / 80,
                      "loss_box_reg": 0.5, "lr": 0.01, "data_time": 0.1})
    lines.append({"iteration": 19, "penalized_iou/piou": 0.30, "bbox/AP": 20.0, "bbox/AP50": 45.0})
    # resumed: the final run's values for 29 and 39 replace the first attempt's
    for it in (29, 39):
        lines.append({"iteration": it, "total_loss": 1.0, "loss_cls": 0.25, "loss_box_reg": 0.4, "lr": 0.001})
    lines.append({"iteration": 39, "penalized_iou/piou": 0.55, "bbox/AP": 31.0, "bbox/AP50": 60.0,
                  "validation/total_loss": 1.2, "validation/loss_cls": 0.3})
    lines.append({"iteration": 19, "validation/total_loss": 1.5, "validation/loss_cls": 0.6})
    folder = write_metrics(str(tmp_path / "stage1"), lines,
                           best={"metric": "penalized_iou/piou", "mode": "max", "value": 0.55, "iteration": 39,
                                 "checkpoint": "model_best.pth"})
    with open(os.path.join(folder, "metrics.json"), "a") as f:
        f.write('{"iteration": 49, "total_lo')  # killed mid-write
    return folder


def test_metrics_json_later_lines_win_and_torn_line_is_ignored(resumed_run):
    run = metric_plots.load_run(resumed_run)
    iterations, values = run.series["total_loss"]
    assert iterations.tolist() == [9, 19, 29, 39]
    assert values.tolist() == [2.0, 1.75, 1.0, 1.0]
    assert run.series["loss_cls"][1].tolist() == [1.0, 0.875, 0.25, 0.25]
    assert run.series["penalized_iou/piou"][0].tolist() == [19, 39]
    assert run.best["iteration"] == 39


def test_training_figures_plot_the_logged_numbers(resumed_run):
    run = metric_plots.load_run(resumed_run)
    figure = metric_plots.make_figure("loss_components", [run])
    axis = figure.axes[0]
    for key in ("loss_cls", "loss_box_reg"):
        line = line_by_label(axis, key)
        np.testing.assert_array_equal(line.get_xdata(), run.series[key][0])
        np.testing.assert_array_equal(line.get_ydata(), run.series[key][1])
    assert axis.get_xlabel() and axis.get_ylabel()

    axis = metric_plots.make_figure("total_loss", [run]).axes[0]
    np.testing.assert_array_equal(line_by_label(axis, "training").get_ydata(), [2.0, 1.75, 1.0, 1.0])
    np.testing.assert_array_equal(line_by_label(axis, "validation").get_ydata(), [1.5, 1.2])

    axis = metric_plots.make_figure("learning_rate", [run]).axes[0]
    np.testing.assert_array_equal(line_by_label(axis, "learning rate").get_ydata(), [0.01, 0.01, 0.001, 0.001])

    axis = metric_plots.make_figure("penalized_iou", [run]).axes[0]
    np.testing.assert_array_equal(line_by_label(axis, "penalized_iou/piou").get_ydata(), [0.30, 0.55])
    star = line_by_label(axis, "stage1: best checkpoint (iteration 39)")
    assert star.get_xdata().tolist() == [39] and star.get_ydata().tolist() == [0.55]

    axis = metric_plots.make_figure("ap", [run]).axes[0]
    np.testing.assert_array_equal(line_by_label(axis, "bbox/AP50").get_ydata(), [45.0, 60.0])
    assert "%" in axis.get_ylabel()


def test_best_star_sits_on_the_final_evaluation_logged_at_max_iter(tmp_path):
    """Detectron2 logs the last evaluation at MAX_ITER (40); model_best.json says iteration 39."""
    run = metric_plots.load_run(write_metrics(str(tmp_path / "r"), [
        {"iteration": 19, "penalized_iou/piou": 0.2}, {"iteration": 40, "penalized_iou/piou": 0.3}],
        best={"metric": "penalized_iou/piou", "value": 0.3, "iteration": 39}))
    axis = metric_plots.make_figure("penalized_iou", [run]).axes[0]
    star = line_by_label(axis, "r: best checkpoint (iteration 39)")
    assert star.get_xdata().tolist() == [40] and star.get_ydata().tolist() == [0.3]


def test_runs_overlay_or_follow_each_other(resumed_run, tmp_path):
    first = metric_plots.load_run(resumed_run)
    second = metric_plots.load_run(write_metrics(str(tmp_path / "stage2"), [
        {"iteration": 4, "total_loss": 0.9, "lr": 0.002}, {"iteration": 9, "total_loss": 0.7, "lr": 0.002}]))
    overlaid = metric_plots.make_figure("total_loss", [first, second]).axes[0]
    np.testing.assert_array_equal(line_by_label(overlaid, "stage2: training").get_xdata(), [4, 9])
    # sequential: stage 2 starts after stage 1's last logged iteration (49 torn, so 39)
    sequential = metric_plots.make_figure("total_loss", [first, second], sequential=True).axes[0]
    np.testing.assert_array_equal(line_by_label(sequential, "stage2: training").get_xdata(), [44, 49])
    np.testing.assert_array_equal(line_by_label(sequential, "stage1: training").get_xdata(), [9, 19, 29, 39])


def test_plot_metrics_tool_writes_pictures(resumed_run, tmp_path):
    out = str(tmp_path / "plots")
    tool = load_tool("plot_metrics")
    tool.main(tool.parse_args([resumed_run, "--output", out]))
    expected = {"loss_components", "total_loss", "learning_rate", "validation_loss", "penalized_iou", "ap"}
    assert {os.path.splitext(f)[0] for f in os.listdir(out)} == expected
    for name in expected:
        assert_real_png(os.path.join(out, f"{name}.png"))


def test_runs_without_evaluation_get_only_their_curves(tmp_path):
    run = metric_plots.load_run(write_metrics(str(tmp_path / "r"), [{"iteration": 0, "total_loss": 3.0, "lr": 1e-3}]))
    written = metric_plots.plot_runs([run], str(tmp_path / "plots"))
    assert set(written) == {"total_loss", "learning_rate"}


# ---------------------------------------------------------------- evaluation plots

def record(name, gt, predictions):
    boxes = np.array([p[0] for p in predictions], dtype=float).reshape(-1, 4)
    scores = np.array([p[1] for p in predictions], dtype=float)
    gt = np.array(gt, dtype=float).reshape(-1, 4)
    return ImageRecord(image_id=name, gt_boxes=gt, gt_classes=np.zeros(len(gt), np.int64), pred_boxes=boxes,
                       pred_scores=scores, pred_classes=np.zeros(len(scores), np.int64), meta={"file_name": name})


@pytest.fixture(scope="module")
def hand_results():
    """Four images whose every number can be worked out by hand:

    A: a lesion, found with score 0.9 (IoU 1);  B: a lesion, and a 0.8 detection elsewhere;
    C: no lesion, a 0.7 detection;              D: no lesion, no detection.
    """
    lesion = [10, 10, 30, 30]
    records = [record("A", [lesion], [(lesion, 0.9)]),
               record("B", [lesion], [([60, 60, 80, 80], 0.8)]),
               record("C", [], [([5, 5, 25, 25], 0.7)]),
               record("D", [], [])]
    return evaluate_suite(records, score_thresh=0.45, iou_thresh=0.25, top_k=1, num_bootstrap=50, bootstrap_seed=0)


def test_froc_and_pr_curves_match_the_hand_count(hand_results):
    figure = eval_plots.make_figure("froc", hand_results)
    axis = figure.axes[0]
    froc = line_by_label(axis, "FROC")
    # thresholds 0.9, 0.8, 0.7: sensitivity 1/2 throughout; FPs per image 0, 1/4, 2/4
    np.testing.assert_allclose(froc.get_xdata(), [0, 0, 0.25, 0.5])
    np.testing.assert_allclose(froc.get_ydata(), [0, 0.5, 0.5, 0.5])
    assert axis.collections, "the bootstrap CI band is missing"

    # IoU 0.5: A's 0.9 finds its lesion, B's 0.8 and C's 0.7 are FPs; the curve's corners
    recall, precision = eval_plots.pr_from_froc(hand_results)
    np.testing.assert_allclose(recall, [0.5, 0.5])
    np.testing.assert_allclose(precision, [1, 1 / 3])
    axis = eval_plots.make_figure("pr", hand_results).axes[0]
    np.testing.assert_allclose(axis.get_lines()[0].get_ydata(), [1, 1 / 3])
    # results without a pr_curve section: every FROC operating point
    older = {k: v for k, v in hand_results.items() if k != "pr_curve"}
    recall, precision = eval_plots.pr_from_froc(older)
    np.testing.assert_allclose(recall, [0.5, 0.5, 0.5])
    np.testing.assert_allclose(precision, [1, 1 / 2, 1 / 3])


def test_sweep_figures_match_the_hand_count(hand_results):
    axis = eval_plots.make_figure("sweep_counts", hand_results).axes[0]
    thresholds = line_by_label(axis, "TP").get_xdata()
    at = {round(t, 2): i for i, t in enumerate(thresholds)}
    counts = {name: line_by_label(axis, name).get_ydata() for name in ("TP", "FP", "FN", "TN")}
    # at 0.75: A kept (TP), B's 0.8 kept (FP, and its lesion an FN), C's 0.7 dropped (TN), D TN
    assert [counts[n][at[0.75]] for n in ("TP", "FP", "FN", "TN")] == [1, 1, 1, 2]
    # at 0.85 only A's detection is kept
    assert [counts[n][at[0.85]] for n in ("TP", "FP", "FN", "TN")] == [1, 0, 1, 2]
    # at 0.95 nothing is kept
    assert [counts[n][at[0.95]] for n in ("TP", "FP", "FN", "TN")] == [0, 0, 2, 2]

    axis = eval_plots.make_figure("sweep_piou", hand_results).axes[0]
    piou = line_by_label(axis, "penalised IoU").get_ydata()
    assert piou[at[0.75]] == pytest.approx(1 / 3)  # IoU 1 over TP + FP + FN = 3
    assert piou[at[0.85]] == pytest.approx(1 / 2)

    axis = eval_plots.make_figure("sweep_rates", hand_results).axes[0]
    accuracy = line_by_label(axis, "accuracy (image level)").get_ydata()
    assert accuracy[at[0.75]] == pytest.approx(3 / 4)  # A, C, D right; B wrong
    assert line_by_label(axis, "precision (lesion level)").get_ydata()[at[0.75]] == pytest.approx(1 / 2)


def test_roc_and_confusion_matrix_match_the_hand_count(hand_results):
    # image scores: A 0.9 and B 0.8 have lesions, C 0.7 and D 0 (no detection) do not
    fpr, tpr, source = eval_plots.roc_from_sweep(hand_results)
    assert source == "image_roc"
    assert list(zip(fpr, tpr)) == [(0, 0), (0, 0.5), (0, 1), (0.5, 1), (1, 1)]
    assert hand_results["image_roc"]["auc"] == 1.0
    # results without an image_roc section: through the sweep's cut-offs
    fpr, tpr, source = eval_plots.roc_from_sweep({k: v for k, v in hand_results.items() if k != "image_roc"})
    assert source == "sweep"
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(fpr) >= 0)
    # at 0.75, C's detection is dropped: specificity 1 with image sensitivity 1/2 (A found, B not)
    assert any(f == 0 and t == 0.5 for f, t in zip(fpr, tpr))
    # at 0.45: A tp, B fn (its kept detection misses), C fp, D tn
    figure = eval_plots.make_figure("confusion", hand_results)
    texts = sorted(t.get_text().split("\n")[0] for t in figure.axes[0].texts)
    assert texts == ["1", "1", "1", "1"]
    assert figure.axes[0].images[0].get_array().tolist() == [[1, 1], [1, 1]]


def test_plot_eval_tool_writes_every_figure(hand_results, tmp_path):
    path = str(tmp_path / "results.json")
    with open(path, "w") as f:
        json.dump(hand_results, f)
    tool = load_tool("plot_eval")
    tool.main(tool.parse_args([path]))
    out = str(tmp_path / "plots")
    assert sorted(os.listdir(out)) == sorted(f"{name}.png" for name in eval_plots.FIGURES)
    for name in eval_plots.FIGURES:
        assert_real_png(os.path.join(out, f"{name}.png"))
