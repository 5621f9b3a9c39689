#!/usr/bin/env python
"""Grey-level mean and std of a training split, for ``INPUT.NORMALIZATION: ultrasound``.

    tools/compute_pixel_stats.py --config-file configs/busi/faster_rcnn_R_50_FPN_4500it.yaml \
        --output datasets/busi_pixel_stats.json

Reads every image of ``DATASETS.TRAIN`` through the same grey read and scan-window
crop as training, and writes ``{"mean", "std", "pixels", "datasets"}``. Then set
``INPUT.PIXEL_STATS_FILE`` to the file.
"""
import argparse
import json
import os

from detectron2.data import DatasetCatalog
from tqdm import tqdm

import ustumor  # noqa: F401  registers the datasets
from ustumor.data.mapper import UltrasoundDatasetMapper
from ustumor.data.preprocessing.normalization import compute_pixel_stats
from ustumor.engine.defaults import build_config


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--output", required=True, help="JSON file to write")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args()

    # the stats file does not exist yet: read the data without normalising
    cfg = build_config(args.config_file, list(args.opts) + ["INPUT.NORMALIZATION", "imagenet"])
    mapper = UltrasoundDatasetMapper(cfg, is_train=False)
    dicts = [d for name in cfg.DATASETS.TRAIN for d in DatasetCatalog.get(name)]
    images = (mapper.load_grey(d)[0] for d in tqdm(dicts, desc="pixel stats"))
    stats = compute_pixel_stats(images)
    stats["datasets"] = list(cfg.DATASETS.TRAIN)
    stats["crop_ultrasound"] = bool(cfg.INPUT.CROP_ULTRASOUND)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(stats, f, indent=1)
    print(f"mean {stats['mean']:.2f}  std {stats['std']:.2f}  over {len(dicts)} images -> {args.output}")
    print(f"use: INPUT.NORMALIZATION ultrasound INPUT.PIXEL_STATS_FILE {args.output}")


if __name__ == "__main__":
    main()
