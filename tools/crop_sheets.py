#!/usr/bin/env python
"""Contact sheets of the scan-window crops with their boxes, one PNG per patient.

    tools/crop_sheets.py --dataset ucla_all --output output/crop_sheets
    tools/crop_sheets.py --config-file configs/ucla/faster_rcnn_R_50_FPN_from_busi_3000it.yaml --dataset ucla_train \\
        --output output/crop_sheets --max-per-patient 24

Each tile is one frame after the crop the mapper would apply (DICOM ultrasound
region, else the image-based crop; cached), with the dataset's boxes moved into
the crop. A red frame marks a crop failure (full-frame fallback), an orange box
one that the crop cuts. Look for GUI text left in, scan cut off, boxes off the
lesion. Datasets without ``patient_id`` get one sheet per 48 images.
"""
import argparse
import os
import re
import sys
from collections import Counter, defaultdict

import cv2
import numpy as np
from detectron2.data import DatasetCatalog
from detectron2.structures import BoxMode

import ustumor  # noqa: F401  registers the datasets
from ustumor.data.fields import CLIP_ID, DICOM_FRAME, FRAME_ID, PATIENT_ID
from ustumor.data.image_io import read_dataset_frame
from ustumor.data.preprocessing.crop_cache import CropCache
from ustumor.engine.defaults import build_config

GREEN, ORANGE, RED, YELLOW = (0, 220, 0), (0, 165, 255), (0, 0, 255), (0, 255, 255)


def frame_boxes(record):
    return [BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS) for a in record.get("annotations", [])]


def render_tile(record, crop_cache, tile_w, tile_h):
    """The crop of one frame, letterboxed into tile_w x tile_h, boxes drawn; and its crop entry."""
    grey = read_dataset_frame(record)
    entry = crop_cache.crop_entry(record["file_name"], grey, record.get(DICOM_FRAME))
    x0, y0, x1, y1 = entry.box
    crop = grey[y0:y1, x0:x1]
    scale = min(tile_w / crop.shape[1], (tile_h - 14) / crop.shape[0])
    resized = cv2.resize(crop, (max(1, int(crop.shape[1] * scale)), max(1, int(crop.shape[0] * scale))),
                         interpolation=cv2.INTER_AREA)
    tile = np.zeros((tile_h, tile_w, 3), np.uint8)
    tile[:resized.shape[0], :resized.shape[1]] = resized[:, :, None]
    cut = 0
    for bx0, by0, bx1, by1 in frame_boxes(record):
        inside = bx0 >= x0 and by0 >= y0 and bx1 <= x1 and by1 <= y1
        cut += not inside
        corners = [int(round((v - o) * scale)) for v, o in ((bx0, x0), (by0, y0), (bx1, x0), (by1, y0))]
        cv2.rectangle(tile, tuple(corners[:2]), (corners[2] - 1, corners[3] - 1), GREEN if inside else ORANGE, 1)
    label = f"{str(record[CLIP_ID])[:14]} f{record.get(FRAME_ID, '')}" if CLIP_ID in record \
        else os.path.basename(record["file_name"])[:24]
    cv2.putText(tile, label, (2, tile_h - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.33, YELLOW, 1, cv2.LINE_AA)
    if not entry.ok:
        cv2.rectangle(tile, (0, 0), (tile_w - 1, tile_h - 1), RED, 2)
    return tile, entry, cut


def evenly(items, count):
    if len(items) <= count:
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, count).round()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default="")
    parser.add_argument("--dataset", required=True, help="registered dataset, e.g. ucla_all")
    parser.add_argument("--output", required=True, help="folder for <patient>.png sheets")
    parser.add_argument("--max-per-patient", type=int, default=48, help="frames per sheet, spread over the clips")
    parser.add_argument("--columns", type=int, default=8)
    parser.add_argument("--tile-width", type=int, default=200)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)

    build_config(args.config_file, args.opts)
    dicts = DatasetCatalog.get(args.dataset)
    groups = defaultdict(list)
    for index, record in enumerate(dicts):
        groups[record.get(PATIENT_ID, f"images_{index // args.max_per_patient:04d}")].append(record)
    os.makedirs(args.output, exist_ok=True)
    tile_w = args.tile_width
    tile_h = int(tile_w * 0.75) + 14
    crop_cache = CropCache()
    sources, cut_boxes, failures = Counter(), 0, []
    for patient in sorted(groups):
        records = evenly(sorted(groups[patient], key=lambda r: (str(r.get(CLIP_ID, "")), r.get(FRAME_ID, 0),
                                                                 r["file_name"])), args.max_per_patient)
        tiles = []
        for record in records:
            tile, entry, cut = render_tile(record, crop_cache, tile_w, tile_h)
            tiles.append(tile)
            sources[entry.source] += 1
            cut_boxes += cut
            if not entry.ok:
                failures.append(record["file_name"])
        columns = min(args.columns, len(tiles))
        rows = [tiles[i:i + columns] for i in range(0, len(tiles), columns)]
        sheet = np.concatenate([np.concatenate(row + [np.zeros_like(tiles[0])] * (columns - len(row)), axis=1)
                                for row in rows], axis=0)
        cv2.imwrite(os.path.join(args.output, re.sub(r"[^A-Za-z0-9._-]+", "_", str(patient)) + ".png"), sheet)
    print(f"{len(groups)} sheet(s) in {args.output}; crops by source: {dict(sources)}; "
          f"{len(failures)} crop failure(s), {cut_boxes} box(es) cut by the crop")
    for path in failures[:20]:
        print(f"  crop failed: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
