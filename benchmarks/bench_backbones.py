#!/usr/bin/env python
"""Speed of ustumor's two BUSI stage-1 detectors against each other: R50-FPN from scratch
(``configs/busi/faster_rcnn_R_50_FPN_scratch_4500it.yaml``) and MobileNetV2-FPN from ImageNet
(``configs/busi/faster_rcnn_MNV2_FPN_4500it.yaml``).

    .venv/bin/python benchmarks/bench_backbones.py [--sizes 256 512] [--threads 2]

Each config as it trains and infers (its norms, frozen stages, proposal counts, memory
format), on the same BUSI-sized phantom scans as ``bench_speed.py``, at each short side:
median seconds per training step (batch 2, no augmentation) and per inferred image
(batch 1), the two models timed alternately in one process, and ``ratio`` = MobileNetV2 /
R50 (below 1: MobileNetV2 is faster). The machine heads the table and the JSON. Weights
are random except MobileNetV2's ImageNet backbone (``make mobilenet-weights``): the timed
work does not depend on them (fixed proposal counts).
"""
import argparse
import os
import tempfile

import torch

from bench_speed import mapped_inputs, sample_records, ustumor_steps
from common import REPO_ROOT, fmt, machine_facts, print_table, time_interleaved, write_json

import ustumor  # noqa: E402,F401
from detectron2.utils.events import EventStorage  # noqa: E402
from ustumor.engine.defaults import build_config  # noqa: E402

CONFIGS = {
    "r50_scratch": os.path.join(REPO_ROOT, "configs", "busi", "faster_rcnn_R_50_FPN_scratch_4500it.yaml"),
    "mnv2_imagenet": os.path.join(REPO_ROOT, "configs", "busi", "faster_rcnn_MNV2_FPN_4500it.yaml"),
}


def config_at(name, size):
    return build_config(CONFIGS[name], [
        "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "SOLVER.IMS_PER_BATCH", "2",
        "INPUT.MIN_SIZE_TRAIN", f"({size},)", "INPUT.MAX_SIZE_TRAIN", str(int(size * 5 / 3)),
        "INPUT.MIN_SIZE_TEST", str(size), "INPUT.MAX_SIZE_TEST", str(int(size * 5 / 3)),
        "INPUT.RANDOM_FLIP", "none", "INPUT.BRIGHTNESS_RANGE", "[1.0, 1.0]", "INPUT.CONTRAST_RANGE", "[1.0, 1.0]",
    ])


def timed_steps(name, size, records):
    """A training step and an inference call of config ``name`` at short side ``size``."""
    cfg = config_at(name, size)
    train_inputs, test_inputs = mapped_inputs(cfg, records)
    torch.manual_seed(0)
    return ustumor_steps(cfg, train_inputs, test_inputs), tuple(test_inputs[0]["image"].shape[1:])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--repeats", type=int, default=6, help="timed repeats per model (inference: twice that)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=os.path.join(REPO_ROOT, "benchmarks", "results", "backbones.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results, rows = {}, []
    with tempfile.TemporaryDirectory() as tmp, EventStorage(0):
        records = sample_records(tmp, 3)
        for size in args.sizes:
            steps = {name: timed_steps(name, size, records) for name in CONFIGS}
            for phase, repeats in (("train", args.repeats), ("infer", args.repeats * 2)):
                timings = time_interleaved({name: steps[name][0][phase] for name in CONFIGS}, repeats, warmup=2)
                ratio = timings["mnv2_imagenet"]["median"] / timings["r50_scratch"]["median"]
                results[f"{phase}_{size}"] = {**timings, "ratio": ratio}
                rows.append([phase, size, "x".join(map(str, steps["r50_scratch"][1])), fmt(timings["r50_scratch"]),
                             fmt(timings["mnv2_imagenet"]), f"{ratio:.2f}"])
    print_table(["phase", "size", "input", "R50-FPN scratch s (min-max)", "MNV2-FPN s (min-max)", "ratio"], rows)
    write_json(args.output, {"machine": machine_facts(), "repeats": args.repeats, "results": results})


if __name__ == "__main__":
    main()
