"""tools/prepare_hospital.py, tools/dataset_stats.py and tools/crop_sheets.py on the synthetic hospital."""
import csv
import json
import os
import shutil

import cv2
import numpy as np
import pytest

from conftest import load_tool
from hospital_data import CSV_HEADER, clip_of, csv_row, synthetic_hospital, write_csv_rows
from ustumor.data.bad_input import BadInputError
from ustumor.data.datasets.hospital import load_hospital_dicts


def prepare(folder, out, *extra, exports=None, cases=None):
    args = ["--exports", exports or os.path.join(folder, "exports"),
            "--cases", cases or os.path.join(folder, "cases.csv"),
            "--out", str(out), "--image-root", folder, "--extract-to", str(out.parent / "extracted"),
            "--dicom-root", os.path.join(folder, "dicom"), *extra]
    return load_tool("prepare_hospital").main(args)


def test_prepare_converts_folders_zips_and_dicom(tmp_path, capsys):
    folder, manifest = synthetic_hospital()
    out = tmp_path / "annotations.csv"
    assert prepare(folder, out, "--report", str(tmp_path / "report.json")) == 0
    captured = capsys.readouterr()
    assert out.read_text().splitlines()[0] == CSV_HEADER
    dicts, _ = load_hospital_dicts(str(out), image_root=folder, drop_unannotated_in_annotated_clips=False)
    by_frame = {(d["clip_id"], d["frame_id"]): d for d in dicts}
    assert len(by_frame) == sum(len(c["frames"]) for c in manifest["clips"])  # every clip, the zipped one too
    for clip in manifest["clips"]:
        for frame in clip["frames"]:
            record = by_frame[(clip["video_id"], frame["frame_id"])]
            assert sorted(a["bbox"] for a in record["annotations"]) == sorted(frame["boxes"])
            assert record["patient_id"] == clip["patient"] and record["first_50"] in ("B", "M")
            if clip["dicom"]:
                assert record["file_name"] == os.path.join(folder, clip["dicom"])
            elif clip["zipped"]:
                assert record["file_name"].startswith(str(tmp_path / "extracted"))
                assert os.path.isfile(record["file_name"])
            else:
                assert record["file_name"] == os.path.join(folder, frame["image"])
    # per-clip report, empty clips listed, progress bar
    for clip in manifest["clips"]:
        assert clip["video_id"] in captured.out
    empty = [c["video_id"] for c in manifest["clips"] if c["kind"] == "normal"]
    assert f"{len(empty)} empty clip(s)" in captured.out
    assert all(captured.out.split("empty clip(s)")[1].count(v) == 1 for v in empty)
    assert "clips: 100%" in captured.err
    report = json.load(open(tmp_path / "report.json"))
    assert sum(c.get("deleted_objects", 0) for c in report["clips"]) == 1  # counted, not silently dropped
    # a second run reuses the extracted frames and writes the same CSV
    first = out.read_text()
    assert prepare(folder, out) == 0 and out.read_text() == first


def test_prepare_bad_clip_is_named_or_skipped(tmp_path, capsys):
    folder, manifest = synthetic_hospital()
    with open(os.path.join(folder, "cases.csv")) as f:
        rows = list(csv.reader(f))
    missing = rows.pop(1)  # the first patient's case
    cases = tmp_path / "cases.csv"
    with open(cases, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(BadInputError, match=f"no case-list entry for coded_mrn {missing[0]}"):
        prepare(folder, tmp_path / "a.csv", cases=str(cases))
    assert prepare(folder, tmp_path / "a.csv", "--on-bad", "skip", cases=str(cases)) == 0
    dicts, _ = load_hospital_dicts(str(tmp_path / "a.csv"), image_root=folder)
    assert missing[0] not in {d["patient_id"] for d in dicts} and len({d["patient_id"] for d in dicts}) == 7
    assert "skipped: {'bad clip': 1}" in capsys.readouterr().out


def test_prepare_names_the_xml_of_an_out_of_image_box(tmp_path):
    folder, manifest = synthetic_hospital()
    clip = clip_of(manifest, zipped=False, nested=False, dicom=None, kind="benign")
    copy = tmp_path / "exports" / clip["video_id"]
    shutil.copytree(os.path.join(folder, "exports", clip["video_id"]), copy)
    xml = next(p for p in sorted((copy / "default").glob("*.xml")) if b"<object>" in p.read_bytes())
    text = xml.read_text()
    first_x = text.split("<x>")[1].split("</x>")[0]
    xml.write_text(text.replace(f"<x>{first_x}</x>", "<x>900.00</x>", 1))
    with pytest.raises(BadInputError, match=f"{xml.name}: .* is outside the 800x600 image"):
        prepare(folder, tmp_path / "a.csv", exports=str(tmp_path / "exports"))


@pytest.fixture
def odd_hospital(tmp_path):
    """A CSV over synthetic frames with a tiny box, a box the crop cuts and a black frame."""
    folder, manifest = synthetic_hospital()
    clip = clip_of(manifest, zipped=False, nested=False, dicom=None, kind="benign")
    other = clip_of(manifest, zipped=False, nested=False, dicom=None, kind="malignant")
    sx0, sy0, _, _ = clip["scan_box"]
    black = str(tmp_path / "black.png")
    cv2.imwrite(black, np.zeros((600, 800, 3), np.uint8))
    f0, f1 = (os.path.join(folder, f["image"]) for f in clip["frames"][:2])
    rows = [
        csv_row(f0, "[(300, 200), (304, 206)]", frame_id=0),  # 4x6 px: tiny
        csv_row(f1, f"[({sx0 - 20}, {sy0 + 10}), ({sx0 + 30}, {sy0 + 60})]", frame_id=1),  # reaches into the GUI
        csv_row(black, "[]", frame_id=0, patient="P2", video="P2_A2_1.mp4"),
        csv_row(os.path.join(folder, other["frames"][0]["image"]), "[(400, 250), (450, 300)]", frame_id=0,
                 patient="P3", video="P3_A3_1.mp4", diagnosis="M"),
    ]
    csv_file = write_csv_rows(str(tmp_path / "odd.csv"), rows)
    return ["DATASETS.HOSPITAL.REGISTER", f'[["odd", "{csv_file}", ""]]',
            "DATASETS.HOSPITAL.SPLIT_RATIOS", "[1.0, 0.0, 0.0]"]


def test_dataset_stats_counts_flags_and_plots(tmp_path, capsys, odd_hospital):
    out = tmp_path / "stats"
    assert load_tool("dataset_stats").main(["odd_all", "--crop", "--output", str(out), "--opts", *odd_hospital]) == 0
    printed = capsys.readouterr().out
    stats = json.load(open(out / "stats.json"))["odd_all"]
    assert (stats["images"], stats["annotated"], stats["negatives"], stats["boxes"]) == (4, 3, 1, 3)
    assert (stats["patients"], stats["clips"]) == (3, 3) and stats["boxes_per_class"] == {"lesion": 3}
    assert stats["per_patient"]["P1"] == {"frames": 2, "annotated": 2, "boxes": 2}
    assert stats["per_clip"]["P2_A2_1.mp4"] == {"frames": 1, "annotated": 0, "boxes": 0}
    assert "odd_all: frames per patient: median 1 (min 1, max 2); 1 patient(s) without boxes" in printed
    assert [t["box"] for t in stats["tiny_boxes"]] == [[300, 200, 304, 206]] and stats["tiny_boxes"][0]["csv_row"] == 2
    assert len(stats["crop_failures"]) == 1 and stats["crop_failures"][0].endswith("black.png")
    cut = stats["boxes_cut_by_crop"]
    assert len(cut) == 1 and cut[0]["box"][0] < cut[0]["crop"][0]
    assert "tiny box [300, 200, 304, 206]" in printed and "(CSV row 2)" in printed and "black.png" in printed
    table_row = next(line for line in printed.splitlines() if line.startswith("odd_all"))
    assert table_row.split()[1:5] == ["4", "3", "1", "3"]
    for name in ("box_width.png", "box_height.png", "box_area.png"):
        image = cv2.imread(str(out / name))
        assert image is not None and image.shape[0] > 100


def test_crop_sheets_one_per_patient(tmp_path, capsys, odd_hospital):
    out = tmp_path / "sheets"
    assert load_tool("crop_sheets").main(["--dataset", "odd_all", "--output", str(out), *odd_hospital]) == 0
    printed = capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["P1.png", "P2.png", "P3.png"]
    assert "1 crop failure(s), 1 box(es) cut by the crop" in printed and "black.png" in printed
    sheet = cv2.imread(str(out / "P2.png"))  # the failed crop is framed in red
    assert (sheet[1, :, 2] > 200).mean() > 0.9 and (sheet[1, :, :2] < 50).all()
    assert cv2.imread(str(out / "P1.png")).shape[1] == 2 * 200  # two frames side by side
