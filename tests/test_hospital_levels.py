"""Hospital frames through the evaluation suite: patient- and clip-level numbers by hand count.

A hand-written CSV of three patients and five clips (PNG frames and two DICOM cines), with
predictions placed per frame, so every expected number below is counted from the scenario,
not computed by ustumor.
"""
import cv2
import numpy as np
import pytest

from hospital_data import csv_row, write_csv_rows
from ustumor.data.fields import CLIP_ID, DICOM_FRAME, FRAME_ID, PATIENT_ID
from ustumor.data.datasets.hospital import load_hospital_dicts
from ustumor.synthetic.hospital import write_dicom_cine
from ustumor.evaluation.records import make_records
from ustumor.evaluation.suite import evaluate_suite

LESION = [20, 15, 50, 40]
ELSEWHERE = [60, 50, 75, 60]  # no overlap with LESION
BOX_TEXT = "[(20, 15), (50, 15), (50, 40), (20, 40)]"
# (patient, clip, kind, has lesion, what the model predicts on each of its two frames)
SCENARIO = [
    ("P1", "c1", "png", True, ("hit", "none")),      # clip TP (one frame found)
    ("P1", "c2", "dicom", True, ("none", "none")),   # clip FN
    ("P2", "c3", "png", True, ("none", "none")),     # clip FN
    ("P2", "c4", "png", False, ("elsewhere", "none")),  # clip FP
    ("P3", "c5", "dicom", False, ("none", "none")),  # clip TN
]
# Counted by hand from SCENARIO (a clip/patient with lesions is found if any frame is;
# one without is TN only if every frame is):
EXPECTED_CLIP = {"tp": 1, "fn": 2, "fp": 1, "tn": 1}
EXPECTED_PATIENT = {"tp": 1, "fn": 1, "fp": 0, "tn": 1}  # P1 found, P2 missed, P3 clean
EXPECTED_IMAGE = {"tp": 1, "fn": 5, "fp": 1, "tn": 3}


@pytest.fixture(scope="module")
def scenario_csv(tmp_path_factory):
    root = tmp_path_factory.mktemp("levels")
    frame = np.full((80, 96), 40, np.uint8)
    rows = []
    for patient, clip, kind, lesion, _ in SCENARIO:
        video = f"{patient}_{clip}.mp4-x-labelme 3.0.zip"
        box = BOX_TEXT if lesion else "[]"
        if kind == "dicom":
            path = f"{clip}.dcm"
            write_dicom_cine(str(root / path), np.stack([frame, frame]), "MONOCHROME2")
            rows += [csv_row(path, box, frame_id=f, patient=patient, video=video) for f in (0, 1)]
        else:
            for f in (0, 1):
                path = f"{clip}_frame_{f}.png"
                cv2.imwrite(str(root / path), frame)
                rows.append(csv_row(path, box, frame_id=f, patient=patient, video=video))
    return write_csv_rows(str(root / "annotations.csv"), rows)


def predictions_for(dicts):
    plan = {(f"{patient}_{clip}.mp4-x-labelme 3.0.zip", f): what
            for patient, clip, _, _, per_frame in SCENARIO for f, what in enumerate(per_frame)}
    predictions = {}
    for d in dicts:
        what = plan[(d[CLIP_ID], d[FRAME_ID])]
        boxes = {"hit": [LESION], "elsewhere": [ELSEWHERE], "none": []}[what]
        predictions[d["image_id"]] = (boxes, [0.9] * len(boxes), [0] * len(boxes))
    return predictions


def test_hospital_dicts_carry_the_unified_fields(scenario_csv):
    dicts, _ = load_hospital_dicts(scenario_csv)
    assert len(dicts) == 10
    assert {d[PATIENT_ID] for d in dicts} == {"P1", "P2", "P3"}
    assert len({d[CLIP_ID] for d in dicts}) == 5
    dicom = [d for d in dicts if DICOM_FRAME in d]
    assert sorted((d[CLIP_ID][:5], d[DICOM_FRAME]) for d in dicom) == [
        ("P1_c2", 0), ("P1_c2", 1), ("P3_c5", 0), ("P3_c5", 1)]
    assert all("video_id" not in d for d in dicts)


def test_suite_counts_patients_and_clips_from_the_loader(scenario_csv):
    dicts, _ = load_hospital_dicts(scenario_csv)
    records = make_records(dicts, predictions_for(dicts))
    results = evaluate_suite(records, num_bootstrap=20)
    for level, expected in (("clip_level", EXPECTED_CLIP), ("patient_level", EXPECTED_PATIENT),
                            ("image_level", EXPECTED_IMAGE)):
        assert {k: results[level][k] for k in expected} == expected, level
    assert results["clip_level"]["sensitivity"] == pytest.approx(1 / 3)
    assert results["clip_level"]["specificity"] == pytest.approx(1 / 2)
    assert results["patient_level"]["sensitivity"] == pytest.approx(1 / 2)
    # bootstrap units are patients: intervals exist for both levels
    assert "clip_level/sensitivity" in results["confidence_intervals"]
    assert results["settings"]["bootstrap"]["num_clusters"] == 3
