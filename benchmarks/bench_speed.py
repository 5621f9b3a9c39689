#!/usr/bin/env python
"""Speed of ustumor's Faster R-CNN R50-FPN against torchvision's, in the same setting.

    .venv/bin/python benchmarks/bench_speed.py [--quick] [--layouts] [--output benchmarks/results/speed.json]

ustumor's model, optimizer and inputs come from our config, trainer and mapper;
torchvision's ``fasterrcnn_resnet50_fpn`` gets the very same image tensors. Two
settings, applied to both:

- ``pretrained``: the fine-tuning setting: FrozenBN, stem and res2 frozen;
- ``scratch``: BN everywhere, all layers trainable.

ustumor runs as ``configs/busi`` configures it (lesion anchors, 256 sampled RoIs per
image, 300 test proposals, 2x2 RoIAlign sampling, ``MODEL.MEMORY_FORMAT`` auto, norms folded
in inference); torchvision with
``fasterrcnn_resnet50_fpn``'s defaults (2000 proposals per image in training, 1000 at
test, 512 RoIs). ``--same-work`` instead gives ustumor torchvision's anchors, proposal
counts and RoI sampling, so the two do the same arithmetic and only the implementations
differ. Batch 2 for training and 1 for inference, random weights. Reported: median
seconds per training iteration and per inferred image, and ``ratios`` = ustumor /
torchvision (below 1: ustumor is faster); and the peak memory of training at the largest
size, each model in a process of its own (peak resident set size after 3 training steps,
and its rise over the process's size once the model and inputs were built). The machine
(CPU model, ATen's and oneDNN's ISA, threads, torch) heads the table and the JSON. To
measure an AVX2-only CPU on an AVX-512 machine, run it under
``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2``.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import torch
import torchvision
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import misc as misc_nn_ops

from common import REPO_ROOT, fmt, machine_facts, print_table, time_interleaved, write_json

import ustumor  # noqa: E402,F401
from ustumor.data.mapper import UltrasoundDatasetMapper  # noqa: E402
from ustumor.synthetic import render_phantom  # noqa: E402
from ustumor.engine.defaults import build_config  # noqa: E402
from ustumor.engine.trainer import UltrasoundTrainer  # noqa: E402
from detectron2.structures import BoxMode  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
import cv2  # noqa: E402

CONFIG = os.path.join(REPO_ROOT, "configs", "busi", "faster_rcnn_R_50_FPN_4500it.yaml")
LAYOUTS = ("channels_last", "contiguous")
SETTINGS = {"pretrained": {"norm": "FrozenBN", "freeze_at": 2}, "scratch": {"norm": "BN", "freeze_at": 0}}


# torchvision's work, given to ustumor under --same-work
TORCHVISION_WORK = [
    "MODEL.ANCHOR_GENERATOR.SIZES", "[[32], [64], [128], [256], [512]]",
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[[0.5, 1.0, 2.0]]",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "2000", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "2000",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "1000", "MODEL.RPN.POST_NMS_TOPK_TEST", "1000",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "512", "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", "2",
]


def ustumor_config(setting, size, same_work=False, memory_format="auto"):
    return build_config(CONFIG, [
        "MODEL.MEMORY_FORMAT.TRAIN", memory_format, "MODEL.MEMORY_FORMAT.TEST", memory_format,
        "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu",
        # random weights: unit-variance inputs and a small LR keep the timed steps finite
        "MODEL.PIXEL_STD", "[57.375, 57.120, 58.395]", "SOLVER.BASE_LR", "0.001",
        "MODEL.RESNETS.NORM", SETTINGS[setting]["norm"], "MODEL.BACKBONE.FREEZE_AT", str(SETTINGS[setting]["freeze_at"]),
        "INPUT.MIN_SIZE_TRAIN", f"({size},)", "INPUT.MAX_SIZE_TRAIN", "2000",
        "INPUT.MIN_SIZE_TEST", str(size), "INPUT.MAX_SIZE_TEST", "2000",
        "INPUT.RANDOM_FLIP", "none", "INPUT.BRIGHTNESS_RANGE", "[1.0, 1.0]", "INPUT.CONTRAST_RANGE", "[1.0, 1.0]",
    ] + (TORCHVISION_WORK if same_work else []))


def torchvision_model(setting, num_classes, size):
    if setting == "pretrained":
        backbone = torchvision.models.resnet50(weights=None, norm_layer=misc_nn_ops.FrozenBatchNorm2d)
        backbone = _resnet_fpn_extractor(backbone, trainable_layers=3)
    else:
        backbone = _resnet_fpn_extractor(torchvision.models.resnet50(weights=None), trainable_layers=5)
    # fasterrcnn_resnet50_fpn's defaults; min_size equal to the inputs' (already resized)
    # short side, so its resize keeps the size
    return FasterRCNN(backbone, num_classes=num_classes + 1, min_size=size, max_size=2000,
                      image_mean=[0.0] * 3, image_std=[1.0] * 3)


def sample_records(tmp_dir, count, seed=0):
    """BUSI-sized phantom scans written as PNG with their boxes, as the mapper reads them."""
    rng = np.random.default_rng(seed)
    records = []
    for index in range(count):
        grey, masks = render_phantom(rng, 470, 560, "benign")
        path = os.path.join(tmp_dir, f"scan_{index}.png")
        cv2.imwrite(path, grey)
        annotations = []
        for mask in masks:
            ys, xs = np.nonzero(mask)
            annotations.append({"bbox": [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)],
                                "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0, "iscrowd": 0})
        records.append({"file_name": path, "height": 470, "width": 560, "image_id": index, "annotations": annotations})
    return records


def to_torchvision(mapped, cfg):
    """The mapper's uint8 tensor, normalised as ustumor's model normalises it."""
    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(cfg.MODEL.PIXEL_STD).view(3, 1, 1)
    image = (mapped["image"].float() - mean) / std
    target = {"boxes": mapped["instances"].gt_boxes.tensor.clone(),
              "labels": mapped["instances"].gt_classes.clone() + 1} if "instances" in mapped else None
    return image, target


def mapped_inputs(cfg, records):
    """The mapper's training batch (``records[:2]``) and inference input (``records[2]``) under ``cfg``."""
    return ([UltrasoundDatasetMapper(cfg, is_train=True)(r) for r in records[:2]],
            [UltrasoundDatasetMapper(cfg, is_train=False)(r) for r in records[2:3]])


def ustumor_steps(cfg, train_inputs, test_inputs):
    """A training step and an inference call (``{"train": ..., "infer": ...}``) of the model and
    optimizer our trainer builds from ``cfg``."""
    model = UltrasoundTrainer.build_model(cfg)
    optimizer = UltrasoundTrainer.build_optimizer(cfg, model)

    def train():
        model.train()
        loss = sum(model(train_inputs).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def infer():
        model.eval()
        with torch.no_grad():
            model(test_inputs)

    return {"train": train, "infer": infer}


def build_candidates(setting, size, records, same_work=False, only=None, memory_format="auto"):
    """The four timed steps ({train, infer} x {ustumor, torchvision}) on shared inputs;
    ``only`` "ustumor" or "torchvision" builds that model alone."""
    cfg = ustumor_config(setting, size, same_work, memory_format)
    train_inputs, test_inputs = mapped_inputs(cfg, records)
    torch.manual_seed(0)
    steps = {"train": {}, "infer": {}}
    if only != "torchvision":
        ours = ustumor_steps(cfg, train_inputs, test_inputs)
        for phase in steps:
            steps[phase]["ustumor"] = ours[phase]
    if only != "ustumor":
        theirs = torchvision_model(setting, cfg.MODEL.ROI_HEADS.NUM_CLASSES, size)
        theirs_optimizer = torch.optim.SGD([p for p in theirs.parameters() if p.requires_grad],
                                           lr=cfg.SOLVER.BASE_LR, momentum=0.9, weight_decay=1e-4)
        tv_train = [to_torchvision(m, cfg) for m in train_inputs]
        tv_test = [to_torchvision(m, cfg)[0] for m in test_inputs]

        def theirs_train():
            theirs.train()
            loss = sum(theirs([i for i, _ in tv_train], [t for _, t in tv_train]).values())
            theirs_optimizer.zero_grad()
            loss.backward()
            theirs_optimizer.step()

        def theirs_infer():
            theirs.eval()
            with torch.no_grad():
                theirs(tv_test)

        steps["train"]["torchvision"], steps["infer"]["torchvision"] = theirs_train, theirs_infer
    shape = tuple(train_inputs[0]["image"].shape[1:])
    return steps, shape


def peak_training_memory(model, setting, size, same_work, threads):
    """Peak RSS of training ``model`` ("ustumor" or "torchvision"), measured in a child process."""
    command = [sys.executable, os.path.abspath(__file__), "--memory-of", model, "--settings", setting,
               "--sizes", str(size), "--threads", str(threads)] + (["--same-work"] if same_work else [])
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def measure_own_training_memory(model, setting, size, same_work, steps=3):
    """In this process: build, note the RSS, train ``steps`` steps, report the peak in MiB."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp, EventStorage(0):
        candidates, _ = build_candidates(setting, size, sample_records(tmp, 3), same_work, only=model)
        built = _memory_status_mib("VmRSS")
        for _ in range(steps):
            candidates["train"][model]()
    # VmHWM, not getrusage's ru_maxrss: a child keeps its parent's ru_maxrss across exec
    peak = _memory_status_mib("VmHWM")
    print(json.dumps({"peak_rss_mib": round(peak), "rise_mib": round(peak - built)}))


def _memory_status_mib(field):
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, from /proc/self/status (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status: the memory measurement needs Linux")


def benchmark(setting, size, records, repeats, warmup, same_work, layouts=False):
    candidates, shape = build_candidates(setting, size, records, same_work)
    if layouts:  # ustumor again with each layout forced, to check what "auto" chose
        for memory_format in LAYOUTS:
            forced, _ = build_candidates(setting, size, records, same_work, "ustumor", memory_format)
            for phase in candidates:
                candidates[phase][f"ustumor_{memory_format}"] = forced[phase]["ustumor"]
    train = time_interleaved(candidates["train"], repeats, warmup)
    infer = time_interleaved(candidates["infer"], repeats * 2, warmup)
    return {"train": train, "infer": infer, "input_hw": shape}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 timed repeats after 1 warm-up (6 after 2 without it); 15-17 minutes on a 2-core EPYC VM with --layouts and the memory measurement")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 800])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--same-work", action="store_true",
                        help="give ustumor torchvision's anchors, proposal counts and RoI sampling")
    parser.add_argument("--repeats", type=int, help="timed repeats per candidate (default 6, --quick 2)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", help="default: benchmarks/results/speed[_same_work].json")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--layouts", action="store_true",
                        help="also time ustumor with MODEL.MEMORY_FORMAT forced to channels_last and to "
                             "contiguous, to check the 'auto' choice on this machine")
    parser.add_argument("--memory-of", choices=["ustumor", "torchvision"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_of:  # the child process of peak_training_memory
        return measure_own_training_memory(args.memory_of, args.settings[0], args.sizes[0], args.same_work)
    repeats, warmup = (2, 1) if args.quick else (6, 2)
    repeats = args.repeats or repeats
    output = args.output or os.path.join(REPO_ROOT, "benchmarks", "results",
                                         "speed_same_work.json" if args.same_work else "speed.json")

    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        records = sample_records(tmp, 3)
        results, ratios, rows, layout_rows = {}, {}, [], []
        for setting in args.settings:
            for size in args.sizes:
                with EventStorage(0):  # Detectron2's losses log into it
                    result = benchmark(setting, size, records, repeats, warmup, args.same_work, args.layouts)
                results[f"{setting}_{size}"] = result
                for phase in ("train", "infer"):
                    ours, theirs = result[phase]["ustumor"], result[phase]["torchvision"]
                    ratio = ours["median"] / theirs["median"]
                    ratios[f"{phase}_{setting}_{size}"] = ratio
                    rows.append([phase, setting, size, "x".join(map(str, result["input_hw"])),
                                 fmt(ours), fmt(theirs), f"{ratio:.2f}"])
                    if args.layouts:
                        layout_rows.append([phase, setting, size] + [
                            f"{result[phase][name]['median']:.3f} ({result[phase][name]['median'] / theirs['median']:.2f})"
                            for name in ("ustumor", *(f"ustumor_{f}" for f in LAYOUTS))])
                print_table(["phase", "setting", "size", "input", "ustumor s", "torchvision s", "ratio"], rows[-2:])
    print()
    print_table(["phase", "setting", "size", "input", "ustumor s (min-max)", "torchvision s (min-max)", "ratio"], rows)
    if args.layouts:
        print()
        print_table(["phase", "setting", "size", "ustumor auto s (ratio)"]
                    + [f"ustumor {f} s (ratio)" for f in LAYOUTS], layout_rows)
    memory, memory_rows = {}, []
    if not args.no_memory:
        size = max(args.sizes)
        for setting in args.settings:
            peaks = {model: peak_training_memory(model, setting, size, args.same_work, args.threads)
                     for model in ("ustumor", "torchvision")}
            memory[f"train_{setting}_{size}"] = peaks
            memory_rows.append([setting, size] + [f"{peaks[m]['peak_rss_mib']} (+{peaks[m]['rise_mib']})"
                                                  for m in ("ustumor", "torchvision")])
        print()
        print_table(["training peak RSS MiB (rise)", "size", "ustumor", "torchvision"], memory_rows)
    write_json(output, {"machine": machine_facts(), "quick": args.quick, "repeats": repeats,
                        "same_work": args.same_work, "results": results, "ratios": ratios,
                        "peak_training_memory_batch2": memory})


if __name__ == "__main__":
    main()
