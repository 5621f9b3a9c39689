#!/usr/bin/env python
"""What checkpoint selection buys: one training run, three checkpoints, scored on the test set.

    USTUMOR_DATASETS=../shared/datasets .venv/bin/python benchmarks/bench_selection.py \\
        [--config-file configs/busi/faster_rcnn_R_50_FPN_scratch_4500it.yaml] [--iterations 800] \\
        [--period 100] [--size 256 --batch 2] [--num-gpus 1] [KEY VALUE ...]

Trains the config once with ``tools/train_net.py`` (as a user does), evaluating the
validation set (``DATASETS.TEST``, ``busi_val``) every ``--period`` iterations and keeping
every periodic checkpoint. Then ``tools/train_net.py --eval-only`` scores three of them on
the test set (``--test-set``, ``busi_test``):

- ``last``: ``model_final.pth``, what a run without selection would ship;
- ``best penalised IoU``: ``model_best.pth``, kept by ustumor's hook by penalised IoU on
  validation (``TEST.BEST_CHECKPOINT``);
- ``best AP50``: the periodic checkpoint with the best validation AP50.

Prints AP50, FROC CPM, sensitivity at 1 FP/image and penalised IoU with the evaluation
suite's bootstrap CIs, and which iteration each selection took. ``--size`` and ``--batch``
set the input sizes and batch as ``bench_quality.py`` does (its CPU budget: ``--size 256
--batch 2 --iterations 800``); without them the config's are used (``gpu/run_busi.sh``).
"""
import argparse
import json
import os
import subprocess
import sys
import time

from common import REPO_ROOT, REPORTED, budget_size_overrides, fmt_interval, machine_facts, print_table, write_json

from ustumor.engine.defaults import build_config  # noqa: E402
from ustumor.evaluation.records import load_saved_predictions  # noqa: E402
from ustumor.evaluation.suite import paired_differences, suite_settings  # noqa: E402

DEFAULT_CONFIG = os.path.join("configs", "busi", "faster_rcnn_R_50_FPN_scratch_4500it.yaml")
VALIDATION_METRICS = {"best penalised IoU": "penalized_iou/piou", "best AP50": "bbox/AP50"}


def train_net(config, arguments, log_path):
    command = [sys.executable, os.path.join(REPO_ROOT, "tools", "train_net.py"), "--config-file", config] + arguments
    print("+ " + " ".join(command), flush=True)
    with open(log_path, "w") as log:
        subprocess.run(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)


def validation_history(run_dir):
    """Every periodic validation: iterations done -> ({metric: value}, the checkpoint saved then)."""
    rows = []
    with open(os.path.join(run_dir, "metrics.json")) as f:
        for line in f:
            row = json.loads(line)
            values = {name: row[key] for name, key in VALIDATION_METRICS.items() if key in row}
            if values:
                rows.append((row["iteration"], values))
    if not rows:
        raise SystemExit(f"{run_dir}/metrics.json holds no validation: was TEST.EVAL_PERIOD set?")
    history = {}
    for iteration, values in rows:
        # Detectron2 logs a periodic evaluation at the step's 0-based index, where the periodic
        # checkpoint of the same index was saved, and the one after training at MAX_ITER
        periodic = os.path.join(run_dir, f"model_{iteration:07d}.pth")
        if os.path.isfile(periodic):
            history[iteration + 1] = (values, periodic)
        elif iteration == max(i for i, _ in rows):
            history[iteration] = (values, os.path.join(run_dir, "model_final.pth"))
        else:
            raise SystemExit(f"checkpoint {periodic} is missing: keep every periodic checkpoint "
                             "(SOLVER.CHECKPOINT_KEEP_LAST 0, CHECKPOINT_PERIOD = the evaluation period)")
    return history


def selected_checkpoints(run_dir, history):
    """name -> (checkpoint path, iterations done when it was saved)."""
    with open(os.path.join(run_dir, "model_best.json")) as f:
        kept = json.load(f)  # the hook counts as Detectron2's hooks do: the 0-based step index
    chosen = {"last": (os.path.join(run_dir, "model_final.pth"), max(history)),
              "best penalised IoU": (os.path.join(run_dir, kept["checkpoint"]), kept["iteration"] + 1)}
    # the first of equal AP50s, as the hook keeps the first of equal penalised IoUs
    done = max(sorted(history), key=lambda i: history[i][0]["best AP50"])
    chosen["best AP50"] = (history[done][1], done)
    return chosen


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=DEFAULT_CONFIG)
    parser.add_argument("--iterations", type=int, default=800, help="the config's schedule is scaled to these")
    parser.add_argument("--period", type=int, default=100,
                        help="validation and checkpoint period; at least 20, the period of metrics.json")
    parser.add_argument("--size", type=int, default=None, help="short side as in bench_quality.py; none: the config's")
    parser.add_argument("--batch", type=int, default=None, help="images per step (all processes); none: the config's")
    parser.add_argument("--validation-set", default="busi_val")
    parser.add_argument("--test-set", default="busi_test")
    parser.add_argument("--num-gpus", type=int, default=1, help="processes, as tools/train_net.py")
    parser.add_argument("--run-dir", default=os.path.join(REPO_ROOT, "output", "bench_selection"))
    parser.add_argument("--output", default=os.path.join(REPO_ROOT, "benchmarks", "results", "selection.json"))
    parser.add_argument("--reuse", action="store_true",
                        help="keep a finished training and test evaluations found in --run-dir; only re-analyse")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for the config")
    args = parser.parse_args()

    iterations = args.iterations
    common = list(args.opts) + (budget_size_overrides(args.size) if args.size else [])
    if args.batch:
        common += ["SOLVER.IMS_PER_BATCH", str(args.batch)]
    cfg = build_config(args.config_file, common)  # also registers the datasets, as the runs see them
    # the config's schedule (warm-up, LR steps) scaled to the iterations asked for
    schedule = cfg.SOLVER
    scale = iterations / schedule.MAX_ITER
    steps = ", ".join(str(int(step * scale)) for step in schedule.STEPS)
    training = ["OUTPUT_DIR", args.run_dir, "SOLVER.MAX_ITER", str(iterations),
                "SOLVER.STEPS", f"({steps},)" if steps else "()",
                "SOLVER.WARMUP_ITERS", str(int(schedule.WARMUP_ITERS * scale)),
                "SOLVER.CHECKPOINT_PERIOD", str(args.period), "SOLVER.CHECKPOINT_KEEP_LAST", "0",
                "TEST.EVAL_PERIOD", str(args.period), "DATASETS.TEST", f'("{args.validation_set}",)']
    os.makedirs(args.run_dir, exist_ok=True)
    training_seconds = None
    if args.reuse and os.path.isfile(args.output):  # the training time of the run being re-analysed
        with open(args.output) as f:
            training_seconds = json.load(f).get("training_seconds")
    if not (args.reuse and os.path.isfile(os.path.join(args.run_dir, "model_final.pth"))):
        start = time.perf_counter()
        train_net(args.config_file, ["--num-gpus", str(args.num_gpus)] + common + training,
                  os.path.join(args.run_dir, "train.log"))
        training_seconds = time.perf_counter() - start

    history = validation_history(args.run_dir)
    results, records = {}, {}
    for name, (checkpoint, done) in selected_checkpoints(args.run_dir, history).items():
        test_dir = os.path.join(args.run_dir, "test_" + name.replace(" ", "_"))
        inference = os.path.join(test_dir, "inference", args.test_set)
        if not (args.reuse and os.path.isfile(os.path.join(inference, "results.json"))):
            train_net(args.config_file, ["--eval-only"] + common + [
                "OUTPUT_DIR", test_dir, "MODEL.WEIGHTS", checkpoint, "DATASETS.TEST", f'("{args.test_set}",)'],
                test_dir + ".log")
        with open(os.path.join(inference, "results.json")) as f:
            intervals = json.load(f)["confidence_intervals"]
        results[name] = {"checkpoint": os.path.relpath(checkpoint, REPO_ROOT), "after_iterations": done,
                         "validation": history.get(done, ({}, None))[0],
                         "test": {label: intervals[key] for label, key in REPORTED.items()}}
        records[name] = load_saved_predictions(os.path.join(inference, "instances_predictions.pth"), args.test_set)
    # what each selection gains over the last checkpoint, on the same test images and resamples
    for name in VALIDATION_METRICS:
        differences = paired_differences(records["last"], records[name], **suite_settings(cfg, args.test_set))
        results[name]["gain_over_last"] = {label: differences[key] for label, key in REPORTED.items()}

    write_json(args.output, {
        "machine": machine_facts(), "config": args.config_file, "overrides": common, "iterations": iterations,
        "period": args.period, "validation_set": args.validation_set, "test_set": args.test_set,
        "training_seconds": training_seconds, "validation_history": {str(i): v for i, (v, _) in sorted(history.items())},
        "selections": results})
    print_table(["validation", "penalised IoU", "AP50"],
                [[f"after {i} iterations", f"{v.get('best penalised IoU', float('nan')):.3f}",
                  f"{v.get('best AP50', float('nan')):.1f}"] for i, (v, _) in sorted(history.items())])
    print_table(["selection", "after iterations"] + [f"{label} [95% CI]" for label in REPORTED],
                [[name, result["after_iterations"]] +
                 [fmt_interval(m) for m in result["test"].values()]
                 for name, result in results.items()])
    print_table(["selection - last (paired)"] + [f"{label} [95% CI]" for label in REPORTED],
                [[name] + [fmt_interval(m, signed=True) for m in results[name]["gain_over_last"].values()]
                 for name in VALIDATION_METRICS])
    if training_seconds is not None:
        print(f"training with validation: {training_seconds / 60:.1f} min")


if __name__ == "__main__":
    main()
