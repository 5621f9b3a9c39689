#!/usr/bin/env python
"""Test-time NMS: one trained ``bench_quality.py`` arm scored at several IoU thresholds.

    USTUMOR_DATASETS=../shared/datasets .venv/bin/python benchmarks/bench_nms.py --arm all_boxes --seed 2

The arm's checkpoint (``output/bench_quality/<budget>/<arm>/seed<k>/model_final.pth``) runs
once per split with NMS off; Detectron2's post-processing is then applied for each threshold
as its box predictor applies it (score >= ``MODEL.ROI_HEADS.SCORE_THRESH_TEST``, class-wise
NMS, the best ``TEST.DETECTIONS_PER_IMAGE``), and each is scored with the quality benchmark's
suite, with the paired difference against Detectron2's 0.5. Choose on ``busi_val``; read
``busi_test`` only for the choice made.
"""
import argparse
import dataclasses
import json
import os

import torch
from torchvision.ops import batched_nms

import bench_quality
from common import REPORTED, fmt_interval, machine_facts, print_table, write_json

from detectron2.data import DatasetCatalog  # noqa: E402
from ustumor.evaluation.suite import evaluate_suite, paired_differences  # noqa: E402

DETECTRON2_DEFAULT = 0.5


def suppressed(records, iou_threshold, score_threshold, keep_at_most):
    """``records`` post-processed as Detectron2's box predictor does at ``iou_threshold``."""
    kept_records = []
    for record in records:
        boxes, scores = torch.as_tensor(record.pred_boxes), torch.as_tensor(record.pred_scores)
        keep = batched_nms(boxes, scores, torch.as_tensor(record.pred_classes), iou_threshold)
        keep = keep[scores[keep] > score_threshold][:keep_at_most].numpy()
        kept_records.append(dataclasses.replace(record, pred_boxes=record.pred_boxes[keep],
                                                pred_scores=record.pred_scores[keep],
                                                pred_classes=record.pred_classes[keep]))
    return kept_records


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arm", default=bench_quality.WALK[-1])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--thresholds", default="0.5,0.4,0.35,0.3,0.25,0.2")
    parser.add_argument("--splits", default="busi_val", help="comma-separated, e.g. busi_val,busi_test")
    bench_quality.add_budget_arguments(parser)
    parser.add_argument("--walk-results", default=bench_quality.WALK_RESULTS,
                        help="bench_quality.py's results, for the arm's iterations")
    parser.add_argument("--output", default=os.path.join(bench_quality.REPO_ROOT, "benchmarks", "results", "nms.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if "busi_train" not in DatasetCatalog.list():
        raise SystemExit("BUSI is not registered: set USTUMOR_DATASETS to the folder holding BUSI/")
    bench_quality.register_first_box_train()
    weights = os.path.join(bench_quality.run_dir_of(args, args.arm, args.seed), "model_final.pth")
    if not os.path.isfile(weights):
        raise SystemExit(f"{weights} does not exist: run bench_quality.py --arms {args.arm} --seeds {args.seed} first")
    with open(args.walk_results) as f:
        iterations = json.load(f)["arms"].get(args.arm, {}).get(str(args.seed), {}).get("iterations")
    cfg = bench_quality.ustumor_config(args, os.path.dirname(weights), args.arm, args.seed, iterations)
    score_threshold, keep_at_most = cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST, cfg.TEST.DETECTIONS_PER_IMAGE
    # NMS off, applied below once per threshold; boxes below the top 100 may survive a stricter NMS
    without_nms = ["MODEL.ROI_HEADS.NMS_THRESH_TEST", "1.0", "TEST.DETECTIONS_PER_IMAGE", "1000"]
    settings = bench_quality.evaluation_settings(args)
    thresholds = [float(value) for value in args.thresholds.split(",")]
    results, rows = {}, []
    for split in args.splits.split(","):
        raw = bench_quality.score_checkpoint(args, args.arm, args.seed, weights, iterations, split, without_nms)
        default = suppressed(raw, DETECTRON2_DEFAULT, score_threshold, keep_at_most)
        for threshold in thresholds:
            records = suppressed(raw, threshold, score_threshold, keep_at_most)
            metrics = evaluate_suite(records, dataset_name=split, **settings)["confidence_intervals"]
            differences = paired_differences(default, records, **settings)
            results[f"{split}_{threshold}"] = {name: {"value": metrics[key], "minus_default": differences[key]}
                                               for name, key in REPORTED.items()}
            rows.append([split, threshold] + [fmt_interval(metrics[key]) for key in REPORTED.values()]
                        + [fmt_interval(differences[key], signed=True) for key in list(REPORTED.values())[:2]])
    print_table(["split", "NMS IoU"] + list(REPORTED) + [f"{name} - at {DETECTRON2_DEFAULT}" for name in
                                                         list(REPORTED)[:2]], rows)
    write_json(args.output, {"machine": machine_facts(), "arm": args.arm, "seed": args.seed, "weights": weights,
                             "score_threshold": score_threshold, "detections_per_image": keep_at_most,
                             "results": results})


if __name__ == "__main__":
    main()
