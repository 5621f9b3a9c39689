#!/usr/bin/env python
"""Build a run's HTML report page: config, splits, metrics with CIs, training curves,
evaluation plots, sample TP/FP/FN images (image outcomes) and Grad-CAM samples. Counts are
labelled with their unit: ``lesions TP/FP/FN`` apart from ``images TP/FP/FN/TN``.

    tools/report.py output/busi/faster_rcnn_R_50_FPN_4500it            # -> .../report.html
    tools/report.py output/busi/faster_rcnn_R_50_FPN_4500it output/ucla/faster_rcnn_R_50_FPN_from_busi_3000it \
        --page output/two_stages.html                              # both stages on one page

It reads what train_net.py (training, --eval-only), tools/visualize_predictions.py
(into OUTPUT_DIR/visualization/<dataset>) and tools/gradcam.py (into
OUTPUT_DIR/gradcam/<dataset>) left in OUTPUT_DIR, and names whatever is missing on
the page. Images are embedded, so report.html is one portable file; --link links them
instead.
"""
import argparse
import os

from ustumor.visualization.report import build_report


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dirs", nargs="+", metavar="OUTPUT_DIR", help="one run, or several in order")
    parser.add_argument("--page", help="where to write the page (default, for one run: OUTPUT_DIR/report.html)")
    parser.add_argument("--datasets", nargs="+", help="evaluated datasets to include (default: all)")
    parser.add_argument("--samples", type=int, default=4, help="images per outcome and Grad-CAM images per dataset")
    parser.add_argument("--link", action="store_true", help="link images relatively instead of embedding them")
    return parser.parse_args(argv)


def main(args):
    for output_dir in args.output_dirs:
        if not os.path.isdir(output_dir):
            raise SystemExit(f"{output_dir} is not a folder")
    if len(args.output_dirs) > 1 and not args.page:
        raise SystemExit("several runs: say where the page goes with --page")
    page, missing = build_report(args.output_dirs, args.page, args.datasets, embed=not args.link,
                                 samples=args.samples)
    print(page)
    if missing:
        print("missing from the report: " + ", ".join(missing))
    return page


if __name__ == "__main__":
    main(parse_args())
