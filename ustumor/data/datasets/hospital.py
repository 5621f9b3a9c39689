"""Hospital cine-frame datasets (e.g. "UCLA") from an annotation CSV (datasets/README.md).

The CSV has one row per lesion box, or one row with ``[]`` for a frame without a
lesion, and these columns (the first, unnamed, is a row counter)::

    ,coded_mrn,coded_accession,video_id,frame_id,image_path,bounding box,Final Diagnosis,Bx Site,
        Final Diagnosis.1,First 50
    0,1001,A2001,1001_A2001_1.mp4-...-labelme 3.0.zip,12,<video_id>/default/frame_000012.PNG,
        "[(431, 250), (310, 250), (310, 331), (431, 331)]",Fibroadenoma,Left 2:00,Fibroadenoma,B

(each row is one line in the file; wrapped here).

- ``image_path`` is relative to the image root (default: the CSV's folder) or absolute;
  a PNG/JPEG frame, or a DICOM whose frame ``frame_id`` is taken (multi-frame files;
  ``frame_id - DICOM_FIRST_FRAME`` is the 0-based frame index).
- ``bounding box`` is a list of points; the box is min/max over them, in any corner
  order, in the original frame's pixel coordinates (``XYXY_ABS``, continuous).
  The mapper moves boxes with the scan-window crop; they are never pre-scaled.
- Rows of one frame become one dict with several annotations. Every dict carries the
  fields of :mod:`ustumor.data.fields`: ``patient_id`` (coded_mrn), ``accession``
  (coded_accession), ``clip_id`` (video_id), ``frame_id``, ``diagnosis`` (``First 50``:
  B -> benign, M -> malignant, else ""), for DICOM ``dicom_frame``; and the diagnosis
  columns as they are (``final_diagnosis``, ``bx_site``, ``final_diagnosis_1``,
  ``first_50``) and ``csv_rows``.

Row numbers in messages are the file's line numbers, header = row 1, as a
spreadsheet shows them. Bad rows stop the load with a message naming the file
and row, or are skipped and counted (``DATASETS.ON_BAD_ITEM``).
"""
import ast
import csv
import functools
import io
import logging
import math
import os

from detectron2.data import MetadataCatalog
from detectron2.structures import BoxMode
from PIL import Image

from .. import dicom
from ..bad_input import BadInputError, BadInputPolicy
from ..fields import ACCESSION, CLIP_ID, DIAGNOSIS, DICOM_FRAME, FRAME_ID, PATIENT_ID
from ..splits import SPLIT_NAMES, apply_split, load_split, stratified_group_split
from .registration import register_split_family

logger = logging.getLogger(__name__)

__all__ = [
    "CSV_COLUMNS", "CLASS_MODES", "parse_box_string", "format_box_string", "load_hospital_dicts",
    "make_patient_split", "register_hospital_dataset", "write_hospital_csv", "hospital_report",
]

# The CSV's columns, in order; the first (unnamed) is a row counter.
CSV_COLUMNS = ("", "coded_mrn", "coded_accession", "video_id", "frame_id", "image_path", "bounding box",
               "Final Diagnosis", "Bx Site", "Final Diagnosis.1", "First 50")
REQUIRED_COLUMNS = ("coded_mrn", "coded_accession", "video_id", "frame_id", "image_path", "bounding box")
# CSV column -> dataset-dict key
DIAGNOSIS_FIELDS = {"Final Diagnosis": "final_diagnosis", "Bx Site": "bx_site",
                    "Final Diagnosis.1": "final_diagnosis_1", "First 50": "first_50"}
CLASS_MODES = {"lesion": ["lesion"], "benign_malignant": ["benign", "malignant"]}
_FIRST_50_CLASS = {"B": "benign", "M": "malignant"}


def hospital_class_names(class_mode):
    if class_mode not in CLASS_MODES:
        raise ValueError(f"DATASETS.CLASS_MODE must be one of {sorted(CLASS_MODES)}, got {class_mode!r}")
    return list(CLASS_MODES[class_mode])


# --------------------------------------------------------------------------
# Box strings
# --------------------------------------------------------------------------
def parse_box_string(text):
    """``"[(x1, y1), (x2, y2), ...]"`` -> list of (x, y) floats; ``"[]"`` -> ``[]``.

    Raises ValueError saying what is wrong. Fewer than 2 points is returned as is
    (the caller reports it as its own case).
    """
    try:
        value = ast.literal_eval(str(text).strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ValueError("not a list of (x, y) points") from None
    if not isinstance(value, (list, tuple)):
        raise ValueError("not a list of (x, y) points")
    points = []
    for point in value:
        if not isinstance(point, (list, tuple)) or len(point) != 2:
            raise ValueError(f"{point!r} is not an (x, y) point")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in point):
            raise ValueError(f"{point!r} has a coordinate that is not a finite number")
        points.append((float(point[0]), float(point[1])))
    return points


def _number_text(value):
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(round(value, 3))


def format_box_string(box):
    """The four corners of ``[x0, y0, x1, y1]`` as the CSV's ``bounding box`` column writes them."""
    x0, y0, x1, y1 = (_number_text(v) for v in box)
    return f"[({x0}, {y0}), ({x1}, {y0}), ({x1}, {y1}), ({x0}, {y1})]"


def write_hospital_csv(path, rows):
    """Write rows (dicts keyed by :data:`CSV_COLUMNS` names, counter excluded) as a hospital CSV."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for counter, row in enumerate(rows):
            writer.writerow([counter] + [row.get(column, "") for column in CSV_COLUMNS[1:]])
    os.replace(temporary, path)


# --------------------------------------------------------------------------
# Reading the CSV
# --------------------------------------------------------------------------
def _decoded_lines(csv_file, encoding, policy):
    """The file's text with undecodable lines blanked (and reported), so that line
    numbers stay those of the file."""
    with open(csv_file, "rb") as f:
        data = f.read()
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8") and data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # byte-order mark (Excel's "CSV UTF-8")
    lines = []
    for number, raw in enumerate(data.splitlines(keepends=True), start=1):
        try:
            lines.append(raw.decode(encoding))
        except UnicodeDecodeError as error:
            message = (f"{csv_file}, row {number}: bytes that are not {encoding} at character {error.start + 1} "
                       f"({raw[max(0, error.start - 10):error.end + 10]!r}); re-save the CSV as {encoding} "
                       "or set DATASETS.HOSPITAL.CSV_ENCODING")
            if number == 1:
                raise BadInputError(message)  # no header, no dataset
            policy.handle("non-UTF-8 row", message)
            lines.append("\n")  # csv skips blank lines; numbering is kept
    return "".join(lines)


def read_csv_rows(csv_file, encoding="utf-8", policy=None):
    """(row number, {column: text}) for each data row; checks the header."""
    policy = policy or BadInputPolicy("error", source=csv_file)
    reader = csv.reader(io.StringIO(_decoded_lines(csv_file, encoding, policy), newline=""))
    header = next(reader, None)
    if header is None:
        raise BadInputError(f"{csv_file}: empty CSV")
    header = [h.strip() for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise BadInputError(f"{csv_file}: missing column(s) {missing}; expected the columns {list(CSV_COLUMNS)}")
    line = reader.line_num
    for values in reader:
        row_number, line = line + 1, reader.line_num
        if not values or not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            policy.handle("wrong number of fields",
                          f"{csv_file}, row {row_number}: {len(values)} fields, the header has {len(header)}")
            continue
        yield row_number, dict(zip(header, values))


class _FrameSource:
    """Size and frame count of an image or DICOM file, probed once per file."""

    def __init__(self, path):
        self.path = path
        self.is_dicom = dicom.is_dicom(path)
        if not os.path.isfile(path):
            raise BadInputError(f"image file {path} not found")
        if self.is_dicom:
            info = dicom.read_dicom_info(path)
            if not info.has_pixel_data:
                raise BadInputError(f"{path}: DICOM has no pixel data")
            self.width, self.height, self.num_frames = info.columns, info.rows, info.num_frames
        else:
            try:
                with Image.open(path) as image:  # reads the header only
                    self.width, self.height = image.size
            except (OSError, SyntaxError, ValueError) as error:
                raise BadInputError(f"{path}: cannot read as an image ({type(error).__name__})") from None
            self.num_frames = 1


def _parse_frame_id(text):
    value = float(text)  # pandas writes "12.0" when a column once held NaN
    if not value.is_integer():
        raise ValueError
    return int(value)


@functools.lru_cache(maxsize=8)
def _load(csv_file, image_root, class_mode, on_bad_row, drop_unannotated, dicom_first_frame, csv_encoding, _mtime):
    return _load_hospital(csv_file, image_root, class_mode, on_bad_row, drop_unannotated, dicom_first_frame,
                          csv_encoding)


def load_hospital_dicts(csv_file, image_root=None, class_mode="lesion", on_bad_row="error",
                        drop_unannotated_in_annotated_clips=True, dicom_first_frame=0, csv_encoding="utf-8"):
    """Read a hospital CSV into Detectron2 dicts, one per frame. Returns ``(dicts, report)``;
    ``report`` counts rows, frames, boxes, skipped rows by reason and dropped frames."""
    image_root = image_root or os.path.dirname(os.path.abspath(csv_file))
    dicts, report = _load(os.path.abspath(csv_file), os.path.abspath(image_root), class_mode, on_bad_row,
                          bool(drop_unannotated_in_annotated_clips), int(dicom_first_frame), csv_encoding,
                          os.stat(csv_file).st_mtime_ns)
    return [dict(d, annotations=[dict(a) for a in d["annotations"]]) for d in dicts], dict(report)


def _load_hospital(csv_file, image_root, class_mode, on_bad_row, drop_unannotated, dicom_first_frame, csv_encoding):
    class_names = hospital_class_names(class_mode)
    policy = BadInputPolicy(on_bad_row, source=csv_file)
    sources, frames, box_rows, patient_of_clip = {}, {}, {}, {}
    num_rows = 0
    for row_number, row in read_csv_rows(csv_file, csv_encoding, policy):
        num_rows += 1
        where = f"{csv_file}, row {row_number}"
        try:
            record, box = _parse_row(row, where, image_root, sources, class_names, dicom_first_frame)
        except _BadRow as bad:
            policy.handle(bad.reason, bad.message)
            continue
        # a DICOM file holds many frames; an image file is one frame
        key = (record["file_name"], record[FRAME_ID] if DICOM_FRAME in record else None)
        box_key = key + (tuple(box) if box else None,)
        conflict = None
        if box_key in box_rows:
            conflict = ("duplicate row", f"same frame and box as row {box_rows[box_key]}")
        elif patient_of_clip.get(record[CLIP_ID], (record[PATIENT_ID],))[0] != record[PATIENT_ID]:
            first_patient, first_row = patient_of_clip[record[CLIP_ID]]
            conflict = ("conflicting rows", f"video_id {record[CLIP_ID]!r} has patient {record[PATIENT_ID]!r} "
                                            f"here but {first_patient!r} in row {first_row}")
        elif key in frames:
            conflict = _frame_conflict(frames[key], record, box)
        if conflict:
            policy.handle(conflict[0], f"{where}: {conflict[1]}")
            continue
        box_rows[box_key] = row_number
        patient_of_clip.setdefault(record[CLIP_ID], (record[PATIENT_ID], row_number))
        if key not in frames:
            record["csv_rows"], record["annotations"], record["negative"] = [], [], box is None
            frames[key] = record
        frame = frames[key]
        frame["csv_rows"].append(row_number)
        if box is not None:
            frame["annotations"].append({"bbox": box, "bbox_mode": BoxMode.XYXY_ABS, "iscrowd": 0,
                                         "category_id": record["category_id"], "csv_row": row_number})
    skipped = policy.summarize()
    dicts = []
    annotated_clips = {(f[PATIENT_ID], f[CLIP_ID]) for f in frames.values() if f["annotations"]}
    dropped = 0
    for frame in frames.values():
        clip = (frame[PATIENT_ID], frame[CLIP_ID])
        if drop_unannotated and not frame["annotations"] and clip in annotated_clips:
            dropped += 1
            continue
        frame = dict(frame)
        del frame["negative"], frame["category_id"]
        dicts.append(frame)
    if dropped:
        logger.info("%s: dropped %d frame(s) without boxes from clips annotated on other frames "
                    "(DATASETS.HOSPITAL.DROP_UNANNOTATED_IN_ANNOTATED_CLIPS)", csv_file, dropped)
    if not dicts:
        raise BadInputError(f"{csv_file}: no usable frames ({num_rows} rows, skipped: {skipped or 'none'})")
    report = {
        "rows": num_rows,
        "frames": len(dicts),
        "boxes": sum(len(d["annotations"]) for d in dicts),
        "negative_frames": sum(1 for d in dicts if not d["annotations"]),
        "skipped_rows": skipped,
        "dropped_unannotated_in_annotated_clips": dropped,
    }
    logger.info("Loaded %s: %s", csv_file, report)
    return dicts, report


class _BadRow(Exception):
    def __init__(self, reason, message):
        super().__init__(message)
        self.reason, self.message = reason, message


def _parse_row(row, where, image_root, sources, class_names, dicom_first_frame):
    """One CSV row -> (frame record, box or None). Raises :class:`_BadRow`."""
    patient = row["coded_mrn"].strip()
    if not patient:
        raise _BadRow("no patient", f"{where}: empty coded_mrn")
    try:
        frame_id = _parse_frame_id(row["frame_id"].strip())
    except ValueError:
        raise _BadRow("bad frame_id", f"{where}: frame_id {row['frame_id']!r} is not an integer") from None
    image_path = row["image_path"].strip().replace("\\", "/")
    if not image_path:
        raise _BadRow("missing image file", f"{where}: empty image_path")
    text = row["bounding box"]
    try:
        points = parse_box_string(text)
    except ValueError as error:
        raise _BadRow("malformed box", f"{where}: bounding box {text!r}: {error}") from None
    if len(points) == 1:
        raise _BadRow("fewer than 2 points", f"{where}: bounding box {text!r} has 1 point; a box needs 2 or more")

    path = os.path.normpath(image_path if os.path.isabs(image_path) else os.path.join(image_root, image_path))
    if path not in sources:
        try:
            sources[path] = _FrameSource(path)
        except BadInputError as error:
            sources[path] = error
    source = sources[path]
    if isinstance(source, BadInputError):
        reason = "missing image file" if "not found" in str(source) else (
            "DICOM without pixel data" if "no pixel data" in str(source) else "unreadable image")
        raise _BadRow(reason, f"{where}: {source}")

    record = {
        "file_name": path,
        "height": int(source.height),
        "width": int(source.width),
        "image_id": image_path,
        PATIENT_ID: patient,
        ACCESSION: row["coded_accession"].strip(),
        CLIP_ID: row["video_id"].strip(),
        FRAME_ID: frame_id,
    }
    for column, key in DIAGNOSIS_FIELDS.items():
        record[key] = row.get(column, "").strip()
    record[DIAGNOSIS] = _FIRST_50_CLASS.get(record["first_50"].upper(), "")
    if source.is_dicom:
        index = frame_id - dicom_first_frame if source.num_frames > 1 else 0
        if not 0 <= index < source.num_frames:
            raise _BadRow("frame_id past the last DICOM frame",
                          f"{where}: frame_id {frame_id} is frame {index} (0-based) of {path}, which has "
                          f"{source.num_frames} frames (DATASETS.HOSPITAL.DICOM_FIRST_FRAME={dicom_first_frame})")
        record[DICOM_FRAME] = index
        record["image_id"] = f"{image_path}#{frame_id}"

    if not points:
        record["category_id"] = None
        return record, None
    x0, y0, x1, y1 = min(p[0] for p in points), min(p[1] for p in points), \
        max(p[0] for p in points), max(p[1] for p in points)
    if x0 < 0 or y0 < 0 or x1 > source.width or y1 > source.height:
        raise _BadRow("box outside the image",
                      f"{where}: box [{x0:g}, {y0:g}, {x1:g}, {y1:g}] is outside the {source.width}x{source.height} "
                      f"image {path}")
    if x1 <= x0 or y1 <= y0:
        raise _BadRow("empty box", f"{where}: box [{x0:g}, {y0:g}, {x1:g}, {y1:g}] has no area")
    record["category_id"] = 0
    if len(class_names) > 1:
        name = record[DIAGNOSIS]
        if not name:
            raise _BadRow("no B/M diagnosis", f"{where}: 'First 50' is {record['first_50']!r}, not B or M "
                                              "(needed by DATASETS.CLASS_MODE benign_malignant)")
        record["category_id"] = class_names.index(name)
    return record, [x0, y0, x1, y1]


def _frame_conflict(frame, record, box):
    """Why a row cannot join the frame's earlier rows, or None."""
    first = frame["csv_rows"][0]
    for key in (FRAME_ID, PATIENT_ID, ACCESSION, CLIP_ID) + tuple(DIAGNOSIS_FIELDS.values()):
        if frame[key] != record[key]:
            return "conflicting rows", f"{key} {record[key]!r} differs from {frame[key]!r} in row {first} (same frame)"
    if frame["negative"] or box is None:
        return "conflicting rows", f"the frame is listed both without a lesion ([]) and with a box (row {first})"
    return None


# --------------------------------------------------------------------------
# Patient-level split
# --------------------------------------------------------------------------
def patient_labels(dicts, stratify_by):
    """Each patient's stratification label: the first column of ``stratify_by`` with a
    value for the patient ("mixed" if it has several), else "unknown"."""
    keys = [DIAGNOSIS_FIELDS.get(c, c) for c in stratify_by]
    values = {}
    for d in dicts:
        per_key = values.setdefault(d[PATIENT_ID], {k: set() for k in keys})
        for k in keys:
            if d.get(k, ""):
                per_key[k].add(str(d[k]).upper() if k == "first_50" else str(d[k]))
    labels = {}
    for patient, per_key in values.items():
        label = "unknown"
        for k in keys:
            if per_key[k]:
                label = per_key[k].pop() if len(per_key[k]) == 1 else "mixed"
                break
        labels[patient] = label
    return labels


def make_patient_split(dataset, dicts, seed=0, ratios=(0.6, 0.2, 0.2), stratify_by=("First 50", "Final Diagnosis"),
                       split_file=""):
    """Assign whole patients to train/val/test, stratified by diagnosis and seeded.

    Ratios count patients. With ``split_file`` (an earlier run's ``splits/<prefix>.json``)
    its patient assignment is reused; a patient missing from it is an error.
    """
    labels = patient_labels(dicts, stratify_by)
    patients = sorted(labels)
    if split_file:
        saved = load_split(split_file)
        if "patients" not in saved:
            raise ValueError(f"{split_file}: not a hospital split (no 'patients'); "
                             f"it belongs to {saved.get('dataset')!r}")
        missing = [p for p in patients if p not in saved["patients"]]
        if missing:
            raise ValueError(f"{split_file}: {len(missing)} patient(s) are not in the split, e.g. {missing[:3]}")
        by_patient = {p: saved["patients"][p] for p in patients}
        split = {k: v for k, v in saved.items() if k not in ("assignment", "group", "counts", "patients")}
    else:
        assignment = stratified_group_split(list(range(len(patients))), [labels[p] for p in patients],
                                            tuple(ratios), seed)
        by_patient = dict(zip(patients, assignment))
        split = {"dataset": dataset, "seed": int(seed), "ratios": [float(r) for r in ratios],
                 "stratify_by": list(stratify_by),
                 "method": "patient-level (coded_mrn): every frame of a patient in one split; "
                           "ratios count patients, stratified by diagnosis"}
    index = {p: i for i, p in enumerate(patients)}
    split["patients"] = by_patient
    split["patient_labels"] = labels
    split["assignment"] = {d["image_id"]: by_patient[d[PATIENT_ID]] for d in dicts}
    split["group"] = {d["image_id"]: index[d[PATIENT_ID]] for d in dicts}
    split["counts"] = {name: sum(1 for d in dicts if by_patient[d[PATIENT_ID]] == name) for name in SPLIT_NAMES}
    split["patient_counts"] = {name: sum(1 for p in patients if by_patient[p] == name) for name in SPLIT_NAMES}
    return split


# --------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _split_hospital(prefix, csv_file, image_root, class_mode, on_bad_row, drop_unannotated, dicom_first_frame,
                    csv_encoding, seed, ratios, stratify_by, split_file):
    dicts, report = load_hospital_dicts(csv_file, image_root, class_mode, on_bad_row, drop_unannotated,
                                        dicom_first_frame, csv_encoding)
    split = make_patient_split(prefix, dicts, seed, ratios, stratify_by, split_file)
    logger.info("%s split: %s frames, %s patients", prefix, split["counts"], split["patient_counts"])
    return tuple(apply_split(dicts, split)), split, report


def register_hospital_dataset(prefix, csv_file, image_root=None, class_mode="lesion", on_bad_row="error",
                              drop_unannotated_in_annotated_clips=True, dicom_first_frame=0, csv_encoding="utf-8",
                              seed=0, ratios=(0.6, 0.2, 0.2), stratify_by=("First 50", "Final Diagnosis"),
                              split_file=""):
    """Register ``<prefix>_{train,val,test,all}`` from a hospital CSV (see the module doc).

    Loading is lazy (on ``DatasetCatalog.get``). Re-registering replaces earlier
    registrations, so a config can change the options after import.
    """
    hospital_class_names(class_mode)  # fail early on a bad mode
    image_root = os.path.abspath(image_root or os.path.dirname(os.path.abspath(csv_file)))
    key = (prefix, os.path.abspath(csv_file), image_root, class_mode, on_bad_row,
           bool(drop_unannotated_in_annotated_clips), int(dicom_first_frame), csv_encoding, int(seed),
           tuple(float(r) for r in ratios), tuple(stratify_by), split_file)
    register_split_family(prefix, lambda: _split_hospital(*key)[0], lambda: _split_hospital(*key)[1],
                          thing_classes=hospital_class_names(class_mode), dataset_root=image_root,
                          csv_file=os.path.abspath(csv_file), load_report=lambda: dict(_split_hospital(*key)[2]))


def hospital_report(prefix):
    """The load report (rows, frames, boxes, skipped rows, dropped frames) of a registered
    hospital prefix (this loads it), or None if ``prefix`` is not a hospital set."""
    if prefix is None or f"{prefix}_all" not in MetadataCatalog.list():
        return None
    load_report = MetadataCatalog.get(f"{prefix}_all").get("load_report", None)
    return load_report() if load_report is not None else None
