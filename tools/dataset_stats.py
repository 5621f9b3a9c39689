#!/usr/bin/env python
"""Counts, box-size histograms and crop failures of registered datasets.

    tools/dataset_stats.py ucla_train ucla_val ucla_test --output output/stats/ucla --crop
    tools/dataset_stats.py busi_train busi_val busi_test --output output/stats/busi
    tools/dataset_stats.py --config-file configs/busi_ucla/faster_rcnn_R_50_FPN_joint_6000it.yaml busi_train ucla_train \
        --opts DATASETS.HOSPITAL.DROP_UNANNOTATED_IN_ANNOTATED_CLIPS False

Prints one table row per dataset (images, annotated, negatives, boxes, boxes per
class, patients, clips, tiny boxes, crop failures) and frames per patient and per
clip, and writes box width, height and area histograms (in original-frame pixels)
as PNG plus ``stats.json`` (with the counts of every patient and clip).
A box is tiny when its shorter side is below ``--tiny`` pixels: it may be an
annotation slip, and after resizing it falls below the smallest anchor.
``--crop`` (on by default when the config sets INPUT.CROP_ULTRASOUND) runs the
scan-window crop the mapper uses (cached) and counts its failures and the boxes it cuts.
"""
import argparse
import json
import os
import sys
from collections import Counter

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.structures import BoxMode  # noqa: E402
from tabulate import tabulate  # noqa: E402
from tqdm import tqdm  # noqa: E402

import ustumor  # noqa: F401,E402  registers the datasets
from ustumor.data.datasets import hospital  # noqa: E402
from ustumor.data.fields import CLIP_ID, DICOM_FRAME, FRAME_ID, PATIENT_ID  # noqa: E402
from ustumor.data.preprocessing.crop_cache import CropCache  # noqa: E402
from ustumor.engine.defaults import build_config  # noqa: E402


def format_box(box):
    return "[" + ", ".join(f"{v:.1f}".rstrip("0").rstrip(".") for v in box) + "]"


def dataset_stats(name, tiny, crop_cache=None):
    """Counts, box sizes, tiny boxes and (with ``crop_cache``) crop results of one dataset."""
    dicts = DatasetCatalog.get(name)
    classes = MetadataCatalog.get(name).get("thing_classes", [])
    per_class, widths, heights, tiny_boxes = Counter(), [], [], []
    per_patient, per_clip = {}, {}
    crop_sources, crop_failures, cut_boxes = Counter(), [], []
    for record in tqdm(dicts, desc=name, unit="img", disable=crop_cache is None):
        boxes = [BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS)
                 for a in record.get("annotations", [])]
        if PATIENT_ID in record:
            patient = per_patient.setdefault(record[PATIENT_ID], Counter())
            clip = per_clip.setdefault(str(record.get(CLIP_ID)), Counter())
            for counts in (patient, clip):
                counts.update(frames=1, annotated=int(bool(boxes)), boxes=len(boxes))
        for annotation, (x0, y0, x1, y1) in zip(record.get("annotations", []), boxes):
            category = annotation.get("category_id", 0)
            per_class[classes[category] if category < len(classes) else str(category)] += 1
            widths.append(x1 - x0)
            heights.append(y1 - y0)
            if min(x1 - x0, y1 - y0) < tiny:
                tiny_boxes.append({"file": record["file_name"], FRAME_ID: record.get(FRAME_ID),
                                   "csv_row": annotation.get("csv_row"), "box": [x0, y0, x1, y1]})
        if crop_cache is not None:
            entry = crop_cache.crop_entry(record["file_name"], None, record.get(DICOM_FRAME))
            crop_sources[entry.source] += 1
            if not entry.ok:
                crop_failures.append(record["file_name"])
            cx0, cy0, cx1, cy1 = entry.box
            for x0, y0, x1, y1 in boxes:
                if x0 < cx0 or y0 < cy0 or x1 > cx1 or y1 > cy1:
                    cut_boxes.append({"file": record["file_name"], "box": [x0, y0, x1, y1], "crop": list(entry.box)})
    stats = {
        "images": len(dicts),
        "annotated": sum(1 for d in dicts if d.get("annotations")),
        "negatives": sum(1 for d in dicts if not d.get("annotations")),
        "boxes": len(widths),
        "boxes_per_class": dict(per_class),
        "patients": len({d[PATIENT_ID] for d in dicts if PATIENT_ID in d}) or None,
        "clips": len({(d.get(PATIENT_ID), d[CLIP_ID]) for d in dicts if CLIP_ID in d}) or None,
        "per_patient": {k: dict(v) for k, v in per_patient.items()},
        "per_clip": {k: dict(v) for k, v in per_clip.items()},
        "tiny_boxes": tiny_boxes,
        "widths": widths,
        "heights": heights,
    }
    if crop_cache is not None:
        stats.update(crop_sources=dict(crop_sources), crop_failures=crop_failures, boxes_cut_by_crop=cut_boxes)
    report = hospital.hospital_report(MetadataCatalog.get(name).get("split_prefix", None))
    if report is not None:
        stats["load_report"] = report
    return stats


def plot_histograms(all_stats, tiny, output):
    """box_width.png, box_height.png, box_area.png: one step histogram per dataset."""
    paths = []
    for key, label, threshold in (("width", "box width (px)", tiny), ("height", "box height (px)", tiny),
                                  ("area", "box area (px², log scale)", tiny * tiny)):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        values = {n: np.asarray(s["widths"]) * np.asarray(s["heights"]) if key == "area" else np.asarray(s[key + "s"])
                  for n, s in all_stats.items()}
        pooled = np.concatenate([v for v in values.values() if len(v)] or [np.zeros(0)])
        if len(pooled):
            if key == "area":
                bins = np.logspace(np.log10(max(pooled.min(), 1.0)), np.log10(max(pooled.max(), 2.0)), 40)
                ax.set_xscale("log")
            else:
                bins = np.linspace(0, pooled.max() * 1.05 + 1, 40)
            for name, v in values.items():
                if len(v):
                    ax.hist(v, bins=bins, histtype="step", linewidth=1.5, label=f"{name} ({len(v)})")
        ax.axvline(threshold, color="red", linestyle="--", linewidth=1, label=f"tiny (< {threshold:g})")
        ax.set_xlabel(label)
        ax.set_ylabel("boxes")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(output, f"box_{key}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="+", metavar="NAME", help="registered datasets, e.g. ucla_train ucla_val")
    parser.add_argument("--config-file", default="")
    parser.add_argument("--output", default="output/dataset_stats", help="folder for the plots and stats.json")
    parser.add_argument("--tiny", type=float, default=10.0, help="flag boxes whose shorter side is below this (px)")
    parser.add_argument("--crop", action="store_true", help="check the scan-window crop of every image")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides (last)")
    args = parser.parse_args(argv)

    cfg = build_config(args.config_file, args.opts)
    unknown = [n for n in args.datasets if n not in DatasetCatalog.list()]
    if unknown:
        print(f"unknown dataset(s) {unknown}; registered: {', '.join(sorted(DatasetCatalog.list()))}", file=sys.stderr)
        return 1
    check_crop = args.crop or cfg.INPUT.CROP_ULTRASOUND
    crop_cache = CropCache() if check_crop else None
    all_stats = {name: dataset_stats(name, args.tiny, crop_cache) for name in args.datasets}

    headers = ["dataset", "images", "annotated", "negatives", "boxes", "per class", "patients", "clips",
               f"tiny (<{args.tiny:g}px)"] + (["crop failures", "boxes cut"] if check_crop else [])
    table = []
    for name, s in all_stats.items():
        row = [name, s["images"], s["annotated"], s["negatives"], s["boxes"],
               ", ".join(f"{k}: {v}" for k, v in sorted(s["boxes_per_class"].items())),
               s["patients"] or "-", s["clips"] or "-", len(s["tiny_boxes"])]
        if check_crop:
            row += [len(s["crop_failures"]), len(s["boxes_cut_by_crop"])]
        table.append(row)
    print(tabulate(table, headers=headers))
    reported = set()
    for name, s in all_stats.items():
        for unit in ("patient", "clip"):
            frames = [c["frames"] for c in s[f"per_{unit}"].values()]
            if frames:
                print(f"{name}: frames per {unit}: median {np.median(frames):g} "
                      f"(min {min(frames)}, max {max(frames)}); "
                      f"{sum(1 for c in s[f'per_{unit}'].values() if not c['boxes'])} {unit}(s) without boxes")
        prefix = MetadataCatalog.get(name).get("split_prefix", None)
        if "load_report" in s and prefix not in reported:  # one CSV behind all splits of a prefix
            reported.add(prefix)
            report = s["load_report"]
            print(f"{prefix} CSV: {report['rows']} rows, skipped {sum(report['skipped_rows'].values())} "
                  f"{report['skipped_rows'] or ''}, dropped {report['dropped_unannotated_in_annotated_clips']} "
                  "unannotated frames of annotated clips")
        for box in s["tiny_boxes"][:10]:
            row = f" (CSV row {box['csv_row']})" if box["csv_row"] else ""
            print(f"{name}: tiny box {format_box(box['box'])} in {box['file']}{row}")
        for path in s.get("crop_failures", [])[:10]:
            print(f"{name}: crop failed (full frame used): {path}")
        for cut in s.get("boxes_cut_by_crop", [])[:10]:
            print(f"{name}: box {format_box(cut['box'])} extends outside crop {cut['crop']} in {cut['file']}")

    os.makedirs(args.output, exist_ok=True)
    plots = plot_histograms(all_stats, args.tiny, args.output)
    summary = {n: {k: v for k, v in s.items() if k not in ("widths", "heights")} for n, s in all_stats.items()}
    with open(os.path.join(args.output, "stats.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(f"plots: {', '.join(plots)}; details: {os.path.join(args.output, 'stats.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
