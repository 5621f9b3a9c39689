"""A synthetic hospital export, for tests, demos and benchmarks without real patient data.

:func:`write_synthetic_hospital` writes what a hospital would hand over: LabelMe 3.0
(CVAT) exports of cine clips of phantom scans embedded in 600x800 scanner
screenshots, one of them zipped and one with a nested ``default/default/``; a case
list; a multi-frame DICOM cine with a Sequence of Ultrasound Regions and (fake)
patient tags; the hospital CSV of all of it; and a ``manifest.json`` with the
ground truth (scan windows and lesion boxes per frame).

Layout::

    out_dir/exports/<mrn>_<acc>_<k>.mp4-<timestamp>-labelme 3.0.zip/default/frame_000000.PNG + .xml
    out_dir/exports/<...>.zip                 a zipped clip (a real zip file)
    out_dir/dicom/<mrn>_<acc>_<k>.dcm         the DICOM cine of one clip (also exported as PNG)
    out_dir/cases.csv                         coded_mrn, coded_accession, Final Diagnosis, Bx Site, Coded Diagnosis
    out_dir/annotations.csv                   hospital CSV; the zipped clip's frames exist only in the zip,
                                              so it is left out; the DICOM clip points at the DICOM
    out_dir/manifest.json
"""
import csv
import json
import os
import shutil
import zipfile
from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..data.datasets.hospital import CSV_COLUMNS, write_hospital_csv
from .screen import embed_in_workspace
from .tissue import render_phantom

__all__ = ["write_synthetic_hospital", "write_dicom_cine", "labelme_xml", "render_clip", "PHI_CANARY"]

# Written into the fake patient tags of every synthetic DICOM: it must never show up
# in anything ustumor prints, logs or writes.
PHI_CANARY = "PHICANARY"
CASE_COLUMNS = ("coded_mrn", "coded_accession", "Final Diagnosis", "Bx Site", "Coded Diagnosis")
_FINAL_DIAGNOSES = {"B": ("Fibroadenoma", "Fibrocystic change", "Benign breast tissue"),
                    "M": ("Invasive ductal carcinoma", "Ductal carcinoma in situ", "Invasive lobular carcinoma")}
_SITES = ("Left 2:00", "Right 10:00", "Left 7:00 4cmfn", "Right 12:00")


def _mask_box(mask):
    """Exclusive XYXY box of a mask's non-zero pixels."""
    x, y, w, h = cv2.boundingRect((mask > 0).astype(np.uint8))
    return [float(x), float(y), float(x + w), float(y + h)]


def render_clip(rng, kind, num_frames, frame_hw=(600, 800), scan_hw=(300, 400), max_shift=6, min_lesions=1):
    """Frames of one cine clip: the probe drifts a few pixels between frames.

    ``min_lesions`` > 1 re-renders the scan until it has that many lesions (the phantom
    has two in about one scan in ten).

    Returns ``(frames, scan_box, lesion_boxes)``: uint8 (N, H, W, 3) RGB screenshots,
    the scan's exclusive box in them (the same in every frame), and per frame the
    exclusive boxes of the lesions in frame coordinates (empty for ``"normal"``).
    """
    scan_h, scan_w = (int(v) for v in scan_hw)
    for _ in range(200):
        base, masks = render_phantom(rng, scan_h + 2 * max_shift, scan_w + 2 * max_shift, kind)
        if kind == "normal" or len(masks) >= min_lesions:
            break
    else:
        raise RuntimeError(f"no phantom scan with {min_lesions} lesions")
    screen_seed = int(rng.integers(2**62))  # one screen (GUI, scan position) per clip
    frames, lesion_boxes, scan_box = [], [], None
    offset = np.array([max_shift, max_shift])
    for _ in range(num_frames):
        offset = np.clip(offset + rng.integers(-2, 3, size=2), 0, 2 * max_shift)
        dy, dx = int(offset[0]), int(offset[1])
        scan = base[dy:dy + scan_h, dx:dx + scan_w]
        # fresh speckle grain per frame, as in a real cine
        noise = rng.normal(1.0, 0.04, scan.shape)
        scan = np.clip(scan * noise + 0.5, 0, 255).astype(np.uint8)
        frame, box = embed_in_workspace(np.random.default_rng(screen_seed), scan, frame_hw)
        scan_box = tuple(int(v) for v in box)
        boxes = []
        for mask in masks:
            cropped = mask[dy:dy + scan_h, dx:dx + scan_w]
            if cropped.any():
                x0, y0, x1, y1 = _mask_box(cropped)
                boxes.append([x0 + box[0], y0 + box[1], x1 + box[0], y1 + box[1]])
        frames.append(frame)
        lesion_boxes.append(boxes)
    return np.stack(frames), scan_box, lesion_boxes


def _rotated_corners(box, start):
    x0, y0, x1, y1 = box
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    return corners[start:] + corners[:start]  # exports list the corners in varying orders


def _points_string(points):
    """``[(x, y), ...]`` the way the hospital CSV writes points."""
    return "[" + ", ".join(f"({x:g}, {y:g})" for x, y in points) + "]"


def labelme_xml(image_name, height, width, objects):
    """A LabelMe 3.0 XML as CVAT/Datumaro write it. ``objects``: (label, points, shape[, deleted])."""
    parts = [f"<annotation><filename>{image_name}</filename><folder></folder>",
             "<source><sourceImage></sourceImage><sourceAnnotation>CVAT</sourceAnnotation></source>",
             f"<imagesize><nrows>{height}</nrows><ncols>{width}</ncols></imagesize>"]
    for index, obj in enumerate(objects):
        label, points, shape = obj[:3]
        deleted = obj[3] if len(obj) > 3 else False
        parts.append(f"<object><name>{label}</name><deleted>{int(deleted)}</deleted><verified>0</verified>"
                     f"<occluded>no</occluded><date></date><id>{index}</id>"
                     "<parts><hasparts></hasparts><ispartof></ispartof></parts>")
        if shape == "bounding_box":
            parts.append("<type>bounding_box</type>")
        parts.append("<polygon>" + "".join(f"<pt><x>{x:.2f}</x><y>{y:.2f}</y></pt>" for x, y in points)
                     + "<username></username></polygon><attributes></attributes></object>")
    parts.append("</annotation>")
    return "\n".join(parts).encode("utf-8")


def write_dicom_cine(path, frames, photometric="RGB", region_box=None, patient=None, extra_regions=()):
    """Write frames as an uncompressed (multi-frame if N > 1) ultrasound DICOM.

    Args:
        frames: uint8 (N, H, W, 3) RGB or (N, H, W) grey.
        photometric: "RGB", "YBR_FULL" (colour frames) or "MONOCHROME2" (grey frames).
        region_box: exclusive (x0, y0, x1, y1) written as a 2D tissue ultrasound region.
        patient: fake identifying tags, e.g. ``{"PatientName": "X^Y", "PatientID": "..."}``.
        extra_regions: more region (box, RegionSpatialFormat) pairs, e.g. a Doppler strip.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.pixels import convert_color_space
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    frames = np.asarray(frames, dtype=np.uint8)
    count, rows, columns = frames.shape[:3]
    sop_class = "1.2.840.10008.5.1.4.1.1.3.1" if count > 1 else "1.2.840.10008.5.1.4.1.1.6.1"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    for keyword, value in (patient or {}).items():
        setattr(ds, keyword, value)
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if count > 1:
        ds.NumberOfFrames = count
    if photometric == "MONOCHROME2":
        if frames.ndim == 4:
            frames = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])
        ds.SamplesPerPixel = 1
    else:
        if frames.ndim == 3:
            frames = np.repeat(frames[..., None], 3, axis=3)
        if photometric == "YBR_FULL":
            frames = convert_color_space(frames, "RGB", "YBR_FULL")
        elif photometric != "RGB":
            raise ValueError(f"photometric {photometric!r} not supported here")
        ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    ds.PhotometricInterpretation = photometric
    regions = []
    for box, spatial_format in ([(region_box, 1)] if region_box else []) + list(extra_regions):
        region = Dataset()
        region.RegionSpatialFormat, region.RegionDataType, region.RegionFlags = int(spatial_format), 1, 0
        region.RegionLocationMinX0, region.RegionLocationMinY0 = int(box[0]), int(box[1])
        region.RegionLocationMaxX1, region.RegionLocationMaxY1 = int(box[2]) - 1, int(box[3]) - 1  # inclusive
        region.PhysicalUnitsXDirection, region.PhysicalUnitsYDirection = 3, 3  # cm
        region.PhysicalDeltaX, region.PhysicalDeltaY = 0.01, 0.01
        regions.append(region)
    if regions:
        ds.SequenceOfUltrasoundRegions = regions
    ds.PixelData = np.ascontiguousarray(frames).tobytes()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def fake_patient_tags(mrn, accession):
    """Identifying tags a real scanner writes, filled with the :data:`PHI_CANARY` marker."""
    return {"PatientName": f"{PHI_CANARY}^Jane^{mrn}", "PatientID": f"{PHI_CANARY}-ID-{mrn}",
            "PatientBirthDate": "19610203", "AccessionNumber": f"{PHI_CANARY}{accession}"[:16],
            "InstitutionName": f"{PHI_CANARY} Medical Center", "ReferringPhysicianName": f"{PHI_CANARY}^Doctor"}


def write_synthetic_hospital(
    out_dir: str,
    num_patients: int = 8,
    frames_per_clip: int = 3,
    seed: int = 0,
    frame_hw: Tuple[int, int] = (600, 800),
    csv_name: Optional[str] = "annotations.csv",
    overwrite: bool = False,
    dicom_patients: Sequence[int] = (3,),
) -> Dict[str, object]:
    """Write a synthetic hospital export (see the module doc); returns the manifest.

    Patients alternate benign (B) and malignant (M). Each has one lesion clip; every
    third patient also has an empty clip (lesion out of view, no boxes). Clip 0 of
    patient 1 is zipped, of patient 2 nested in ``default/default/``; the clips of the
    ``dicom_patients`` (default: patient 3, one clip) are also written as multi-frame DICOM
    cines, which the CSV then points at (a zipped clip's too); the lesion clip of patient 6 has two lesions. In the
    lesion clips of patients 0 and 4, frame 1 is left unannotated (a "noisy negative": the
    lesion in view, not outlined). Rectangles and polygons alternate by clip, with corners in
    a different order each frame.
    """
    if num_patients < 7:
        raise ValueError("num_patients must be >= 7 (the special clips need their own patients)")
    if os.path.exists(out_dir) and os.listdir(out_dir):
        if not overwrite:
            raise FileExistsError(f"{out_dir} exists and is not empty")
        shutil.rmtree(out_dir)
    exports = os.path.join(out_dir, "exports")
    os.makedirs(exports, exist_ok=True)
    height, width = (int(v) for v in frame_hw)
    cases, clips, csv_rows = [], [], []
    for p in range(num_patients):
        rng = np.random.default_rng([seed, p])
        mrn, accession = f"{7300 + 17 * p}", f"{910000 + 31 * p}"
        diagnosis = "BM"[p % 2]
        final = str(rng.choice(_FINAL_DIAGNOSES[diagnosis]))
        site = str(rng.choice(_SITES))
        cases.append({"coded_mrn": mrn, "coded_accession": accession, "Final Diagnosis": final, "Bx Site": site,
                      "Coded Diagnosis": diagnosis})
        kinds = ["benign" if diagnosis == "B" else "malignant"] + (["normal"] if p % 3 == 2 else [])
        for k, kind in enumerate(kinds, start=1):
            timestamp = f"2019_{1 + p % 12:02d}_{10 + k:02d}_09_{p:02d}_{k:02d}"
            video_id = f"{mrn}_{accession}_{k}.mp4-{timestamp}-labelme 3.0.zip"
            frames, scan_box, boxes = render_clip(rng, kind, frames_per_clip, frame_hw,
                                                  min_lesions=2 if p == 6 and k == 1 else 1)
            clip = {"video_id": video_id, "patient": mrn, "accession": accession, "kind": kind,
                    "zipped": p == 1 and k == 1, "nested": p == 2 and k == 1, "dicom": None,
                    "scan_box": list(scan_box), "frames": []}
            extension = ".PNG" if p % 2 == 0 else ".png"
            folder = os.path.join("default", "default") if clip["nested"] else "default"
            members = {}
            for f, (frame, frame_boxes) in enumerate(zip(frames, boxes)):
                name = f"frame_{f:06d}{extension}"
                unannotated = kind != "normal" and f == 1 and p in (0, 4)
                objects, written = [], []
                for b, box in enumerate([] if unannotated else frame_boxes):
                    start = (f + b) % 4
                    if (p + k) % 2 == 0:  # rectangle: its corners, starting anywhere
                        points = _rotated_corners(box, start)
                        objects.append(("lesion", points, "bounding_box"))
                    else:  # polygon: the lesion outline (pixel centres)
                        x0, y0, x1, y1 = (int(v) for v in box)
                        sub = np.zeros((height, width), np.uint8)
                        ellipse_box = ((x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2), (x1 - x0 - 1, y1 - y0 - 1), 0
                        cv2.ellipse(sub, ellipse_box, 255, -1)
                        contour = max(cv2.findContours(sub, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0], key=len)
                        points = [(float(x), float(y)) for x, y in contour[:, 0, :]]
                        points = points[start * len(points) // 4:] + points[:start * len(points) // 4]
                        objects.append(("lesion", points, "polygon"))
                    xs, ys = [q[0] for q in points], [q[1] for q in points]
                    written.append([min(xs), min(ys), max(xs), max(ys)])
                if f == 0 and kind != "normal" and p == 5:
                    objects.append(("lesion", _rotated_corners([10, 10, 40, 40], 0), "bounding_box", True))
                members[f"{folder}/{name}"] = cv2.imencode(extension, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))[1]
                members[f"{folder}/{os.path.splitext(name)[0]}.xml"] = labelme_xml(name, height, width, objects)
                clip["frames"].append({"frame_id": f, "image": f"exports/{video_id}/{folder}/{name}",
                                       "boxes": written, "lesion_boxes": [list(b) for b in frame_boxes],
                                       "unannotated": unannotated})
            _write_members(os.path.join(exports, video_id), members, clip["zipped"])
            if p in dicom_patients:
                clip["dicom"] = f"dicom/{mrn}_{accession}_{k}.dcm"
                write_dicom_cine(os.path.join(out_dir, clip["dicom"]), frames, "RGB", scan_box,
                                 fake_patient_tags(mrn, accession))
            clips.append(clip)
            if clip["zipped"] and not clip["dicom"]:
                continue  # its frames exist only inside the zip
            for frame in clip["frames"]:
                image_path = clip["dicom"] or frame["image"]
                for b, box in enumerate(frame["boxes"] or [None]):
                    csv_rows.append({
                        "coded_mrn": mrn, "coded_accession": accession, "video_id": video_id,
                        "frame_id": frame["frame_id"], "image_path": image_path,
                        "bounding box": "[]" if box is None else _points_string(
                            _rotated_corners(box, (frame["frame_id"] + b + 1) % 4)),
                        "Final Diagnosis": final, "Bx Site": site, "Final Diagnosis.1": final, "First 50": diagnosis,
                    })
    with open(os.path.join(out_dir, "cases.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CASE_COLUMNS)
        writer.writeheader()
        writer.writerows(cases)
    if csv_name:
        write_hospital_csv(os.path.join(out_dir, csv_name), csv_rows)
    manifest = {"seed": int(seed), "frame_hw": [height, width], "num_patients": int(num_patients),
                "csv": csv_name, "csv_columns": list(CSV_COLUMNS), "phi_canary": PHI_CANARY,
                "cases": cases, "clips": clips}
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def _write_members(path, members, zipped):
    if zipped:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:  # PNGs are compressed already
            for name, data in members.items():
                archive.writestr(name, bytes(data))
        return
    for name, data in members.items():
        destination = os.path.join(path, *name.split("/"))
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        with open(destination, "wb") as f:
            f.write(bytes(data))

