#!/usr/bin/env python
"""Training throughput on 1 and 2 CPU processes (PyTorch DDP over gloo), per process and in all.

    .venv/bin/python benchmarks/bench_distributed.py [--iterations 40] [--output benchmarks/results/distributed.json]

Runs ``tools/train_net.py`` on the phantom with the 1/8-width R50-FPN of the tests
(``tests/phantom_model.py``), 128-160 px, one image per process per step, one thread per
process, no evaluation: ``--num-gpus 1`` (batch 1), then ``--num-gpus 2 MODEL.DEVICE cpu``
(batch 2). Reports Detectron2's "Overall training speed" (s/iter, warm-up excluded),
images/s in all and per process. On a 2-core machine shared with other work, two processes
cannot scale: this measures the cost of DDP's gradient all-reduce, not a speed-up.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

from common import REPO_ROOT, machine_facts, print_table, write_json

sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))
from phantom_model import CONFIG, SMALL_MODEL  # noqa: E402
from ustumor.synthetic import write_phantom_dataset  # noqa: E402

SPEED = re.compile(r"Overall training speed: (\d+) iterations in \S+ \(([0-9.]+) s / it\)")


def run(processes, iterations, datasets, output_dir):
    env = dict(os.environ, USTUMOR_DATASETS=datasets, PYTHONPATH=REPO_ROOT, OMP_NUM_THREADS="1")
    command = [sys.executable, os.path.join(REPO_ROOT, "tools", "train_net.py"), "--config-file", CONFIG,
               "--num-gpus", str(processes), "--dist-url", "auto", "OUTPUT_DIR", output_dir, *SMALL_MODEL,
               "SOLVER.IMS_PER_BATCH", str(processes), "SOLVER.MAX_ITER", str(iterations),
               "SOLVER.CHECKPOINT_PERIOD", str(10 * iterations), "DATASETS.TEST", "()", "MODEL.DEVICE", "cpu"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO_ROOT)
    log = result.stdout + result.stderr
    if result.returncode != 0:
        raise SystemExit(log[-3000:])
    timed, seconds = SPEED.search(log).groups()
    seconds = float(seconds)
    return {"processes": processes, "timed_iterations": int(timed), "s_per_iter": seconds,
            "images_per_s": processes / seconds, "images_per_s_per_process": 1 / seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--output", default=os.path.join(REPO_ROOT, "benchmarks", "results", "distributed.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ustumor_bench_ddp_") as root:
        write_phantom_dataset(os.path.join(root, "phantom"), num_images=30, seed=0, image_size=(128, 160))
        results = [run(n, args.iterations, root, os.path.join(root, f"run{n}")) for n in (1, 2)]
    facts = dict(machine_facts(), threads_per_process=1)
    print_table(["processes", "s/iter", "images/s", "images/s per process"],
                [[r["processes"], f"{r['s_per_iter']:.3f}", f"{r['images_per_s']:.2f}",
                  f"{r['images_per_s_per_process']:.2f}"] for r in results])
    write_json(args.output, {"machine": facts, "iterations": args.iterations, "results": results})


if __name__ == "__main__":
    main()
