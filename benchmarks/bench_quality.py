#!/usr/bin/env python
"""BUSI quality at a fixed training budget: ustumor against a plain torchvision baseline.

    .venv/bin/python benchmarks/bench_quality.py [--iterations 800] [--size 256] [--device cpu]

Both pipelines get the same leak-free ``busi_train``/``busi_test`` split, the same short
side, batch 2, the same number of iterations and random initial weights (nothing can
be downloaded here). They differ in what the project chose:

- **ustumor**: ``configs/busi/faster_rcnn_R_50_FPN_scratch_4500it.yaml`` (BN, AdamW at 1e-4
  with warm-up and steps, lesion anchors), scale jitter, horizontal flip,
  brightness/contrast jitter, every lesion's box, normals as negatives;
- **torchvision baseline** (the original notebooks' pipeline, see the README): torchvision
  ``fasterrcnn_resnet50_fpn``, min-max then ImageNet normalisation, no augmentation,
  Adam at 1e-4, one box per image (the first), normals as negatives.

Reported on ``busi_test`` with 95% bootstrap CIs (``ustumor.evaluation.suite``):
AP50 (class-agnostic COCO), FROC CPM, sensitivity at 1 FP per image, penalised IoU.
The default budget (800 iterations at 256 px) took 74 minutes on this 2-core VM
(ustumor 33, torchvision baseline 40, evaluation included); 1000 at 320 px would take about 2 h.
"""
import argparse
import os
import time

import numpy as np
import torch
import torchvision

from common import REPO_ROOT, machine_facts, print_table, write_json

import ustumor  # noqa: E402,F401
from detectron2.data import DatasetCatalog, build_detection_test_loader  # noqa: E402
from ustumor.data.image_io import read_grey  # noqa: E402
from ustumor.data.mapper import UltrasoundDatasetMapper  # noqa: E402
from ustumor.engine.defaults import build_config  # noqa: E402
from ustumor.engine.trainer import UltrasoundTrainer  # noqa: E402
from ustumor.evaluation.records import ground_truth_of, make_records  # noqa: E402
from ustumor.evaluation.suite import evaluate_suite  # noqa: E402

CONFIG = os.path.join(REPO_ROOT, "configs", "busi", "faster_rcnn_R_50_FPN_scratch_4500it.yaml")
REPORTED = {"AP50": "bbox_agnostic/AP50", "FROC CPM": "froc/cpm", "sens@1FP": "froc/sensitivity@1",
            "penalised IoU": "penalized_iou/piou"}


def ustumor_config(args, output_dir):
    size = args.size
    return build_config(CONFIG, [
        "OUTPUT_DIR", output_dir, "MODEL.DEVICE", args.device, "MODEL.WEIGHTS", "",
        "INPUT.MIN_SIZE_TRAIN", f"({int(size * 0.85)}, {size}, {int(size * 1.15)})",
        "INPUT.MAX_SIZE_TRAIN", str(int(size * 1.15 * 5 / 3)),
        "INPUT.MIN_SIZE_TEST", str(size), "INPUT.MAX_SIZE_TEST", str(int(size * 5 / 3)),
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", str(args.iterations),
        "SOLVER.WARMUP_ITERS", str(min(100, args.iterations // 10)),
        "SOLVER.STEPS", f"({int(args.iterations * 0.75)}, {int(args.iterations * 0.9)})",
        "SOLVER.CHECKPOINT_PERIOD", str(args.iterations),
        "DATASETS.TRAIN", '("busi_train",)', "DATASETS.TEST", "()", "TEST.EVAL_PERIOD", "0",
        "DATALOADER.NUM_WORKERS", str(args.workers), "SEED", str(args.seed),
    ])


def train_ustumor(args, output_dir):
    cfg = ustumor_config(args, output_dir)
    trainer = UltrasoundTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    model = trainer.model.eval()
    predictions = {}
    loader = build_detection_test_loader(cfg, "busi_test", mapper=UltrasoundDatasetMapper(cfg, is_train=False))
    with torch.no_grad():
        for inputs in loader:
            instances = model(inputs)[0]["instances"].to("cpu")
            predictions[inputs[0]["image_id"]] = (instances.pred_boxes.tensor.numpy(), instances.scores.numpy(),
                                                  instances.pred_classes.numpy())
    return predictions


class BaselineData:
    """The baseline's input pipeline: grey -> 3 channels, min-max to [0, 1], one box, no augmentation."""

    def __init__(self, dicts):
        self.dicts = dicts

    @staticmethod
    def image_tensor(path):
        grey = read_grey(path).astype(np.float32)
        grey = (grey - grey.min()) / max(float(grey.max() - grey.min()), 1.0)
        return torch.from_numpy(grey)[None].expand(3, -1, -1).contiguous()

    def sample(self, index):
        record = self.dicts[index]
        boxes = ground_truth_of(record)[0][:1]  # one box per image
        target = {"boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                  "labels": torch.ones(len(boxes), dtype=torch.int64)}
        return self.image_tensor(record["file_name"]), target


def train_baseline(args):
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    # torchvision normalises with ImageNet mean/std after the min-max scaling
    model = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=2, min_size=args.size, max_size=int(args.size * 5 / 3)
    ).to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    data = BaselineData(DatasetCatalog.get("busi_train"))
    rng = np.random.default_rng(args.seed)
    order = []
    model.train()
    for iteration in range(args.iterations):
        if len(order) < 2:
            order += rng.permutation(len(data.dicts)).tolist()
        batch = [data.sample(order.pop(0)) for _ in range(2)]
        images = [image.to(device) for image, _ in batch]
        targets = [{k: v.to(device) for k, v in target.items()} for _, target in batch]
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if iteration % 50 == 0:
            print(f"torchvision baseline iter {iteration}: loss {loss.item():.4f}", flush=True)
    model.eval()
    predictions = {}
    with torch.no_grad():
        for record in DatasetCatalog.get("busi_test"):
            output = model([data.image_tensor(record["file_name"]).to(device)])[0]
            predictions[record["image_id"]] = (output["boxes"].cpu().numpy(), output["scores"].cpu().numpy(),
                                               (output["labels"] - 1).cpu().numpy())
    return predictions


def evaluate(predictions, args):
    records = make_records(DatasetCatalog.get("busi_test"), predictions)
    results = evaluate_suite(records, num_bootstrap=args.bootstrap, bootstrap_seed=args.seed, dataset_name="busi_test")
    return {name: results["confidence_intervals"][key] for name, key in REPORTED.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=800)
    parser.add_argument("--size", type=int, default=256, help="short side, both pipelines")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--output", default=os.path.join(REPO_ROOT, "benchmarks", "results", "quality.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if "busi_train" not in DatasetCatalog.list():
        raise SystemExit("BUSI is not registered: set USTUMOR_DATASETS to the folder holding BUSI/")

    report = {"machine": machine_facts(), "budget": {"iterations": args.iterations, "batch": 2,
                                                     "short_side": args.size, "device": args.device}}
    timings, metrics = {}, {}
    start = time.perf_counter()
    metrics["ustumor"] = evaluate(train_ustumor(args, os.path.join(REPO_ROOT, "output", "bench_quality")), args)
    timings["ustumor"] = time.perf_counter() - start
    start = time.perf_counter()
    metrics["torchvision baseline"] = evaluate(train_baseline(args), args)
    timings["torchvision baseline"] = time.perf_counter() - start
    report.update(metrics=metrics, seconds=timings)

    rows = [[pipeline, f"{timings[pipeline] / 60:.1f}"] +
            [f"{m['estimate']:.3f} [{m['low']:.3f}, {m['high']:.3f}]" for m in metrics[pipeline].values()]
            for pipeline in metrics]
    print_table(["pipeline", "minutes"] + [f"{name} [95% CI]" for name in REPORTED], rows)
    write_json(args.output, report)


if __name__ == "__main__":
    main()
