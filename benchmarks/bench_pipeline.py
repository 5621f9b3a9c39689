#!/usr/bin/env python
"""Data-pipeline cost: loader throughput, its share of a training step, crop speed.

    .venv/bin/python benchmarks/bench_pipeline.py [--quick] [--output benchmarks/results/pipeline.json]

1. Loader throughput (images/s through ``UltrasoundDatasetMapper`` and Detectron2's
   train loader, batch 2) with ``INPUT.CROP_ULTRASOUND`` on and off, 0/1/2 workers, on
   600x800 phantom scanner screenshots (``tools/make_phantom.py --workspace``).
2. Overhead: a real training loop (Faster R-CNN R50-FPN, 512 px, the BUSI config
   with random BN weights) where the time spent waiting for the next batch is divided
   by the whole step time; 0 and 2 workers.
3. Crop throughput per core (``cv2.setNumThreads(1)``, frames already in memory):
   phantom screenshots, and the real BUSI images when ``../shared/datasets/BUSI`` exists.
"""
import argparse
import itertools
import os
import tempfile
import time

import cv2
import torch

from common import REPO_ROOT, machine_facts, print_table, summarize, write_json

import ustumor  # noqa: E402,F401
from detectron2.data import build_detection_train_loader  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from ustumor.data.datasets.busi import load_busi_dicts  # noqa: E402
from ustumor.data.datasets import register_busi_layout  # noqa: E402
from ustumor.data.image_io import read_grey  # noqa: E402
from ustumor.data.mapper import UltrasoundDatasetMapper  # noqa: E402
from ustumor.synthetic import write_phantom_dataset  # noqa: E402
from ustumor.data.preprocessing.scan_window import crop_ultrasound_window  # noqa: E402
from ustumor.engine.defaults import build_config  # noqa: E402
from ustumor.engine.trainer import UltrasoundTrainer  # noqa: E402

CONFIG = os.path.join(REPO_ROOT, "configs", "busi", "faster_rcnn_R_50_FPN_4500it.yaml")
SHARED_BUSI = os.path.join(REPO_ROOT, "..", "shared", "datasets", "BUSI")


def pipeline_config(crop, workers):
    return build_config(CONFIG, [
        "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "MODEL.RESNETS.NORM", "BN", "MODEL.BACKBONE.FREEZE_AT", "0",
        "DATASETS.TRAIN", '("pipeline_train",)', "DATASETS.TEST", "()",
        "INPUT.CROP_ULTRASOUND", str(crop), "DATALOADER.NUM_WORKERS", str(workers),
        "INPUT.MIN_SIZE_TRAIN", "(512,)", "INPUT.MAX_SIZE_TRAIN", "853", "SOLVER.IMS_PER_BATCH", "2",
    ])


def loader_throughput(cfg, batches, warmup=3):
    """Images/s out of the train loader, after worker start-up and ``warmup`` batches."""
    loader = iter(build_detection_train_loader(cfg, mapper=UltrasoundDatasetMapper(cfg, is_train=True)))
    for _ in range(warmup):
        next(loader)
    start = time.perf_counter()
    images = sum(len(next(loader)) for _ in range(batches))
    return images / (time.perf_counter() - start)


def training_overhead(cfg, steps, warmup=2):
    """Share of each training step spent waiting for data, in a real loop."""
    model = UltrasoundTrainer.build_model(cfg)
    optimizer = UltrasoundTrainer.build_optimizer(cfg, model)
    loader = iter(build_detection_train_loader(cfg, mapper=UltrasoundDatasetMapper(cfg, is_train=True)))
    model.train()
    waits, totals = [], []
    for step in range(warmup + steps):
        start = time.perf_counter()
        batch = next(loader)
        got_data = time.perf_counter()
        loss = sum(model(batch).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        end = time.perf_counter()
        if step >= warmup:
            waits.append(got_data - start)
            totals.append(end - start)
    return {"overhead_fraction": sum(waits) / sum(totals), "step": summarize(totals), "wait": summarize(waits)}


def crop_rate(frames, repeats=3):
    """Best-of-``repeats`` frames/s of the crop on one core."""
    cv2.setNumThreads(1)
    for frame in frames[:3]:
        crop_ultrasound_window(frame)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for frame in frames:
            crop_ultrasound_window(frame)
        best = max(best, len(frames) / (time.perf_counter() - start))
    cv2.setNumThreads(0)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=os.path.join(REPO_ROOT, "benchmarks", "results", "pipeline.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batches, steps = (10, 3) if args.quick else (40, 8)
    report = {"machine": machine_facts(), "quick": args.quick}

    with tempfile.TemporaryDirectory() as tmp:
        write_phantom_dataset(os.path.join(tmp, "phantom"), num_images=60, seed=0, workspace=True)
        register_busi_layout("pipeline", os.path.join(tmp, "phantom"), ratios=(1.0, 0.0, 0.0))

        rows, report["loader_images_per_s"] = [], {}
        for crop, workers in itertools.product((False, True), (0, 1, 2)):
            rate = loader_throughput(pipeline_config(crop, workers), batches)
            report["loader_images_per_s"][f"crop_{'on' if crop else 'off'}_workers_{workers}"] = rate
            rows.append(["on" if crop else "off", workers, f"{rate:.1f}"])
        print_table(["crop", "workers", "images/s"], rows)

        report["training_overhead"], rows = {}, []
        for workers in (0, 2):
            with EventStorage(0):  # Detectron2's losses log into it
                result = training_overhead(pipeline_config(True, workers), steps)
            report["training_overhead"][f"workers_{workers}"] = result
            rows.append([workers, f"{result['step']['median']:.2f}", f"{result['wait']['median'] * 1000:.1f}",
                         f"{100 * result['overhead_fraction']:.2f}%"])
        print_table(["workers", "step s", "data wait ms", "overhead"], rows)

        phantom_frames = [read_grey(d["file_name"]) for d in load_busi_dicts(os.path.join(tmp, "phantom"))]
    report["crop_images_per_s_per_core"] = {"phantom_workspace_600x800": crop_rate(phantom_frames)}
    if os.path.isdir(os.path.join(SHARED_BUSI, "Dataset_BUSI_with_GT")):
        busi = load_busi_dicts(SHARED_BUSI)
        frames = [read_grey(d["file_name"]) for d in busi[:: 2 if args.quick else 1]]
        report["crop_images_per_s_per_core"]["busi"] = crop_rate(frames)
    print_table(["crop input", "images/s per core"],
                [[k, f"{v:.0f}"] for k, v in report["crop_images_per_s_per_core"].items()])
    write_json(args.output, report)


if __name__ == "__main__":
    main()
