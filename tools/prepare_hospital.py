#!/usr/bin/env python
"""Turn LabelMe 3.0 (CVAT) exports of cine clips plus the case list into the hospital CSV.

    tools/prepare_hospital.py --exports /data/ucla/labelme --cases /data/ucla/cases.csv \\
        --out $USTUMOR_DATASETS/UCLA/annotations.csv [--dicom-root /data/ucla/dicom]

    # a synthetic hospital export, converted the same way (no real data needed):
    tools/prepare_hospital.py --synthetic $USTUMOR_DATASETS/UCLA

- ``--exports``: clip folders (``<mrn>_<acc>_<k>.mp4-<timestamp>-labelme 3.0.zip/default/``,
  or ``default/default/``), zipped clips, or folders holding them. Zipped clips are
  extracted once under ``--extract-to``.
- ``--cases``: the case list (coded_mrn, coded_accession, Final Diagnosis, Bx Site,
  Coded Diagnosis); it gives each clip's diagnosis fields. "First 50" is the case list's
  own column if it has one, else B/M from Coded Diagnosis.
- Each LabelMe polygon or rectangle becomes a box by min/max over its points; a frame
  without boxes gets one ``[]`` row.
- ``--dicom-root``: a clip whose DICOM cine ``<mrn>_<acc>_<k>.dcm`` is there points at
  the DICOM frame instead of the exported PNG (the scanner's ultrasound regions then
  give the crop).

Prints one line per clip (frames, annotated frames, boxes) and lists the empty clips.
"""
import argparse
import csv
import json
import os
import re
import sys
from collections import Counter

from PIL import Image
from tabulate import tabulate
from tqdm import tqdm

from ustumor.data import dicom
from ustumor.data.bad_input import BadInputError, BadInputPolicy
from ustumor.data.datasets import labelme
from ustumor.data.datasets.hospital import format_box_string, write_hospital_csv

DEFAULT_CLIP_PATTERN = r"^(?P<mrn>[^_]+)_(?P<accession>[^_]+)_(?P<clip>[^_.]+)\.mp4"
CASE_REQUIRED = ("coded_mrn", "coded_accession")
_FIRST_50 = {"B": "B", "BENIGN": "B", "M": "M", "MALIGNANT": "M"}


def read_case_list(path):
    """{(coded_mrn, coded_accession): diagnosis fields} from the case list."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CASE_REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise BadInputError(f"{path}: missing column(s) {missing}; expected coded_mrn, coded_accession, "
                                "Final Diagnosis, Bx Site, Coded Diagnosis")
        cases = {}
        for row in reader:
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            key = (row["coded_mrn"], row["coded_accession"])
            final = row.get("Final Diagnosis", "")
            fields = {
                "Final Diagnosis": final,
                "Bx Site": row.get("Bx Site", ""),
                "Final Diagnosis.1": row.get("Final Diagnosis.1", final),
                "First 50": _FIRST_50.get(row.get("First 50", row.get("Coded Diagnosis", "")).upper(), ""),
            }
            if key in cases and cases[key] != fields:
                raise BadInputError(f"{path}, row {reader.line_num}: case {key} listed twice with different values")
            cases[key] = fields
    return cases


def _image_size(path):
    with Image.open(path) as image:
        return image.size  # (width, height)


def _csv_path(path, image_root):
    path = os.path.abspath(path)
    relative = os.path.relpath(path, image_root)
    return path if relative.startswith("..") else relative.replace(os.sep, "/")


def convert_clip(clip, cases, args, policy):
    """CSV rows and per-clip counts of one clip. Raises BadInputError for clip-level problems;
    frame-level ones go through ``policy``."""
    stats = Counter()
    match = re.match(args.clip_pattern, clip.video_id)
    if not match:
        raise BadInputError(f"{clip.path}: clip name does not match --clip-pattern {args.clip_pattern!r}")
    mrn, accession = match.group("mrn"), match.group("accession")
    case = cases.get((mrn, accession))
    if case is None:
        raise BadInputError(f"{clip.path}: no case-list entry for coded_mrn {mrn}, coded_accession {accession}")
    folder = labelme.extract_clip(clip, args.extract_to) if clip.zipped else clip.path
    frames = labelme.list_clip_frames(folder)
    dicom_path = None
    if args.dicom_root:
        candidate = os.path.join(args.dicom_root, clip.video_id.split(".mp4")[0] + ".dcm")
        if os.path.isfile(candidate):
            dicom_path = candidate
            info = dicom.read_dicom_info(candidate)
            if not info.has_pixel_data:
                raise BadInputError(f"{candidate}: DICOM has no pixel data")
            last = max((f.frame_id for f in frames), default=-1) - args.dicom_first_frame
            if last >= info.num_frames:
                raise BadInputError(f"{candidate}: has {info.num_frames} frames, the export has frame "
                                    f"{last + args.dicom_first_frame}")
            if frames and _image_size(frames[0].image_file) != (info.columns, info.rows):
                raise BadInputError(f"{candidate}: frame size {info.columns}x{info.rows} differs from the export's "
                                    f"{frames[0].image_file}")
    rows = []
    labels = {name.lower() for name in args.labels} if args.labels else None
    for frame in frames:
        try:
            width, height = _image_size(frame.image_file)
        except OSError:
            policy.handle("unreadable image", f"{frame.image_file}: cannot read as an image")
            continue
        boxes = []
        if frame.xml_file is None:
            stats["without_xml"] += 1
        else:
            try:
                parsed = labelme.parse_labelme_xml(frame.xml_file)
                if (parsed.height, parsed.width) not in ((height, width), (None, None)):
                    raise BadInputError(f"{frame.xml_file}: imagesize {parsed.width}x{parsed.height} but the image "
                                        f"is {width}x{height}")
                stats["deleted_objects"] += parsed.deleted
                for obj in parsed.objects:
                    if labels is not None and obj.label.lower() not in labels:
                        stats["other_labels"] += 1
                        continue
                    box = labelme.points_to_box(obj.points)
                    if box[0] < 0 or box[1] < 0 or box[2] > width or box[3] > height:
                        raise BadInputError(
                            f"{frame.xml_file}: {obj.shape} {box} is outside the {width}x{height} image")
                    if box[2] <= box[0] or box[3] <= box[1]:
                        raise BadInputError(f"{frame.xml_file}: {obj.shape} {box} has no area")
                    boxes.append(box)
            except (BadInputError, ValueError) as error:
                policy.handle("bad LabelMe XML", str(error))
                continue
        image_path = _csv_path(dicom_path or frame.image_file, args.image_root)
        base = {"coded_mrn": mrn, "coded_accession": accession, "video_id": clip.video_id,
                "frame_id": frame.frame_id, "image_path": image_path, **case}
        for box in boxes or [None]:
            rows.append(dict(base, **{"bounding box": "[]" if box is None else format_box_string(box)}))
        stats["frames"] += 1
        stats["annotated"] += bool(boxes)
        stats["boxes"] += len(boxes)
    return rows, stats, mrn


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exports", nargs="+", default=[], help="clip folders or zips, or folders holding them")
    parser.add_argument("--cases", help="case list CSV")
    parser.add_argument("--out", help="CSV to write (default with --synthetic: DIR/annotations.csv)")
    parser.add_argument("--image-root", help="image_path is written relative to this (default: the CSV's folder)")
    parser.add_argument("--extract-to", help="where zipped clips are extracted (default: <CSV folder>/extracted)")
    parser.add_argument("--dicom-root", help="folder of <mrn>_<acc>_<k>.dcm cines to use instead of exported PNGs")
    parser.add_argument("--dicom-first-frame", type=int, default=0,
                        help="frame number of a DICOM's first frame in the export "
                             "(as DATASETS.HOSPITAL.DICOM_FIRST_FRAME)")
    parser.add_argument("--clip-pattern", default=DEFAULT_CLIP_PATTERN,
                        help="regex with groups 'mrn' and 'accession' matched against the clip name")
    parser.add_argument("--labels", nargs="*", help="LabelMe object names to keep (default: all)")
    parser.add_argument("--on-bad", choices=("error", "skip"), default="error",
                        help="bad clip or frame: stop with its name, or skip it and count")
    parser.add_argument("--report", help="also write the per-clip counts as JSON")
    parser.add_argument("--synthetic", metavar="DIR",
                        help="first write a synthetic hospital export into DIR, then convert it")
    parser.add_argument("--num-patients", type=int, default=8, help="with --synthetic")
    parser.add_argument("--frames-per-clip", type=int, default=3, help="with --synthetic")
    parser.add_argument("--seed", type=int, default=0, help="with --synthetic")
    parser.add_argument("--dicom-every", type=int, default=0, metavar="K",
                        help="with --synthetic: store the clips of every K-th patient as DICOM cines "
                             "(default: one patient's clip)")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    if args.synthetic:
        from ustumor.synthetic.hospital import write_synthetic_hospital

        dicom = {"dicom_patients": range(0, args.num_patients, args.dicom_every)} if args.dicom_every > 0 else {}
        write_synthetic_hospital(args.synthetic, num_patients=args.num_patients,
                                 frames_per_clip=args.frames_per_clip, seed=args.seed, csv_name=None, **dicom)
        args.exports = args.exports or [os.path.join(args.synthetic, "exports")]
        args.cases = args.cases or os.path.join(args.synthetic, "cases.csv")
        args.dicom_root = args.dicom_root or os.path.join(args.synthetic, "dicom")
        args.out = args.out or os.path.join(args.synthetic, "annotations.csv")
    if not (args.exports and args.cases and args.out):
        get_parser().error("--exports, --cases and --out are required (or --synthetic DIR)")
    args.image_root = os.path.abspath(args.image_root or os.path.dirname(os.path.abspath(args.out)))
    args.extract_to = os.path.abspath(args.extract_to or os.path.join(os.path.dirname(os.path.abspath(args.out)),
                                                                      "extracted"))

    cases = read_case_list(args.cases)
    clips = labelme.find_labelme_clips(args.exports)
    if not clips:
        print(f"no LabelMe clips found in {args.exports}", file=sys.stderr)
        return 1
    policy = BadInputPolicy(args.on_bad, source="LabelMe exports")
    all_rows, table, report = [], [], []
    for clip in tqdm(clips, desc="clips", unit="clip"):
        try:
            rows, stats, patient = convert_clip(clip, cases, args, policy)
        except BadInputError as error:
            policy.handle("bad clip", str(error))
            report.append({"video_id": clip.video_id, "skipped": str(error)})
            continue
        all_rows.extend(rows)
        table.append([clip.video_id, patient, stats["frames"], stats["annotated"], stats["boxes"],
                      stats["without_xml"], stats["deleted_objects"]])
        report.append({"video_id": clip.video_id, "patient": patient, **stats})
    skipped = policy.summarize()
    if not all_rows:
        print("no frames converted", file=sys.stderr)
        return 1
    write_hospital_csv(args.out, all_rows)

    print(tabulate(table, headers=["clip", "patient", "frames", "annotated", "boxes", "no xml", "deleted objs"]))
    empty = [row[0] for row in table if row[3] == 0]
    print(f"\n{len(empty)} empty clip(s) (no box on any frame):" + "".join(f"\n  {name}" for name in empty))
    print(f"\n{len(table)} clips, {sum(r[2] for r in table)} frames ({sum(r[3] for r in table)} annotated, "
          f"{sum(r[4] for r in table)} boxes), {len({r[1] for r in table})} patients -> {args.out}")
    if skipped:
        print(f"skipped: {skipped}")
    if args.report:
        with open(args.report, "w") as f:
            json.dump({"clips": report, "empty_clips": empty, "skipped": skipped}, f, indent=1)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BadInputError as error:  # the message names the file; no traceback needed
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
