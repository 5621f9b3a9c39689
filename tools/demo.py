#!/usr/bin/env python
"""The demo (``make demo``): the whole two-stage workflow on synthetic data, on a CPU.

1. Stage 1, BUSI-like: a phantom in the layout of the BUSI release; Faster R-CNN R50-FPN
   trained from random weights, evaluated on ``phantom_val`` periodically, the checkpoint
   with the best penalised IoU kept as ``model_best.pth``.
2. Stage 2, hospital: a synthetic hospital export (LabelMe clips of 600x800 scanner
   screenshots, some clips as DICOM cines) converted by ``tools/prepare_hospital.py``;
   stage 1's ``model_best.pth`` fine-tuned on ``ucla_train`` with the scan window
   cropped out, selected on ``ucla_val`` the same way.
3. Each stage's ``model_best.pth`` evaluated on its test split (frames, and for the
   hospital also patients and clips), outcome pictures and Grad-CAM maps drawn, and one
   report page holding both stages.

Everything goes under ``--output`` (default ``output/demo``):

- ``datasets/phantom``, ``datasets/UCLA``   the generated data ($USTUMOR_DATASETS)
- ``phantom/``, ``hospital/``                each stage's run: config, splits, checkpoints,
                                             metrics, evaluation, pictures
- ``report.html``                            both stages on one page

Running it again resumes finished or interrupted runs, so it only re-evaluates.
"""
import argparse
import json
import os
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = {  # name: (config, test split)
    "phantom": (os.path.join(REPO_ROOT, "configs", "phantom", "faster_rcnn_R_50_FPN_cpu_300it.yaml"), "phantom_test"),
    "hospital": (os.path.join(REPO_ROOT, "configs", "ucla", "faster_rcnn_R_50_FPN_from_phantom_cpu_60it.yaml"),
                 "ucla_test"),
}


def run(command, env):
    print("+ " + " ".join(command), flush=True)
    subprocess.run(command, env=env, check=True, cwd=REPO_ROOT)


def tool(name):
    return [sys.executable, os.path.join("tools", name)]


def train_and_explain(stage, output, env, overrides):
    """Train (or resume) one stage, evaluate its model_best.pth on the test split, draw it."""
    config, test_set = STAGES[stage]
    run_dir = os.path.join(output, stage)
    common = ["--config-file", config]
    settings = ["OUTPUT_DIR", run_dir] + overrides
    run(tool("train_net.py") + common + ["--resume"] + settings, env)
    best = os.path.join(run_dir, "model_best.pth")
    run(tool("train_net.py") + common + ["--eval-only"] + settings
        + ["MODEL.WEIGHTS", best, "DATASETS.TEST", f'("{test_set}",)'], env)
    # the 16 worst images are drawn (the report shows samples) from the predictions the
    # evaluation saved, rather than running the model again; outcomes.json lists every image
    predictions = os.path.join(run_dir, "inference", test_set, "instances_predictions.pth")
    run(tool("visualize_predictions.py") + common + ["--predictions", predictions, "--dataset", test_set]
        + ["--worst", "16", "--output", os.path.join(run_dir, "visualization", test_set)] + settings, env)
    run(tool("gradcam.py") + common + ["--weights", best, "--dataset", test_set, "--max-images", "4"]
        + ["--output", os.path.join(run_dir, "gradcam", test_set)] + settings, env)
    with open(os.path.join(run_dir, "inference", test_set, "results.json")) as f:
        results = json.load(f)
    with open(os.path.join(run_dir, "model_best.json")) as f:
        kept = json.load(f)
    return run_dir, test_set, results, kept


def headline(stage, test_set, results, kept):
    bbox, piou = results["bbox"], results["penalized_iou"]
    lines = [f"{stage} stage, {test_set} (model_best.pth: iteration {kept['iteration']}, "
             f"{kept['metric']} {kept['value']:.3f} on validation):",
             f"  AP {bbox['AP']:.1f}  AP50 {bbox['AP50']:.1f}  AP75 {bbox['AP75']:.1f}  "
             f"penalised IoU {piou['piou']:.3f}"]
    for level in ("image_level", "patient_level", "clip_level"):
        if level in results:
            values = results[level]
            lines.append(f"  {level.replace('_', ' ')}: sensitivity {values['sensitivity']:.2f} "
                         f"({values['tp']}/{values['num_positive']}), specificity {values['specificity']:.2f} "
                         f"({values['tn']}/{values['num_negative']})")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="output/demo")
    parser.add_argument("--num-images", type=int, default=300, help="phantom images (stage 1)")
    parser.add_argument("--num-patients", type=int, default=30, help="synthetic hospital patients (stage 2)")
    parser.add_argument("--frames-per-clip", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for both stages' configs")
    args = parser.parse_args()
    start = time.monotonic()

    output = os.path.abspath(args.output)
    datasets = os.path.join(output, "datasets")
    env = dict(os.environ, USTUMOR_DATASETS=datasets)
    phantom = os.path.join(datasets, "phantom")
    if not os.path.isdir(os.path.join(phantom, "Dataset_BUSI_with_GT")):
        run(tool("make_phantom.py") + ["--out", phantom, "--num-images", str(args.num_images),
                                       "--seed", str(args.seed)], env)
    hospital = os.path.join(datasets, "UCLA")
    if not os.path.isfile(os.path.join(hospital, "annotations.csv")):
        run(tool("prepare_hospital.py") + ["--synthetic", hospital, "--num-patients", str(args.num_patients),
                                           "--frames-per-clip", str(args.frames_per_clip), "--dicom-every", "3",
                                           "--seed", str(args.seed)], env)

    phantom_run = train_and_explain("phantom", output, env, list(args.opts))
    hospital_run = train_and_explain(
        "hospital", output, env, ["MODEL.WEIGHTS", os.path.join(phantom_run[0], "model_best.pth")] + list(args.opts))
    page = os.path.join(output, "report.html")
    run(tool("report.py") + [phantom_run[0], hospital_run[0], "--page", page], env)

    print()
    for stage, (_, test_set, results, kept) in zip(STAGES, (phantom_run, hospital_run)):
        print(headline(stage, test_set, results, kept))
    print(f"report: {page}")
    minutes, seconds = divmod(int(round(time.monotonic() - start)), 60)
    print(f"demo wall time: {minutes} min {seconds:02d} s")


if __name__ == "__main__":
    main()
