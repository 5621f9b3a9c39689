"""Penalised IoU: hand-computed examples of the definition in ustumor.evaluation.penalized_iou."""
import csv
import json
import math

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation.testing import flatten_results_dict
from detectron2.structures import Boxes, BoxMode, Instances

from ustumor.evaluation.penalized_iou import (SWEEP_THRESHOLDS, PenalizedIoUEvaluator, compute, match_image,
                                              pairwise_iou, sweep)

NONE = np.zeros((0, 4))


def predictions(*boxes_and_scores):
    boxes = np.array([b for b, _ in boxes_and_scores], dtype=float).reshape(-1, 4)
    return boxes, np.array([s for _, s in boxes_and_scores], dtype=float)


def test_pairwise_iou_by_hand():
    iou = pairwise_iou([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]])
    assert iou[0].tolist() == pytest.approx([1.0, 50 / 150, 0.0, 0.0])


def test_a_true_positive_needs_overlap_at_the_iou_threshold():
    gt = np.array([[0, 0, 10, 10]])
    # IoU 50/150 = 0.333 >= 0.25: a TP contributing 0.333
    result = compute([predictions(([5, 0, 15, 10], 0.9))], [gt], iou_thresh=0.25)
    assert (result["tp"], result["fp"], result["fn"]) == (1, 0, 0)
    assert result["piou"] == pytest.approx(1 / 3)
    # the same box with IoU 0.333 < 0.4: an FP and an FN, score 0
    result = compute([predictions(([5, 0, 15, 10], 0.9))], [gt], iou_thresh=0.4)
    assert (result["tp"], result["fp"], result["fn"]) == (0, 1, 1)
    assert result["piou"] == 0.0
    # a box elsewhere is never a TP, however confident
    result = compute([predictions(([50, 50, 60, 60], 0.99))], [gt], iou_thresh=0.0001)
    assert (result["tp"], result["fp"], result["fn"]) == (0, 1, 1)


def test_score_threshold_and_top_k_keep_the_highest_scores():
    gt = np.array([[0, 0, 10, 10], [20, 0, 30, 10]])
    image = predictions(([20, 0, 30, 10], 0.5), ([0, 0, 10, 10], 0.9), ([40, 0, 50, 10], 0.7), ([0, 0, 9, 10], 0.3))
    # top 1: only the 0.9 box, a perfect TP; the other lesion is missed
    result = compute([image], [gt], score_thresh=0.45, iou_thresh=0.25, top_k=1)
    assert (result["tp"], result["fp"], result["fn"]) == (1, 0, 1)
    assert result["piou"] == pytest.approx(1.0 / 2)
    # top 3 above 0.45: 0.9 (TP), 0.7 (FP), 0.5 (TP); the 0.3 box is below the threshold
    result = compute([image], [gt], score_thresh=0.45, iou_thresh=0.25, top_k=3)
    assert (result["tp"], result["fp"], result["fn"]) == (2, 1, 0)
    assert result["piou"] == pytest.approx(2.0 / 3)
    # top_k <= 0 keeps everything above the threshold; a score equal to it is kept
    result = compute([image], [gt], score_thresh=0.3, iou_thresh=0.25, top_k=0)
    assert (result["tp"], result["fp"], result["fn"]) == (2, 2, 0)


def test_matching_is_greedy_in_score_order_and_each_lesion_is_matched_once():
    gt = np.array([[0, 0, 10, 10]])
    # both boxes overlap the lesion; the higher-scored one takes it, the other is an FP
    image = predictions(([0, 0, 10, 8], 0.6), ([0, 0, 10, 10], 0.8))
    match = match_image(*image, gt, score_thresh=0.0, iou_thresh=0.25, top_k=None)
    assert match.kept.tolist() == [1, 0]
    assert match.pred_outcome == ["tp", "fp"]
    assert match.gt_pred.tolist() == [1] and match.gt_outcome == ["tp"]
    assert match.pred_iou[0] == pytest.approx(1.0)
    assert match.pred_iou[1] == pytest.approx(0.8)  # its overlap, shown for diagnosis, not counted
    assert match.iou_sum == pytest.approx(1.0)
    # a prediction takes the lesion it overlaps most among the unmatched ones
    gt = np.array([[0, 0, 10, 10], [4, 0, 14, 10]])
    match = match_image(*predictions(([4, 0, 14, 10], 0.9), ([0, 0, 10, 10], 0.8)), gt, 0.0, 0.25, None)
    assert match.pred_gt.tolist() == [1, 0] and match.tp == 2


def test_true_negatives_are_counted_but_excluded_and_totals_are_pooled():
    gt_a = np.array([[0, 0, 10, 10]])
    image_a = predictions(([0, 0, 10, 5], 0.9))  # TP with IoU 0.5
    image_b = predictions(([0, 0, 10, 10], 0.9))  # FP on a normal image
    result = compute([image_a, image_b, (NONE, np.zeros(0))], [gt_a, NONE, NONE])
    assert (result["tp"], result["fp"], result["fn"], result["tn"]) == (1, 1, 0, 1)
    # pooled: 0.5 / (1 + 1 + 0), not the mean of per-image scores (0.5 and 0)
    assert result["piou"] == pytest.approx(0.25)
    assert result["specificity"] == pytest.approx(0.5)  # one of two normal images is clean
    assert result["accuracy"] == pytest.approx(2 / 3)
    # pooling differs from averaging per image: 3 lesions found at IoU 1 and 1 missed
    gt_c = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]])
    image_c = predictions(([0, 0, 10, 10], 0.9), ([20, 0, 30, 10], 0.9), ([40, 0, 50, 10], 0.9))
    result = compute([image_c, (NONE, np.zeros(0))], [gt_c, gt_a], top_k=3)
    assert result["piou"] == pytest.approx(3 / 4)  # per-image mean would be (1 + 0) / 2


def test_only_true_negatives_score_zero():
    result = compute([(NONE, np.zeros(0))] * 2, [NONE, NONE])
    assert result["tn"] == 2 and result["piou"] == 0.0
    assert math.isnan(result["precision"]) and result["specificity"] == 1.0


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="images"):
        compute([(NONE, np.zeros(0))], [NONE, NONE])
    with pytest.raises(ValueError, match="scores"):
        match_image(np.zeros((2, 4)), np.zeros(1), NONE)


def test_sweep_rows_follow_the_thresholds():
    gt = [np.array([[0, 0, 10, 10]]), NONE]
    preds = [predictions(([0, 0, 10, 10], 0.62)), predictions(([0, 0, 5, 5], 0.31))]
    rows = sweep(preds, gt)
    assert [r["score_thresh"] for r in rows] == list(SWEEP_THRESHOLDS)
    assert len(rows) == 20 and rows[0]["score_thresh"] == 0.0 and rows[-1]["score_thresh"] == 0.95
    by_threshold = {r["score_thresh"]: r for r in rows}
    # at 0.30 both boxes are kept: the lesion is found and the normal image gets an FP
    assert (by_threshold[0.3]["tp"], by_threshold[0.3]["fp"], by_threshold[0.3]["tn"]) == (1, 1, 0)
    # at 0.35 the FP is gone; at 0.65 the TP too
    assert (by_threshold[0.35]["tp"], by_threshold[0.35]["fp"], by_threshold[0.35]["tn"]) == (1, 0, 1)
    assert by_threshold[0.35]["piou"] == pytest.approx(1.0)
    assert (by_threshold[0.65]["tp"], by_threshold[0.65]["fn"], by_threshold[0.65]["specificity"]) == (0, 1, 1.0)


@pytest.fixture
def registered_dataset():
    name = "test_penalized_iou_dataset"
    dicts = [
        {"image_id": "a", "file_name": "a.png", "height": 100, "width": 100,
         "annotations": [{"bbox": [0, 0, 10, 10], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 0},
                         {"bbox": [50, 50, 60, 60], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0, "iscrowd": 1}]},
        {"image_id": "b", "file_name": "b.png", "height": 100, "width": 100, "annotations": []},
    ]
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=["lesion"])
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def instances(boxes, scores):
    result = Instances((100, 100))
    result.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    result.scores = torch.tensor(scores, dtype=torch.float32)
    result.pred_classes = torch.zeros(len(scores), dtype=torch.int64)
    return {"instances": result}


def test_evaluator_reads_ground_truth_from_the_catalog_and_writes_the_sweep(registered_dataset, tmp_path):
    evaluator = PenalizedIoUEvaluator(registered_dataset, output_dir=str(tmp_path))
    evaluator.reset()
    # image a: its lesion is XYWH [0, 0, 10, 10]; the crowd box is ignored
    evaluator.process([{"image_id": "a"}], [instances([[0, 0, 10, 5]], [0.9])])
    evaluator.process([{"image_id": "b"}], [instances([[50, 50, 60, 60]], [0.3])])
    results = evaluator.evaluate()
    flat = flatten_results_dict(results)
    assert flat["penalized_iou/piou"] == pytest.approx(0.5)  # the 0.3 box is below 0.45
    assert (flat["penalized_iou/tp"], flat["penalized_iou/fn"], flat["penalized_iou/tn"]) == (1, 0, 1)
    assert flat["penalized_iou_sweep/0.30/fp"] == 1 and flat["penalized_iou_sweep/0.30/piou"] == pytest.approx(0.25)
    assert all(isinstance(v, (int, float)) for v in flat.values())  # EvalHook accepts it

    rows = json.load(open(tmp_path / "penalized_iou_sweep.json"))
    assert len(rows) == 20 and rows[6]["score_thresh"] == 0.3 and rows[6]["fp"] == 1
    with open(tmp_path / "penalized_iou_sweep.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 20 and float(table[6]["piou"]) == pytest.approx(0.25)
    assert table[-1]["precision"] == ""  # NaN (nothing kept at 0.95) is an empty cell
