#!/usr/bin/env python
"""How long the --eval-only medical suite takes on a BUSI-sized test split.

    .venv/bin/python benchmarks/bench_evaluation_suite.py [--images 160] [--detections 100] [--bootstrap 1000]

Synthetic records (about one lesion per image, a third of images normal, Detectron2's
default 100 detections per image); times the point estimates and the bootstrap separately.
"""
import argparse
import time

import numpy as np

from ustumor.evaluation.records import ImageRecord
from ustumor.evaluation.suite import SuiteAnalysis, evaluate_suite


def synthetic_records(num_images, detections, seed=0):
    rng = np.random.default_rng(seed)
    records = []
    for i in range(num_images):
        lesions = 0 if i % 3 == 0 else 1 + int(rng.random() < 0.1)
        xy = rng.uniform(0, 400, (lesions, 2))
        gt = np.hstack([xy, xy + rng.uniform(20, 200, (lesions, 2))])
        xy = rng.uniform(0, 400, (detections, 2))
        pred = np.hstack([xy, xy + rng.uniform(20, 200, (detections, 2))])
        pred[:lesions] = gt + rng.normal(0, 10, gt.shape)
        records.append(ImageRecord(f"img{i}", gt, rng.integers(0, 2, lesions), pred,
                                   np.sort(rng.uniform(0.05, 1, detections))[::-1], rng.integers(0, 2, detections),
                                   {"patient_id": f"p{i // 2}"}))
    return records


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--detections", type=int, default=100)
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()
    records = synthetic_records(args.images, args.detections)
    classes = ["benign", "malignant"]

    start = time.perf_counter()
    analysis = SuiteAnalysis(records, classes)
    prepared = time.perf_counter()
    analysis.headline()
    one = time.perf_counter()
    evaluate_suite(records, classes, num_bootstrap=args.bootstrap)
    total = time.perf_counter()
    print(f"{args.images} images x {args.detections} detections, two classes, {args.bootstrap} resamples")
    print(f"  per-image matching (once):     {prepared - start:7.2f} s")
    print(f"  headline numbers, one sample:  {1000 * (one - prepared):7.1f} ms")
    print(f"  whole suite with bootstrap:    {total - one:7.2f} s")


if __name__ == "__main__":
    main()
