#!/usr/bin/env python
"""Where the time goes: torch.profiler tables for the steps ``bench_speed.py`` times.

    .venv/bin/python benchmarks/profile_speed.py [--setting pretrained] [--size 512] [--phase infer]

Runs each step once to warm up, then profiles ``--steps`` steps of ustumor and of
torchvision on the same inputs, and prints the operators by self CPU time, so the two
can be compared line by line. Writes Chrome traces next to ``--output`` when asked.
"""
import argparse
import os
import tempfile

import torch
from torch.profiler import ProfilerActivity, profile

from bench_speed import SETTINGS, build_candidates, sample_records
from detectron2.utils.events import EventStorage


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", default="pretrained", choices=list(SETTINGS))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--phase", default="infer", choices=["train", "infer"])
    parser.add_argument("--same-work", action="store_true", help="as bench_speed.py --same-work")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--trace-dir", help="also write a Chrome trace per model here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp, EventStorage(0):
        candidates, shape = build_candidates(args.setting, args.size, sample_records(tmp, 3), args.same_work)
        for name, step in candidates[args.phase].items():
            step()  # warm-up
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(args.steps):
                    step()
            total = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e6 / args.steps
            print(f"\n=== {name}: {args.phase} {args.setting} {shape}, {total:.3f} s of op time per step ===")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
            if args.trace_dir:
                os.makedirs(args.trace_dir, exist_ok=True)
                prof.export_chrome_trace(os.path.join(args.trace_dir, f"{name}_{args.phase}_{args.setting}.json"))


if __name__ == "__main__":
    main()
