#!/usr/bin/env python
"""Draw a trained detector's predictions against the truth, one file per image named by outcome.

    tools/visualize_predictions.py --config-file configs/busi/faster_rcnn_R_50_FPN_4500it.yaml \\
        --weights output/busi/faster_rcnn_R_50_FPN_4500it/model_best.pth --dataset busi_test \\
        --output output/busi/faster_rcnn_R_50_FPN_4500it/visualization/busi_test
    tools/visualize_predictions.py ... --only FP FN --worst 20 TEST.PENALIZED_IOU.SCORE_THRESH 0.3
    tools/visualize_predictions.py --config-file ... --dataset busi_test --output ... \
        --predictions output/busi/faster_rcnn_R_50_FPN_4500it/inference/busi_test/instances_predictions.pth

With ``--predictions`` the tool draws what ``train_net.py --eval-only`` saved instead of
running the model again.

Files are ``{TP|FP|FN|TN}_<image>_iou_<x>_score_<y>.png``, the prefix being the image's
outcome in the penalised-IoU matching at TEST.PENALIZED_IOU.{SCORE_THRESH, IOU_THRESH,
TOP_K} (see ``ustumor/visualization/outcome_images.py`` for what x and y are).
``contact_sheet.png`` shows the written images in a grid, worst first. ``outcomes.json``
lists every image's outcome and counts both ways, as ``--eval-only``'s ``results.json``
does for the same weights and settings: ``image_counts`` (images; = ``image_level``'s
tp/fp/fn/tn) and ``lesion_counts`` (lesions found and missed, kept predictions that found
none; = ``lesion_level``'s tp/fp/fn), with ``count_definitions``; ``counts`` is
``image_counts`` in capitals, kept for older readers. Trailing ``KEY VALUE`` pairs override
the config.
"""
import argparse
import json
import os

from detectron2.data import MetadataCatalog
from detectron2.utils.logger import setup_logger
from tqdm import tqdm

import ustumor  # noqa: F401  registers datasets and models
from ustumor.data.fields import frame_in_file
from ustumor.data.image_io import read_dataset_frame
from ustumor.engine.defaults import build_config
from ustumor.evaluation.records import load_saved_predictions
from ustumor.evaluation.suite import COUNT_DEFINITIONS
from ustumor.visualization.drawing import contact_sheet, write_rgb
from ustumor.engine.inference import load_model, predict_records, with_available_device
from ustumor.visualization.outcome_images import (OUTCOMES, image_names, image_outcome, outcome_counts,
                                                  render_outcome, select_outcomes)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--weights", help="trained checkpoint (.pth) to run")
    parser.add_argument("--predictions", metavar="FILE",
                        help="instead of --weights: the predictions --eval-only saved for --dataset "
                             "(OUTPUT_DIR/inference/<dataset>/instances_predictions.pth)")
    parser.add_argument("--dataset", required=True, help="a registered dataset, e.g. busi_test")
    parser.add_argument("--output", required=True, help="folder for the images")
    parser.add_argument("--only", nargs="+", metavar="OUTCOME", help="draw only these outcomes: TP, FP, FN, TN")
    parser.add_argument("--worst", type=int, default=None, metavar="K",
                        help="draw only the K worst images (lowest own penalised IoU first)")
    parser.add_argument("--columns", type=int, default=4, help="contact sheet columns")
    parser.add_argument("--no-contact-sheet", action="store_true")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    if bool(args.weights) == bool(args.predictions):
        parser.error("give either --weights (run the model) or --predictions (draw saved predictions)")
    if args.only:
        # "--only FN MODEL.DEVICE cpu": argparse gives the overrides to --only too
        count = next((i for i, token in enumerate(args.only) if token.lower() not in OUTCOMES), len(args.only))
        args.only, args.opts = [o.lower() for o in args.only[:count]], args.only[count:] + list(args.opts)
        if not args.only:
            parser.error(f"--only needs one or more of {', '.join(o.upper() for o in OUTCOMES)}")
    return args


def main(args):
    weights = ["MODEL.WEIGHTS", args.weights] if args.weights else []
    cfg = build_config(args.config_file, with_available_device(list(args.opts) + weights))
    setup_logger(name="ustumor")
    thresholds = cfg.TEST.PENALIZED_IOU
    if args.predictions:
        records = load_saved_predictions(args.predictions, args.dataset)
    else:
        records = predict_records(cfg, load_model(cfg), args.dataset)
    files = [r.meta["file_name"] for r in records]
    outcomes = [
        image_outcome(file, name, r.pred_boxes, r.pred_scores, r.gt_boxes, thresholds.SCORE_THRESH,
                      thresholds.IOU_THRESH, thresholds.TOP_K, r.pred_classes)
        for r, file, name in zip(records, files, image_names(files, [frame_in_file(r.meta) for r in records]))
    ]
    meta_of = {id(outcome): record.meta for outcome, record in zip(outcomes, records)}
    # worst first everywhere, so that a contact sheet or a report shows the errors first
    ranked = select_outcomes(outcomes, worst=len(outcomes))
    selected = select_outcomes(ranked, only=args.only, worst=args.worst)
    class_names = MetadataCatalog.get(args.dataset).get("thing_classes", None)
    os.makedirs(args.output, exist_ok=True)
    drawn, written = [], {}
    for outcome in tqdm(selected, desc="drawing outcomes", unit="image"):
        picture = render_outcome(read_dataset_frame(meta_of[id(outcome)]), outcome, class_names,
                                 thresholds.SCORE_THRESH)
        file = outcome.file_stem + ".png"
        write_rgb(os.path.join(args.output, file), picture)
        drawn.append(picture)
        written[id(outcome)] = file
    if drawn and not args.no_contact_sheet:
        sheet = contact_sheet(drawn, columns=args.columns)
        write_rgb(os.path.join(args.output, "contact_sheet.png"), sheet)
    counts = outcome_counts(outcomes)
    index = {
        "dataset": args.dataset, "weights": args.weights, "predictions": args.predictions,
        "settings": {"score_thresh": thresholds.SCORE_THRESH, "iou_thresh": thresholds.IOU_THRESH,
                     "top_k": thresholds.TOP_K},
        **counts,
        "count_definitions": {"image_counts": COUNT_DEFINITIONS["images"],
                              "lesion_counts": COUNT_DEFINITIONS["lesions"]},
        "counts": {o.upper(): counts["image_counts"][o] for o in OUTCOMES},
        "images": [{"image": o.file_name, "frame": frame_in_file(meta_of[id(o)]), "outcome": o.outcome,
                    "iou": o.iou, "score": o.score, "quality": o.quality, "lesions": len(o.gt_boxes), "lesions_found": o.match.tp, "false_predictions": o.match.fp,
                    "file": written.get(id(o))} for o in ranked],
    }
    with open(os.path.join(args.output, "outcomes.json"), "w") as f:
        json.dump(index, f, indent=1)
    images, lesions = counts["image_counts"], counts["lesion_counts"]
    print(f"{args.dataset}: images TP/FP/FN/TN {'/'.join(str(images[o]) for o in OUTCOMES)}, "
          f"lesions TP/FP/FN {'/'.join(str(lesions[o]) for o in ('tp', 'fp', 'fn'))}; "
          f"{len(drawn)} images written to {args.output}")
    return index


if __name__ == "__main__":
    main(parse_args())
