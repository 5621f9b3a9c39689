#!/usr/bin/env python
"""Plot training curves from one or more runs' metrics.json.

    tools/plot_metrics.py output/busi/faster_rcnn_R_50_FPN_4500it
    tools/plot_metrics.py output/busi/run output/busi_ucla/stage2 --sequential --output figures/

Writes PNGs (loss components, total loss, learning rate, validation loss when logged,
penalised IoU and AP with the best checkpoint marked) into --output (default
``<first run>/plots``). Several runs are overlaid, or with --sequential placed one after
another on the iteration axis (a fine-tuning stage after its pre-training stage).
"""
import argparse
import os

from ustumor.visualization.metric_plots import load_run, plot_runs


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="OUTPUT_DIR", help="training runs (folders with metrics.json)")
    parser.add_argument("--names", nargs="+", help="legend names of the runs (default: folder names)")
    parser.add_argument("--sequential", action="store_true", help="runs one after another instead of overlaid")
    parser.add_argument("--output", help="folder for the PNGs (default: <first run>/plots)")
    return parser.parse_args(argv)


def main(args):
    names = args.names or [None] * len(args.runs)
    if len(names) != len(args.runs):
        raise SystemExit(f"--names has {len(names)} names for {len(args.runs)} runs")
    runs = [load_run(path, name) for path, name in zip(args.runs, names)]
    output = args.output or os.path.join(runs[0].output_dir, "plots")
    written = plot_runs(runs, output, sequential=args.sequential)
    for path in written.values():
        print(path)
    return written


if __name__ == "__main__":
    main(parse_args())
