#!/usr/bin/env python
"""Print the near-duplicate groups behind a dataset's split and draw a contact sheet.

    tools/show_split_groups.py --config-file configs/busi/faster_rcnn_R_50_FPN_4500it.yaml \
        --dataset busi --output output/busi_groups.png

Each row of the sheet is one group of two or more images (with its split), so
duplicates, caliper copies and cross-class copies can be checked by eye.
"""
import argparse
import collections
import os

import cv2
import numpy as np
from detectron2.data import DatasetCatalog

import ustumor  # noqa: F401  registers the datasets
from ustumor.data.image_io import read_dataset_frame
from ustumor.data.splits import split_of, split_prefixes
from ustumor.engine.defaults import build_config

TILE = 128


def contact_sheet(rows, max_rows):
    """One row of labelled thumbnails per group."""
    width = max(len(r) for r in rows) * TILE
    canvas = []
    for row in rows[:max_rows]:
        tiles = []
        for record, label in row:
            tile = cv2.resize(read_dataset_frame(record), (TILE, TILE), interpolation=cv2.INTER_AREA)
            tile = cv2.cvtColor(tile, cv2.COLOR_GRAY2BGR)
            cv2.putText(tile, label, (3, TILE - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 255, 255), 1, cv2.LINE_AA)
            tiles.append(tile)
        line = np.zeros((TILE, width, 3), np.uint8)
        line[:, : len(tiles) * TILE] = np.concatenate(tiles, axis=1)
        canvas.append(line)
    return np.concatenate(canvas, axis=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default="")
    parser.add_argument("--dataset", default="busi", help="split prefix, e.g. busi or phantom")
    parser.add_argument("--output", required=True, help="PNG contact sheet to write")
    parser.add_argument("--max-rows", type=int, default=60)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args()

    build_config(args.config_file, args.opts)
    split = split_of(args.dataset)
    if split is None:
        raise SystemExit(f"no split for dataset {args.dataset!r}; registered: {split_prefixes()}")
    records = {d["image_id"]: d for d in DatasetCatalog.get(f"{args.dataset}_all")}
    members = collections.defaultdict(list)
    for image_id, group in split["group"].items():
        members[group].append(image_id)
    groups = sorted((sorted(m) for m in members.values() if len(m) > 1), key=lambda m: (-len(m), m))
    print(f"{len(groups)} groups of near-duplicates ({sum(len(g) for g in groups)} images, "
          f"{len(split.get('near_duplicate_pairs', []))} pairs); split counts {split.get('counts')}")
    for number, group in enumerate(groups):
        classes = sorted({image_id.split("/")[0] for image_id in group})
        flag = "  <- filed under several classes" if len(classes) > 1 else ""
        print(f"group {number:3d} [{split['assignment'][group[0]]}]: {', '.join(group)}{flag}")
    if groups:
        rows = [[(records[i], f"{i.split('/')[-1]} [{split['assignment'][i]}]") for i in g] for g in groups]
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        cv2.imwrite(args.output, contact_sheet(rows, args.max_rows))
        print(f"contact sheet: {args.output}")


if __name__ == "__main__":
    main()
