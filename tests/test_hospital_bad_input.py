"""Every bad-input case of a hospital CSV: a clear error naming the file and row, or a counted skip."""
import logging
import os

import pydicom
import pytest
from detectron2.data import DatasetCatalog

from hospital_data import clip_of, csv_row, synthetic_hospital, write_csv_rows
from ustumor.data.bad_input import BadInputError
from ustumor.data.datasets.hospital import load_hospital_dicts
from ustumor.engine.defaults import build_config


def _sources(tmp_path):
    """A PNG frame, the 3-frame DICOM and a copy of that DICOM without pixel data."""
    folder, manifest = synthetic_hospital()
    clip = clip_of(manifest, zipped=False, nested=False, dicom=None, kind="benign")
    png = os.path.join(folder, clip["frames"][0]["image"])
    dicom = os.path.join(folder, next(c["dicom"] for c in manifest["clips"] if c["dicom"]))
    no_pixels = str(tmp_path / "no_pixels.dcm")
    ds = pydicom.dcmread(dicom)
    del ds.PixelData
    ds.save_as(no_pixels)
    return png, dicom, no_pixels


# (reason counted on skip, bad row); a callable gets (png, dicom, no_pixels)
BAD_ROWS = {
    "malformed box": lambda png, dcm, nop: csv_row(png, "[(410, 300), (450, 340)"),
    "fewer than 2 points": lambda png, dcm, nop: csv_row(png, "[(410, 300)]"),
    "box outside the image": lambda png, dcm, nop: csv_row(png, "[(700, 500), (820, 580)]"),
    "missing image file": lambda png, dcm, nop: csv_row(os.path.join(os.path.dirname(png), "nope.png"), frame_id=1),
    "frame_id past the last DICOM frame": lambda png, dcm, nop: csv_row(dcm, frame_id=3, patient="P2",
                                                                        video="P2_A2_1.mp4"),
    "DICOM without pixel data": lambda png, dcm, nop: csv_row(nop, frame_id=0, patient="P3", video="P3_A3_1.mp4"),
    "duplicate row": lambda png, dcm, nop: csv_row(png, "[(300, 200), (400, 260)]"),
}


def _csv_with_bad_row(tmp_path, bad, encoding="utf-8"):
    png, dicom, no_pixels = _sources(tmp_path)
    good_first = csv_row(png, "[(300, 200), (400, 260)]")
    good_last = csv_row(dicom, "[(460, 247), (500, 275)]", frame_id=1, patient="P2", video="P2_A2_1.mp4")
    rows = [good_first, bad(png, dicom, no_pixels), good_last]
    return write_csv_rows(str(tmp_path / "annotations.csv"), rows, encoding=encoding)


@pytest.mark.parametrize("reason", sorted(BAD_ROWS))
def test_bad_row_stops_with_file_and_row(tmp_path, reason):
    csv_file = _csv_with_bad_row(tmp_path, BAD_ROWS[reason])
    with pytest.raises(BadInputError) as error:
        load_hospital_dicts(csv_file)
    message = str(error.value)
    assert csv_file in message and "row 3:" in message  # header is row 1, the bad row the 2nd data row
    if reason == "duplicate row":
        assert "row 2" in message.split("row 3:")[1]  # names the row it repeats


@pytest.mark.parametrize("reason", sorted(BAD_ROWS))
def test_bad_row_is_skipped_and_counted(tmp_path, reason, caplog):
    csv_file = _csv_with_bad_row(tmp_path, BAD_ROWS[reason])
    with caplog.at_level(logging.WARNING):
        dicts, report = load_hospital_dicts(csv_file, on_bad_row="skip")
    assert report["skipped_rows"] == {reason: 1}
    assert sorted(len(d["annotations"]) for d in dicts) == [1, 1]  # both good rows, unchanged
    assert [d["annotations"][0]["bbox"] for d in dicts] == [[300, 200, 400, 260], [460, 247, 500, 275]]
    assert "skipped 1 bad item" in caplog.text and "row 3" in caplog.text


def _latin1_row(png, dicom, no_pixels):
    other_frame = png.replace("frame_000000", "frame_000001")
    return csv_row(other_frame, "[]", frame_id=1)[:6] + ["Fibroadénome", "Région gauche", "Fibroadénome", "B"]


def test_non_utf8_csv_names_file_and_row(tmp_path):
    csv_file = _csv_with_bad_row(tmp_path, _latin1_row, encoding="latin-1")
    with pytest.raises(BadInputError, match=r"row 3: bytes that are not utf-8") as error:
        load_hospital_dicts(csv_file)
    assert csv_file in str(error.value) and "CSV_ENCODING" in str(error.value)
    dicts, report = load_hospital_dicts(csv_file, on_bad_row="skip")
    assert report["skipped_rows"] == {"non-UTF-8 row": 1} and len(dicts) == 2
    dicts, report = load_hospital_dicts(csv_file, csv_encoding="latin-1",  # or read it as what it is
                                        drop_unannotated_in_annotated_clips=False)
    assert report["skipped_rows"] == {} and any(d["final_diagnosis"] == "Fibroadénome" for d in dicts)


def test_utf8_byte_order_mark_is_accepted(tmp_path):
    png, _, _ = _sources(tmp_path)
    csv_file = write_csv_rows(str(tmp_path / "bom.csv"), [csv_row(png, "[(300, 200), (400, 260)]")],
                              encoding="utf-8-sig")
    dicts, _ = load_hospital_dicts(csv_file)
    assert dicts[0]["annotations"][0]["bbox"] == [300, 200, 400, 260]


@pytest.mark.parametrize("second, expected", [
    (lambda png: csv_row(png, "[]"), "both without a lesion"),
    (lambda png: csv_row(png, "[(10, 10), (20, 20)]", patient="P9"), "has patient 'P9' here but 'P1'"),
])
def test_conflicting_rows_of_one_frame_are_refused(tmp_path, second, expected):
    png, _, _ = _sources(tmp_path)
    csv_file = write_csv_rows(str(tmp_path / "a.csv"), [csv_row(png, "[(300, 200), (400, 260)]"), second(png)])
    with pytest.raises(BadInputError, match=expected):
        load_hospital_dicts(csv_file)


def test_missing_column_is_a_file_error(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text(",coded_mrn,video_id,frame_id,image_path\n0,P1,v,0,x.png\n")
    with pytest.raises(BadInputError, match=r"missing column\(s\) \['coded_accession', 'bounding box'\]"):
        load_hospital_dicts(str(path))


def test_on_bad_row_from_the_config(tmp_path):
    csv_file = _csv_with_bad_row(tmp_path, BAD_ROWS["box outside the image"])
    entry = f'[["cfghosp", "{csv_file}", ""]]'
    build_config("", ["DATASETS.HOSPITAL.REGISTER", entry, "DATASETS.ON_BAD_ITEM", "skip",
                      "DATASETS.HOSPITAL.SPLIT_RATIOS", "[1.0, 0.0, 0.0]"])
    assert len(DatasetCatalog.get("cfghosp_all")) == 2
    build_config("", ["DATASETS.HOSPITAL.REGISTER", entry])  # default: error
    with pytest.raises(BadInputError, match="row 3"):
        DatasetCatalog.get("cfghosp_all")
