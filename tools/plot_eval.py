#!/usr/bin/env python
"""Plot an --eval-only results JSON: FROC with its CI band, PR curve, score-threshold sweep,
image-level ROC and confusion matrix.

    tools/plot_eval.py output/busi/faster_rcnn_R_50_FPN_4500it/inference/busi_test/results.json

Writes PNGs into --output (default: a ``plots`` folder beside the JSON). See
``ustumor/visualization/eval_plots.py`` for how each curve is read from the results.
"""
import argparse
import os

from ustumor.visualization.eval_plots import FIGURES, load_results, plot_results


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", metavar="RESULTS.json")
    parser.add_argument("--output", help="folder for the PNGs (default: <folder of RESULTS.json>/plots)")
    return parser.parse_args(argv)


def main(args):
    results = load_results(args.results)
    output = args.output or os.path.join(os.path.dirname(os.path.abspath(args.results)), "plots")
    written = plot_results(results, output)
    for name in FIGURES:
        print(written[name] if name in written else f"{name}: no data in {args.results}")
    return written


if __name__ == "__main__":
    main(parse_args())
