#!/usr/bin/env python
"""Grad-CAM of a trained ustumor detector: which pixels raised each detection's class score.

    tools/gradcam.py --config-file configs/busi/faster_rcnn_R_50_FPN_4500it.yaml \\
        --weights output/busi/faster_rcnn_R_50_FPN_4500it/model_best.pth \\
        --dataset busi_test --output output/busi/faster_rcnn_R_50_FPN_4500it/gradcam/busi_test
    tools/gradcam.py ... --input scan1.png scan2.png --output cams/ --layer p3 --method gradcam++ MODEL.DEVICE cpu

Each kept detection (score >= TEST.PENALIZED_IOU.SCORE_THRESH, the TOP_K highest; or
--instance K alone) gets ``<image>_det<K>_<layer>_<method>.png``: the map over the
image, the box and score, the truth when the dataset has it. An image without a
detection gets ``<image>_no_detection.png`` with a note. ``gradcam.json`` indexes them,
with each map's share of heat inside its box.

Methods (through pytorch-grad-cam): hirescam (default), gradcam, gradcam++; see
benchmarks/README.md ("Grad-CAM: which method") for why HiResCAM is the default for detections.
Layers: res5 (default; the last block of the backbone), res4, res3, res2, the FPN levels
p2..p5, or any module path of the model. Trailing ``KEY VALUE`` pairs override the config.
"""
import argparse
import json
import logging
import os

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.logger import setup_logger
from tqdm import tqdm

import ustumor  # noqa: F401  registers datasets and models
from ustumor.config import RENAMED_KEYS, SPLIT_KEYS, add_ustumor_config
from ustumor.data.fields import describe_frame, frame_in_file
from ustumor.data.image_io import read_dataset_frame
from ustumor.data.mapper import UltrasoundDatasetMapper
from ustumor.engine.defaults import build_config
from ustumor.engine.inference import load_model, with_available_device
from ustumor.evaluation.records import ground_truth_of
from ustumor.interpretation.gradcam import CAM_METHODS, DEFAULT_METHOD, LAYER_CHOICES, DetectionGradCAM
from ustumor.interpretation.overlay import cam_statistics, render_cam, render_no_detection
from ustumor.visualization.drawing import write_rgb
from ustumor.visualization.outcome_images import image_names

logger = logging.getLogger("ustumor.gradcam")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--weights", required=True, help="trained checkpoint (.pth)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", metavar="IMG", help="image files")
    source.add_argument("--dataset", help="a registered dataset, e.g. busi_test")
    parser.add_argument("--output", required=True, help="folder for the pictures and gradcam.json")
    parser.add_argument("--layer", default="res5", help=f"one of {', '.join(LAYER_CHOICES)} or a module path")
    parser.add_argument("--instance", type=int, default=None, metavar="K",
                        help="explain only the K-th kept detection (0: the highest score)")
    parser.add_argument("--method", default=DEFAULT_METHOD, choices=list(CAM_METHODS),
                        help="hirescam (default): instance-specific; gradcam, gradcam++: channel-averaged "
                             "gradients, which for a single detection mostly paint the surrounding tissue")
    parser.add_argument("--max-images", type=int, default=None, help="stop after this many images")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    if args.input:
        args.input, overrides = split_trailing_overrides(args.input)
        args.opts = overrides + list(args.opts)
    return args


def split_trailing_overrides(tokens):
    """``--input a.png b.png MODEL.DEVICE cpu``: argparse gives all four to --input; the
    overrides start at the first token that is a config key."""
    keys = set()

    def collect(node, prefix=""):
        for key, value in node.items():
            keys.add(prefix + key)
            if isinstance(value, dict):
                collect(value, prefix + key + ".")

    cfg = get_cfg()
    add_ustumor_config(cfg)
    collect(cfg)
    keys.update(RENAMED_KEYS)
    keys.update(SPLIT_KEYS)
    for index, token in enumerate(tokens):
        if token in keys and not os.path.isfile(token):
            return tokens[:index], list(tokens[index:])
    return tokens, []


def image_dicts(args):
    if args.dataset:
        return DatasetCatalog.get(args.dataset)
    missing = [path for path in args.input if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(f"input images not found: {missing}")
    return [{"file_name": path, "image_id": path} for path in args.input]


def main(args):
    cfg = build_config(args.config_file, with_available_device(list(args.opts) + ["MODEL.WEIGHTS", args.weights]))
    setup_logger(name="ustumor")
    model = load_model(cfg)
    thresholds = cfg.TEST.PENALIZED_IOU
    explainer = DetectionGradCAM(model, layer=args.layer, method=args.method, score_thresh=thresholds.SCORE_THRESH,
                                 top_k=thresholds.TOP_K)
    class_names = MetadataCatalog.get(args.dataset).get("thing_classes", None) if args.dataset else None
    mapper = UltrasoundDatasetMapper(cfg, is_train=False)
    dicts = image_dicts(args)[: args.max_images]
    names = image_names([d["file_name"] for d in dicts], [frame_in_file(d) for d in dicts])
    os.makedirs(args.output, exist_ok=True)
    entries = []
    for dataset_dict, name in tqdm(list(zip(dicts, names)), desc="Grad-CAM", unit="image"):
        image = read_dataset_frame(dataset_dict)
        truth = ground_truth_of(dataset_dict)[0] if "annotations" in dataset_dict else ()
        detections, cams = explainer.explain(mapper(dataset_dict), instance=args.instance)
        if not len(detections["scores"]) or (args.instance is not None and not cams):
            file = f"{name}_no_detection.png"
            write_rgb(os.path.join(args.output, file), render_no_detection(image, explainer.score_thresh, truth))
            logger.info("%s: no detection with score >= %.2f%s", describe_frame(dataset_dict), explainer.score_thresh,
                        "" if args.instance is None else f" at index {args.instance}")
            entries.append({"image": dataset_dict["file_name"], "frame": frame_in_file(dataset_dict), "file": file,
                            "detection": None, "note": "no detection"})
            continue
        for cam in cams:
            file = f"{name}_det{cam.index}_{args.layer}_{args.method}.png"
            write_rgb(os.path.join(args.output, file), render_cam(image, cam, truth, class_names))
            if cam.note:
                logger.warning("%s detection %d: %s", describe_frame(dataset_dict), cam.index, cam.note)
            entries.append({"image": dataset_dict["file_name"], "frame": frame_in_file(dataset_dict), "file": file,
                            "detection": cam.index, "score": cam.score, "label": cam.label, "box": [float(v) for v in cam.box],
                            **cam_statistics(cam), "note": cam.note})
    index = {"layer": args.layer, "method": args.method, "weights": args.weights,
             "score_thresh": explainer.score_thresh, "top_k": explainer.top_k, "images": entries}
    with open(os.path.join(args.output, "gradcam.json"), "w") as f:
        json.dump(index, f, indent=1)
    explained = sum(1 for e in entries if e.get("heat_in_box") is not None)
    print(f"{len(dicts)} images, {explained} maps written to {args.output}")
    return index


if __name__ == "__main__":
    main(parse_args())
