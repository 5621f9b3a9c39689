#!/usr/bin/env python
"""The demo (``make demo``): phantom data -> train from scratch -> evaluate -> AP.

Everything goes under ``--output`` (default ``output/demo``):

- ``datasets/phantom``  the generated BUSI-layout phantom
- ``phantom/``          the run: config, splits, checkpoints, metrics, evaluation,
                        outcome images, Grad-CAM samples and ``report.html``
"""
import argparse
import json
import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO_ROOT, "configs", "phantom", "faster_rcnn_R_50_FPN_cpu_300it.yaml")


def run(command, env):
    print("+ " + " ".join(command), flush=True)
    subprocess.run(command, env=env, check=True, cwd=REPO_ROOT)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="output/demo")
    parser.add_argument("--num-images", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for the training config")
    args = parser.parse_args()

    output = os.path.abspath(args.output)
    env = dict(os.environ, USTUMOR_DATASETS=os.path.join(output, "datasets"))
    phantom = os.path.join(output, "datasets", "phantom")
    if not os.path.isdir(os.path.join(phantom, "Dataset_BUSI_with_GT")):
        run([sys.executable, "tools/make_phantom.py", "--out", phantom,
             "--num-images", str(args.num_images), "--seed", str(args.seed)], env)
    run_dir = os.path.join(output, "phantom")
    common = ["--config-file", CONFIG]
    overrides = ["OUTPUT_DIR", run_dir] + list(args.opts)
    # --resume: a demo interrupted part-way continues instead of starting over
    run([sys.executable, "tools/train_net.py", *common, "--resume", *overrides], env)
    run([sys.executable, "tools/train_net.py", *common, "--eval-only", *overrides,
         "MODEL.WEIGHTS", os.path.join(run_dir, "model_final.pth"),
         "DATASETS.TEST", '("phantom_test",)'], env)

    # the run's report page: outcome images, Grad-CAM samples, curves and plots
    trained = ["--config-file", CONFIG, "--weights", os.path.join(run_dir, "model_final.pth")]
    run([sys.executable, "tools/visualize_predictions.py", *trained, "--dataset", "phantom_test",
         "--output", os.path.join(run_dir, "visualization", "phantom_test"), *overrides], env)
    run([sys.executable, "tools/gradcam.py", *trained, "--dataset", "phantom_test", "--max-images", "8",
         "--output", os.path.join(run_dir, "gradcam", "phantom_test"), *overrides], env)
    run([sys.executable, "tools/report.py", run_dir], env)

    results_file = os.path.join(run_dir, "inference", "phantom_test", "results.json")
    with open(results_file) as f:
        bbox = json.load(f)["bbox"]
    print(f"\nphantom_test: AP {bbox['AP']:.1f}  AP50 {bbox['AP50']:.1f}  AP75 {bbox['AP75']:.1f}")
    print(f"run folder: {run_dir}")
    print(f"report: {os.path.join(run_dir, 'report.html')}")


if __name__ == "__main__":
    main()
