#!/usr/bin/env python
"""Export any registered dataset (BUSI, phantom, hospital splits, COCO ones) as COCO json.

    tools/export_coco.py ucla_test output/coco/ucla_test.json
    tools/export_coco.py busi_train busi_train.json --relative-to $USTUMOR_DATASETS/BUSI/Dataset_BUSI_with_GT
    tools/export_coco.py ucla_all ucla.json --frames-dir output/coco/ucla_frames   # DICOM frames as PNG
    tools/export_coco.py --config-file configs/ucla/faster_rcnn_R_50_FPN_from_busi_3000it.yaml ucla_val out.json \\
        --opts DATASETS.SPLIT.SEED 1

Image ids become 1..N and category ids 1..K; each image keeps its ustumor fields
(patient_id, video_id, frame_id, split, ...). The file can be registered back with
``DATASETS.COCO '[["name", "out.json", "<image root>"]]'``.
"""
import argparse
import sys

import ustumor  # noqa: F401  registers the datasets
from detectron2.data import DatasetCatalog
from ustumor.data.datasets.coco import export_coco_json
from ustumor.engine.defaults import build_config


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", help="registered dataset name, e.g. ucla_test")
    parser.add_argument("output", help="COCO json to write")
    parser.add_argument("--config-file", default="", help="config whose dataset options apply")
    parser.add_argument("--relative-to", help="write file_name relative to this folder (the image_root)")
    parser.add_argument("--frames-dir", help="write DICOM frames here as PNG and point at them")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides (last)")
    args = parser.parse_args(argv)

    build_config(args.config_file, args.opts)
    if args.dataset not in DatasetCatalog.list():
        print(f"unknown dataset {args.dataset!r}; registered: {', '.join(sorted(DatasetCatalog.list()))}",
              file=sys.stderr)
        return 1
    summary = export_coco_json(args.dataset, args.output, relative_to=args.relative_to, frames_dir=args.frames_dir)
    print(f"{summary['dataset']}: {summary['images']} images, {summary['annotations']} boxes, "
          f"categories {summary['categories']}"
          + (f", {summary['dicom_frames_written']} DICOM frames as PNG" if summary["dicom_frames_written"] else "")
          + f" -> {summary['file']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
