"""The medical evaluation suite: FROC, resamplable COCO AP, ROC AUC, cluster bootstrap, and the
suite's image/patient/clip-level numbers on hand-made records."""
import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ustumor.evaluation.average_precision import CocoMatches
from ustumor.evaluation.bootstrap import bootstrap
from ustumor.evaluation.froc import froc
from ustumor.evaluation.records import ImageRecord
from ustumor.evaluation.roc import roc_auc, roc_curve
from ustumor.evaluation.suite import evaluate_suite, format_results_table, paired_differences

NONE = np.zeros((0, 4))


def boxes(*b):
    return np.array(b, dtype=float).reshape(-1, 4)


def test_froc_by_hand():
    predictions = [
        # lesion found at 0.9; the 0.8 box on the same lesion is a second hit, so an FP
        (boxes([0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]), np.array([0.9, 0.8, 0.3])),
        (boxes([20, 20, 30, 30]), np.array([0.5])),
        (boxes([0, 0, 5, 5]), np.array([0.6])),  # FP on a normal image
        (NONE, np.zeros(0)),  # a clean normal image still counts in FPs per image
    ]
    truths = [boxes([0, 0, 10, 10]), boxes([20, 20, 30, 30]), NONE, NONE]
    # operating points (FPs/image, sensitivity): (0, .5) (.25, .5) (.5, .5) (.5, 1) (.75, 1)
    result = froc(predictions, truths, iou_thresh=0.1)
    assert [result[f"sensitivity@{t:g}"] for t in (0.125, 0.25, 0.5, 1, 2, 4, 8)] == [0.5, 0.5, 1, 1, 1, 1, 1]
    assert result["cpm"] == pytest.approx(6 / 7)
    assert (result["num_lesions"], result["num_images"]) == (2, 4)


def test_froc_hit_threshold_and_ties():
    # IoU 0.15 with the lesion: a hit at 0.1, a miss at 0.25
    predictions = [(boxes([0, 0, 10, 1.5]), np.array([0.9]))]
    assert froc(predictions, [boxes([0, 0, 10, 10])], iou_thresh=0.1)["sensitivity@0.125"] == 1.0
    assert froc(predictions, [boxes([0, 0, 10, 10])], iou_thresh=0.25)["sensitivity@8"] == 0.0
    # a hit and an FP with the same score: no threshold keeps one without the other
    tied = [(boxes([0, 0, 10, 10], [30, 30, 40, 40]), np.array([0.7, 0.7]))]
    result = froc(tied, [boxes([0, 0, 10, 10])])
    assert result["sensitivity@0.5"] == 0.0 and result["sensitivity@1"] == 1.0


def random_records(rng, num_images=12, num_classes=2):
    records = []
    for i in range(num_images):
        count = int(rng.integers(0, 3))
        xy = rng.uniform(0, 80, (count, 2))
        gt = np.hstack([xy, xy + rng.uniform(8, 30, (count, 2))])
        predicted = [gt + rng.normal(0, 3, gt.shape), rng.uniform(0, 90, (int(rng.integers(0, 4)), 2))]
        false = np.hstack([predicted[1], predicted[1] + 15])
        pred = np.vstack([predicted[0], false])
        records.append(ImageRecord(
            image_id=f"img{i}", gt_boxes=gt, gt_classes=rng.integers(0, num_classes, count),
            pred_boxes=pred, pred_scores=rng.uniform(0.05, 1, len(pred)),
            pred_classes=rng.integers(0, num_classes, len(pred)), meta={}))
    return records


def pycocotools_precision(records, class_agnostic):
    """COCOeval's own precision array (T, R, K, areas, maxDets) on the same data."""
    category = (lambda c: 1) if class_agnostic else (lambda c: int(c) + 1)
    annotations, detections = [], []
    for i, r in enumerate(records):
        for b, c in zip(r.gt_boxes, r.gt_classes):
            w, h = b[2] - b[0], b[3] - b[1]
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": category(c),
                                "bbox": [b[0], b[1], w, h], "area": w * h, "iscrowd": 0})
        for b, s, c in zip(r.pred_boxes, r.pred_scores, r.pred_classes):
            detections.append({"image_id": i, "category_id": category(c), "bbox": [b[0], b[1], b[2] - b[0],
                               b[3] - b[1]], "score": s})
    gt = COCO()
    gt.dataset = {"images": [{"id": i} for i in range(len(records))], "annotations": annotations,
                  "categories": [{"id": 1}, {"id": 2}] if not class_agnostic else [{"id": 1}]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(detections), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation


@pytest.mark.parametrize("class_agnostic", [True, False])
def test_resamplable_ap_equals_pycocotools(class_agnostic):
    records = random_records(np.random.default_rng(3))
    reference = pycocotools_precision(records, class_agnostic)
    ours = CocoMatches(records, ["benign", "malignant"], class_agnostic=class_agnostic).average_precision()
    assert ours["AP"] == pytest.approx(100 * reference.stats[0], abs=1e-9)
    assert ours["AP50"] == pytest.approx(100 * reference.stats[1], abs=1e-9)
    assert ours["AP75"] == pytest.approx(100 * reference.stats[2], abs=1e-9)
    if not class_agnostic:  # per class as Detectron2's COCOEvaluator derives it
        for k, name in enumerate(["benign", "malignant"]):
            precision = reference.eval["precision"][:, :, k, 0, -1]
            assert ours[f"AP-{name}"] == pytest.approx(100 * precision[precision > -1].mean(), abs=1e-9)
    # a resample repeating images pools them twice
    doubled = CocoMatches(records + records, class_agnostic=True).average_precision()
    resampled = CocoMatches(records, class_agnostic=True).average_precision(list(range(12)) * 2)
    assert resampled == pytest.approx(doubled)


def test_roc_auc_counts_ties_as_half():
    assert roc_auc([1, 1, 0, 0], [0.9, 0.4, 0.4, 0.1]) == pytest.approx(3.5 / 4)
    assert np.isnan(roc_auc([1, 1], [0.2, 0.3]))
    rng = np.random.default_rng(0)
    labels, scores = rng.integers(0, 2, 50).astype(bool), rng.integers(0, 5, 50) / 4
    pairs = [(p > n) + 0.5 * (p == n) for p in scores[labels] for n in scores[~labels]]
    assert roc_auc(labels, scores) == pytest.approx(np.mean(pairs))


def test_roc_curve_runs_from_corner_to_corner_and_its_area_is_the_auc():
    rng = np.random.default_rng(1)
    labels, scores = rng.integers(0, 2, 40).astype(bool), rng.integers(0, 6, 40) / 5  # many ties
    fpr, tpr, thresholds = roc_curve(labels, scores)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1) and thresholds[0] == np.inf
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0) and np.all(np.diff(thresholds) < 0)
    assert len(thresholds) == len(np.unique(scores)) + 1
    for fp_rate, tp_rate, threshold in zip(fpr[1:], tpr[1:], thresholds[1:]):
        assert tp_rate == (scores[labels] >= threshold).mean() and fp_rate == (scores[~labels] >= threshold).mean()
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(labels, scores))
    assert all(len(a) == 0 for a in roc_curve([True, True], [0.1, 0.2]))


def test_suite_image_roc_and_pr_curve():
    records = random_records(np.random.default_rng(5), num_images=30, num_classes=1)
    results = evaluate_suite(records, num_bootstrap=20)
    # image level: an image scores its best detection; images with lesions are positive
    image_scores = [max(r.pred_scores, default=0.0) for r in records]
    positive = [len(r.gt_boxes) > 0 for r in records]
    pairs = [(p > n) + 0.5 * (p == n) for p, is_p in zip(image_scores, positive) if is_p
             for n, is_n in zip(image_scores, positive) if not is_n]
    roc = results["image_roc"]
    assert roc["auc"] == pytest.approx(np.mean(pairs))
    assert (roc["num_positive"], roc["num_negative"]) == (sum(positive), len(records) - sum(positive))
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(roc["auc"])
    assert "image_roc/auc" in results["confidence_intervals"]
    # lesion level: COCO's 101-point interpolation of the raw curve is AP50
    curve = results["pr_curve"]
    recall, precision = np.array(curve["recall"]), np.array(curve["precision"])
    assert curve["iou_thresh"] == pytest.approx(0.5) and curve["num_lesions"] == sum(len(r.gt_boxes) for r in records)
    assert np.all(np.diff(recall) >= 0) and np.all(np.diff(curve["score_thresh"]) <= 0)
    assert len(recall) <= 2 * curve["num_lesions"] + 1 < sum(len(r.pred_scores) for r in records)
    interpolated = [precision[recall >= r].max(initial=0.0) for r in np.linspace(0, 1, 101)]
    assert 100 * np.mean(interpolated) == pytest.approx(results["bbox_agnostic"]["AP50"], abs=1e-9)
    assert json.loads(json.dumps(results))["pr_curve"] == curve


def test_bootstrap_resamples_whole_clusters_reproducibly():
    values = np.array([1.0, 3.0, 2.0, 10.0, 4.0])
    units = ["p1", "p1", "p2", "p3", "p4"]
    seen_draws = []

    def mean(indices, draws):
        # patient p1's two images always come together, once per draw of p1
        assert np.count_nonzero(indices == 0) == np.count_nonzero(indices == 1)
        seen_draws.append(len(set(draws.tolist())))
        return {"mean": values[indices].mean(), "undefined": float("nan") if 3 not in indices else 1.0}

    intervals = bootstrap(mean, units, num_samples=300, seed=4)
    assert set(seen_draws) == {4}  # four clusters drawn each time
    assert intervals["mean"]["low"] < values.mean() < intervals["mean"]["high"]
    assert intervals["mean"]["num_valid"] == 300
    assert 0 < intervals["undefined"]["num_valid"] < 300  # resamples without p3 are left out
    assert bootstrap(mean, units, num_samples=300, seed=4) == intervals
    assert bootstrap(mean, units, num_samples=300, seed=5) != intervals
    constant = bootstrap(lambda i, d: {"c": 2.0}, units, num_samples=50, seed=0)
    assert constant["c"]["low"] == constant["c"]["high"] == 2.0


def hospital_records():
    """Two-class frames from four patients (see the expected outcomes in the test)."""
    lesion = boxes([0, 0, 10, 10])

    def record(image_id, patient, clip, gt, gt_classes, pred, scores, pred_classes):
        return ImageRecord(image_id=image_id, gt_boxes=gt, gt_classes=np.array(gt_classes, dtype=np.int64),
                           pred_boxes=pred, pred_scores=np.array(scores, dtype=float),
                           pred_classes=np.array(pred_classes, dtype=np.int64),
                           meta={"patient_id": patient, "clip_id": clip, "file_name": f"{image_id}.png"})

    return [
        record("p1a", "P1", "c1a", lesion, [1], lesion, [0.9], [1]),  # malignant lesion found: TP
        record("p1b", "P1", "c1b", lesion, [1], NONE, [], []),  # missed: FN
        record("p2", "P2", "c2", boxes([20, 20, 40, 40]), [0], boxes([60, 60, 70, 70]), [0.8], [0]),  # FP + FN
        record("p3a", "P3", "c3", NONE, [], boxes([0, 0, 5, 5]), [0.7], [0]),  # FP on a normal frame
        record("p3b", "P3", "c3", NONE, [], NONE, [], []),  # TN
        record("p4", "P4", "c4", NONE, [], boxes([0, 0, 5, 5]), [0.2], [0]),  # below 0.45: TN
    ]


def test_suite_by_frame_clip_and_patient(tmp_path):
    results = evaluate_suite(hospital_records(), class_names=["benign", "malignant"], num_bootstrap=100,
                             output_dir=str(tmp_path), dataset_name="hospital_test")
    image, patient, clip = results["image_level"], results["patient_level"], results["clip_level"]
    assert (image["tp"], image["fn"], image["fp"], image["tn"]) == (1, 2, 1, 2)
    assert image["sensitivity"] == pytest.approx(1 / 3) and image["specificity"] == pytest.approx(2 / 3)
    # P1 is detected (one of its frames has a TP), P2 missed, P3 has a false alarm, P4 is clean
    assert (patient["tp"], patient["fn"], patient["fp"], patient["tn"]) == (1, 1, 1, 1)
    assert (clip["tp"], clip["fn"], clip["fp"], clip["tn"]) == (1, 2, 1, 1)
    assert results["penalized_iou"]["piou"] == pytest.approx(1 / 5)  # one TP at IoU 1; 2 FPs, 2 FNs
    assert results["lesion_level"]["mean_iou_tp"] == pytest.approx(1.0)
    # malignant frames score 0.9 and 0 (no malignant box), the benign one 0
    assert results["malignancy"] == {"auc": pytest.approx(0.75), "num_malignant": 2, "num_benign": 1}
    # FROC over all 4 detections: only the 0.9 box hits, 1 of 3 lesions at every rate
    assert results["froc"]["cpm"] == pytest.approx(1 / 3) and results["froc"]["num_images"] == 6
    assert results["settings"]["bootstrap"]["num_clusters"] == 4  # patients, not frames

    intervals = results["confidence_intervals"]
    assert {"froc/cpm", "penalized_iou/piou", "patient_level/sensitivity", "malignancy/auc",
            "bbox_agnostic/AP50", "per_class/AP-malignant", "image_level/specificity"} <= set(intervals)
    for name, interval in intervals.items():
        assert interval["num_valid"] > 0 and interval["low"] <= interval["high"], name
    assert intervals["patient_level/sensitivity"]["estimate"] == 0.5

    per_image = json.load(open(tmp_path / "per_image.json"))
    assert [e["outcome"] for e in per_image] == ["tp", "fn", "fn", "fp", "tn", "tn"]
    assert per_image[0]["predictions"] == [{"box": [0, 0, 10, 10], "score": 0.9, "class": "malignant",
                                            "outcome": "tp", "iou": 1.0}]
    assert len(json.load(open(tmp_path / "penalized_iou_sweep.json"))) == 20

    table = format_results_table(results)
    assert "95% CI" in table and "patient_level" in table and "malignancy" in table
    json.dumps(results)  # plain JSON types throughout (NaN aside)


def test_suite_without_patients_resamples_images():
    records = hospital_records()
    for r in records:
        r.meta = {}
    results = evaluate_suite(records, num_bootstrap=20)
    assert "patient_level" not in results and "clip_level" not in results and "malignancy" not in results
    assert results["settings"]["bootstrap"]["num_clusters"] == 6


def test_bootstrap_units_are_patients_else_split_groups_else_images():
    records = hospital_records()
    for k, r in enumerate(records):  # BUSI-like: near-duplicate groups from the split, no patients
        r.meta = {"group_id": k % 2}
    records[0].meta = {"patient_id": "P9", "group_id": 0}  # a patient outranks its group
    records[1].meta = {}  # neither: the image alone
    units = [r.unit("patient_id,group_id") for r in records]
    assert units[0] == "patient_id:P9" and units[1] == f"image:{records[1].image_id}"
    expected_clusters = len(set(units))
    assert expected_clusters < len(records)
    results = evaluate_suite(records, num_bootstrap=20)
    assert results["settings"]["bootstrap"]["num_clusters"] == expected_clusters
    assert evaluate_suite(records, num_bootstrap=20, cluster_by="")["settings"]["bootstrap"]["num_clusters"] == 6


def two_models_on_shared_images(num_images=40):
    """Records of two models on the same images: both find the lesion on the easy two thirds and
    miss it on the rest, where model b finds half of what model a misses; a few normals."""
    records_a, records_b = [], []
    lesion = boxes([20, 20, 60, 60])
    for k in range(num_images):
        normal = k % 8 == 7
        gt = NONE if normal else lesion
        easy = k < num_images * 2 // 3
        found_a = not normal and easy
        found_b = not normal and (easy or k % 2 == 0)
        for found, records in ((found_a, records_a), (found_b, records_b)):
            # a found lesion scores high; otherwise a low-scored box away from it
            pred = lesion if found else boxes([100, 100, 120, 120])
            score = np.array([0.9 - 0.001 * k if found else 0.2])
            records.append(ImageRecord(f"img{k}", gt, np.zeros(len(gt), np.int64), pred, score,
                                       np.zeros(1, np.int64)))
    return records_a, records_b


def test_paired_differences_are_b_minus_a_with_the_comparisons_own_interval():
    records_a, records_b = two_models_on_shared_images()
    separate_a = evaluate_suite(records_a, num_bootstrap=300)["confidence_intervals"]
    separate_b = evaluate_suite(records_b, num_bootstrap=300)["confidence_intervals"]
    paired = paired_differences(records_a, records_b, num_bootstrap=300)
    for name in ("bbox_agnostic/AP50", "froc/cpm", "penalized_iou/piou"):
        expected = separate_b[name]["estimate"] - separate_a[name]["estimate"]
        assert paired[name]["estimate"] == pytest.approx(expected)
        assert expected > 0 and paired[name]["low"] > 0  # b finds more, on every resample
        # both models fail on the same hard images: the comparison is surer than two
        # independent figures would make it (their widths added in quadrature)
        width = paired[name]["high"] - paired[name]["low"]
        independent = np.hypot(separate_a[name]["high"] - separate_a[name]["low"],
                               separate_b[name]["high"] - separate_b[name]["low"])
        assert width < 0.8 * independent
    # a against b is b against a negated, resample by resample
    reverse = paired_differences(records_b, records_a, num_bootstrap=300)
    for name, value in paired.items():
        if np.isfinite(value["estimate"]):
            assert (reverse[name]["estimate"], reverse[name]["low"], reverse[name]["high"]) == pytest.approx(
                (-value["estimate"], -value["high"], -value["low"]))


def test_paired_differences_of_a_model_with_itself_are_zero():
    records_a, _ = two_models_on_shared_images()
    paired = paired_differences(records_a, records_a, num_bootstrap=50)
    finite = [v for v in paired.values() if np.isfinite(v["estimate"])]
    assert finite and all(v["estimate"] == 0 and v["low"] == 0 and v["high"] == 0 for v in finite)


def test_paired_differences_need_the_same_images():
    records_a, records_b = two_models_on_shared_images()
    with pytest.raises(ValueError, match="same images.*img3"):
        paired_differences(records_a, records_b[:3] + records_b[4:], num_bootstrap=0)
