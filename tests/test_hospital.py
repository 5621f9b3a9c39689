"""Hospital CSV loading, registration, patient-level splits and the mapper on hospital frames."""
import json
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from hospital_data import CSV_HEADER, clip_of, synthetic_hospital
from ustumor.data.datasets.builtin import register_builtin_datasets
from ustumor.data.datasets.hospital import (format_box_string, hospital_report, load_hospital_dicts, make_patient_split,
                                   parse_box_string, register_hospital_dataset)
from ustumor.data.mapper import UltrasoundDatasetMapper
from ustumor.data.splits import save_splits_of, split_of
from ustumor.engine.defaults import build_config


def iou(a, b):
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_synthetic_csv_has_the_hospital_csv_format():
    folder, manifest = synthetic_hospital()
    with open(os.path.join(folder, "annotations.csv"), encoding="utf-8") as f:
        header, first = f.readline().rstrip("\r\n"), f.readline()
    assert header == CSV_HEADER
    assert first.startswith("0,")  # the unnamed row counter
    assert '"[(' in first  # the box string is quoted: it holds commas


def test_box_strings_any_corner_order():
    corners = [(30, 40), (10, 40), (10, 20), (30, 20)]  # starts at the bottom right
    points = parse_box_string(str(corners))
    assert [min(p[0] for p in points), min(p[1] for p in points), max(p[0] for p in points),
            max(p[1] for p in points)] == [10, 20, 30, 40]
    assert parse_box_string("[]") == []
    assert parse_box_string(format_box_string([1.5, 2, 3, 4.25])) == [(1.5, 2), (3, 2), (3, 4.25), (1.5, 4.25)]
    for bad in ("[(1, 2), (3)]", "(1, 2, 3, 4)", "[(1, 'a'), (2, 3)]", "[(1, 2), (3, 4)", "[(nan, 1), (2, 3)]"):
        with pytest.raises(ValueError):
            parse_box_string(bad)


def test_loaded_boxes_match_the_ground_truth():
    folder, manifest = synthetic_hospital()
    dicts, report = load_hospital_dicts(os.path.join(folder, "annotations.csv"),
                                        drop_unannotated_in_annotated_clips=False)
    by_frame = {(d["clip_id"], d["frame_id"]): d for d in dicts}
    expected_frames = 0
    for clip in manifest["clips"]:
        if clip["zipped"]:
            continue
        for frame in clip["frames"]:
            expected_frames += 1
            record = by_frame[(clip["video_id"], frame["frame_id"])]
            assert record["patient_id"] == clip["patient"] and record["accession"] == clip["accession"]
            assert (record["height"], record["width"]) == (600, 800)
            got = sorted(a["bbox"] for a in record["annotations"])
            assert got == sorted(frame["boxes"])  # original-frame coordinates, min/max of the points
            for box, truth in zip(sorted(frame["boxes"]), sorted(frame["lesion_boxes"])):
                assert iou(box, truth) > 0.85  # and the points do outline the lesion
            if clip["dicom"]:
                assert record["file_name"].endswith(".dcm") and record["dicom_frame"] == frame["frame_id"]
            else:
                assert os.path.isfile(record["file_name"]) and "dicom_frame" not in record
    assert len(dicts) == expected_frames == report["frames"]
    two = [d for d in dicts if len(d["annotations"]) == 2]
    assert two and all(len(d["csv_rows"]) == 2 for d in two)  # two rows, one frame
    assert all(d["final_diagnosis"] and d["first_50"] in "BM" and d["bx_site"] for d in dicts)


def test_unannotated_frames_of_annotated_clips_are_dropped_on_request():
    folder, manifest = synthetic_hospital()
    csv_file = os.path.join(folder, "annotations.csv")
    kept, _ = load_hospital_dicts(csv_file, drop_unannotated_in_annotated_clips=False)
    dropped, report = load_hospital_dicts(csv_file, drop_unannotated_in_annotated_clips=True)
    noisy = {(c["video_id"], f["frame_id"]) for c in manifest["clips"] if not c["zipped"]
             for f in c["frames"] if f["unannotated"]}
    assert noisy and report["dropped_unannotated_in_annotated_clips"] == len(noisy)
    assert {(d["clip_id"], d["frame_id"]) for d in kept} - {(d["clip_id"], d["frame_id"]) for d in dropped} == noisy
    # frames of empty clips stay: they are the negatives
    empty = [c["video_id"] for c in manifest["clips"] if c["kind"] == "normal"]
    assert empty and all(any(d["clip_id"] == v and not d["annotations"] for d in dropped) for v in empty)


def test_registration_and_patient_level_split(tmp_path):
    folder, _ = synthetic_hospital()
    register_hospital_dataset("hosp_t", os.path.join(folder, "annotations.csv"), seed=3)
    assert {f"hosp_t_{s}" for s in ("train", "val", "test", "all")} <= set(DatasetCatalog.list())
    assert MetadataCatalog.get("hosp_t_train").thing_classes == ["lesion"]
    splits = {s: DatasetCatalog.get(f"hosp_t_{s}") for s in ("train", "val", "test")}
    patients = {s: {d["patient_id"] for d in dicts} for s, dicts in splits.items()}
    assert all(patients.values())
    assert not (patients["train"] & patients["val"] or patients["train"] & patients["test"]
                or patients["val"] & patients["test"])
    everything = DatasetCatalog.get("hosp_t_all")
    assert sum(len(v) for v in splits.values()) == len(everything)
    assert len(patients["train"]) > max(len(patients["val"]), len(patients["test"]))
    # the split JSON goes beside the run and reproduces the split exactly
    written = save_splits_of(["hosp_t_train"], str(tmp_path / "splits"))
    saved = json.load(open(written[0]))
    assert saved["dataset"] == "hosp_t" and set(saved["patients"]) == set().union(*patients.values())
    # the family's facts are in Detectron2's MetadataCatalog, for every member
    assert {MetadataCatalog.get(f"hosp_t_{s}").split_prefix for s in ("train", "val", "test", "all")} == {"hosp_t"}
    assert split_of("hosp_t")["patients"] == saved["patients"]
    assert hospital_report("hosp_t")["frames"] == len(everything)
    assert hospital_report("no_such_prefix") is None and split_of("no_such_prefix") is None
    again = make_patient_split("hosp_t", everything, seed=99, split_file=written[0])
    assert again["patients"] == saved["patients"]
    saved["patients"].pop(sorted(saved["patients"])[0])
    json.dump(saved, open(tmp_path / "short.json", "w"))
    with pytest.raises(ValueError, match="not in the split"):
        make_patient_split("hosp_t", everything, split_file=str(tmp_path / "short.json"))


def _fake_dicts(num_patients, frames_per_patient=3):
    return [{"image_id": f"p{p}/f{f}", "patient_id": f"p{p}", "first_50": "BM"[p % 2],
             "final_diagnosis": "x"} for p in range(num_patients) for f in range(frames_per_patient + p % 4)]


def test_split_ratios_count_patients_and_are_stratified():
    dicts = _fake_dicts(60)
    split = make_patient_split("fake", dicts, seed=0, ratios=(0.6, 0.2, 0.2))
    counts = split["patient_counts"]
    assert abs(counts["train"] - 36) <= 1 and abs(counts["val"] - 12) <= 1 and abs(counts["test"] - 12) <= 1
    for name in ("train", "val", "test"):
        labels = [split["patient_labels"][p] for p, s in split["patients"].items() if s == name]
        assert abs(labels.count("B") - labels.count("M")) <= 1
    for d in dicts:
        assert split["assignment"][d["image_id"]] == split["patients"][d["patient_id"]]
    assert make_patient_split("fake", dicts, seed=0)["patients"] == split["patients"]
    assert any(make_patient_split("fake", dicts, seed=s)["patients"] != split["patients"] for s in (1, 2, 3))


def test_stratification_falls_back_to_final_diagnosis_and_marks_mixed_patients():
    dicts = [{"image_id": "a", "patient_id": "p1", "first_50": "", "final_diagnosis": "Fibroadenoma"},
             {"image_id": "b", "patient_id": "p2", "first_50": "B", "final_diagnosis": "x"},
             {"image_id": "c", "patient_id": "p2", "first_50": "M", "final_diagnosis": "y"},
             {"image_id": "d", "patient_id": "p3", "first_50": "", "final_diagnosis": ""}]
    labels = make_patient_split("fake", dicts)["patient_labels"]
    assert labels == {"p1": "Fibroadenoma", "p2": "mixed", "p3": "unknown"}


def test_builtin_registers_ucla_from_the_datasets_folder(monkeypatch):
    folder, _ = synthetic_hospital()
    monkeypatch.setenv("USTUMOR_DATASETS", os.path.dirname(folder))
    cfg = build_config("", ["DATASETS.HOSPITAL.SPLIT_RATIOS", "[0.5, 0.25, 0.25]"])
    assert "ucla" in register_builtin_datasets(cfg)
    assert MetadataCatalog.get("ucla_all").csv_file == os.path.join(folder, "annotations.csv")
    assert len(DatasetCatalog.get("ucla_all")) > 0


def test_benign_malignant_classes_from_first_50(tmp_path):
    folder, manifest = synthetic_hospital()
    dicts, _ = load_hospital_dicts(os.path.join(folder, "annotations.csv"), class_mode="benign_malignant")
    for d in dicts:
        for a in d["annotations"]:
            assert a["category_id"] == {"B": 0, "M": 1}[d["first_50"]]


def _workspace_frame(manifest):
    clip = clip_of(manifest, zipped=False, nested=False, dicom=None, kind="benign")
    return clip, next(f for f in clip["frames"] if f["boxes"])


def _mapper(crop=True):
    cfg = build_config("", ["INPUT.CROP_ULTRASOUND", str(crop), "INPUT.MIN_SIZE_TRAIN", "(256,)",
                            "INPUT.MAX_SIZE_TRAIN", "1000", "INPUT.RANDOM_FLIP", "none",
                            "INPUT.BRIGHTNESS_RANGE", "[1.0, 1.0]", "INPUT.CONTRAST_RANGE", "[1.0, 1.0]"])
    return UltrasoundDatasetMapper(cfg, is_train=True)


def test_mapper_moves_hospital_boxes_with_the_crop_and_resize():
    folder, manifest = synthetic_hospital()
    dicts, _ = load_hospital_dicts(os.path.join(folder, "annotations.csv"))
    mapper = _mapper()
    checked = {"png": 0, "dicom": 0}
    for clip in manifest["clips"]:
        if clip["zipped"]:
            continue
        sx0, sy0, sx1, sy1 = clip["scan_box"]
        for frame in clip["frames"]:
            if not frame["boxes"]:
                continue
            record = next(d for d in dicts if d["clip_id"] == clip["video_id"] and d["frame_id"] == frame["frame_id"])
            out = mapper(record)
            height, width = out["image"].shape[1:]
            scale = np.array([width / (sx1 - sx0), height / (sy1 - sy0)] * 2)  # ResizeShortestEdge rounds the sides
            expected = np.array(sorted(frame["boxes"])) - [sx0, sy0, sx0, sy0]
            got = np.array(sorted(out["instances"].gt_boxes.tensor.tolist()))
            if clip["dicom"]:  # the ultrasound region gives the scan window exactly
                assert tuple(out["crop_box"]) == tuple(clip["scan_box"])
                assert np.allclose(got, expected * scale, atol=0.01)
                checked["dicom"] += 1
            else:  # the image-based crop finds it within a few pixels
                assert np.abs(np.array(out["crop_box"]) - clip["scan_box"]).max() <= 3
                assert np.allclose(got, expected * scale, atol=3.0)
                checked["png"] += 1
            assert out["image"].shape[1] == 256
            assert (out["original_height"], out["original_width"]) == (600, 800)
    assert checked["png"] >= 5 and checked["dicom"] == 3


def test_crop_boxes_are_cached_on_disk(monkeypatch, tmp_path):
    import ustumor.data.preprocessing.crop_cache as crop_cache_module
    from ustumor.data.preprocessing.crop_cache import CropBoxStore

    folder, manifest = synthetic_hospital()
    clip, frame = _workspace_frame(manifest)
    path = str(tmp_path / "frame.png")
    with open(os.path.join(folder, frame["image"]), "rb") as src, open(path, "wb") as dst:
        dst.write(src.read())
    calls = []
    real = crop_cache_module.compute_crop
    monkeypatch.setattr(crop_cache_module, "compute_crop", lambda *a: calls.append(a[0]) or real(*a))
    store = str(tmp_path / "crops.sqlite")

    def fresh_cache():  # a new process: empty memory, same disk cache
        cache = crop_cache_module.CropCache()
        cache.store = CropBoxStore(store)
        return cache

    first = fresh_cache().crop_entry(path)
    assert calls == [path] and first.source == "image"
    assert np.abs(np.array(first.box) - clip["scan_box"]).max() <= 3
    second = fresh_cache().crop_entry(path)
    assert second == first and calls == [path]  # read back, not recomputed
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the frame was rewritten
    fresh_cache().crop_entry(path)
    assert calls == [path, path]
