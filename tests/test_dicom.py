"""DICOM frames: multi/single frame, RGB/YBR/MONOCHROME, ultrasound regions, errors, and no PHI anywhere."""
import logging
import os
import shutil

import cv2
import numpy as np
import pydicom
import pytest

from conftest import load_tool
from hospital_data import synthetic_hospital
from ustumor.data.bad_input import BadInputError
from ustumor.data.dicom import is_dicom, read_dicom_frame, read_dicom_info
from ustumor.data.image_io import read_frame_grey
from ustumor.synthetic.hospital import PHI_CANARY, fake_patient_tags, render_clip, write_dicom_cine


@pytest.fixture(scope="module")
def clip_frames():
    """Three 600x800 RGB frames of one clip and the scan box."""
    frames, scan_box, _ = render_clip(np.random.default_rng(1), "benign", 3)
    return frames, scan_box


def grey_of(rgb):
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def test_multi_frame_rgb_reads_the_asked_frame(tmp_path, clip_frames):
    frames, scan_box = clip_frames
    path = str(tmp_path / "cine.dcm")
    write_dicom_cine(path, frames, "RGB", scan_box)
    info = read_dicom_info(path)
    assert (info.rows, info.columns, info.num_frames, info.has_pixel_data) == (600, 800, 3, True)
    assert info.region_box == tuple(scan_box)
    for index in (2, 0, 1):
        assert np.array_equal(read_dicom_frame(path, index), grey_of(frames[index]))
    with pytest.raises(BadInputError, match="needs a frame index"):
        read_dicom_frame(path)


def test_ybr_full_is_converted(tmp_path, clip_frames):
    frames, scan_box = clip_frames
    path = str(tmp_path / "ybr.dcm")
    write_dicom_cine(path, frames, "YBR_FULL", scan_box)
    difference = np.abs(read_dicom_frame(path, 1).astype(int) - grey_of(frames[1]).astype(int))
    assert difference.max() <= 3  # YBR <-> RGB rounding only


def test_single_frame_monochrome_and_extensionless(tmp_path, clip_frames):
    frames, _ = clip_frames
    path = str(tmp_path / "IM0001")  # DICOM exports often have no extension
    write_dicom_cine(path, frames[:1], "MONOCHROME2")
    assert is_dicom(path) and not is_dicom(os.path.join(synthetic_hospital()[0], "cases.csv"))
    info = read_dicom_info(path)
    assert info.num_frames == 1 and info.region_box is None
    assert np.array_equal(read_frame_grey(path), grey_of(frames[0]))
    assert np.array_equal(read_frame_grey(path, 0), grey_of(frames[0]))
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "MONOCHROME1"  # 0 is white
    ds.save_as(path)
    assert np.array_equal(read_frame_grey(path), 255 - grey_of(frames[0]))


def test_region_box_prefers_2d_regions(tmp_path, clip_frames):
    frames, scan_box = clip_frames
    path = str(tmp_path / "doppler.dcm")
    doppler_strip = ((0, 500, 800, 590), 3)  # spectral Doppler region below the image
    write_dicom_cine(path, frames[:2], "RGB", scan_box, extra_regions=[doppler_strip])
    assert read_dicom_info(path).region_box == tuple(scan_box)


def test_missing_pixels_and_frames_are_clear_errors(tmp_path, clip_frames):
    frames, scan_box = clip_frames
    path = str(tmp_path / "cine.dcm")
    write_dicom_cine(path, frames, "RGB", scan_box)
    with pytest.raises(BadInputError, match=r"cine.dcm: frame 3 is past the last frame \(the file has 3"):
        read_dicom_frame(path, 3)
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    with pytest.raises(BadInputError, match="cine.dcm: DICOM has no pixel data"):
        read_dicom_frame(path, 0)
    (tmp_path / "junk.dcm").write_bytes(b"not a dicom file")
    with pytest.raises(BadInputError, match="junk.dcm: cannot read as DICOM"):
        read_dicom_info(str(tmp_path / "junk.dcm"))


def test_patient_tags_never_reach_logs_errors_or_outputs(tmp_path, capsys, caplog, monkeypatch):
    """Run everything that touches the synthetic DICOM (its patient tags hold PHI_CANARY) and
    look for the canary in stdout, stderr, logs, exceptions and every file written."""
    folder, manifest = synthetic_hospital()
    dicom_file = os.path.join(folder, next(c["dicom"] for c in manifest["clips"] if c["dicom"]))
    assert PHI_CANARY in pydicom.dcmread(dicom_file).PatientName  # the canary is there to be leaked
    # a patient tag with an invalid value, which pydicom would warn about, quoting it
    bad_value = str(tmp_path / "bad_value.dcm")
    with pytest.warns(UserWarning, match=f"Invalid value for VR DA: '{PHI_CANARY}"):  # how a leak would look
        write_dicom_cine(bad_value, np.zeros((2, 60, 80), np.uint8), "MONOCHROME2",
                         patient=dict(fake_patient_tags("1", "2"), PatientBirthDate=f"{PHI_CANARY}-NOT-A-DATE"))
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    os.symlink(folder, datasets / "UCLA")
    out = tmp_path / "out"
    monkeypatch.setenv("USTUMOR_DATASETS", str(datasets))
    monkeypatch.setenv("USTUMOR_CACHE", str(tmp_path / "cache"))
    errors = []
    caplog.clear()  # writing the invalid value above logged it; reading must not
    capsys.readouterr()
    with caplog.at_level(logging.DEBUG):
        read_dicom_frame(bad_value, 1)
        for action in (lambda: read_dicom_frame(dicom_file, 7), lambda: read_dicom_frame(bad_value, 5)):
            try:
                action()
            except BadInputError as error:
                errors.append(str(error))
        load_tool("prepare_hospital").main(
            ["--exports", os.path.join(folder, "exports"), "--cases", os.path.join(folder, "cases.csv"),
             "--out", str(out / "prepared.csv"), "--image-root", folder, "--dicom-root", os.path.join(folder, "dicom")])
        load_tool("crop_sheets").main(["--dataset", "ucla_all", "--output", str(out / "sheets"),
                                       "INPUT.CROP_ULTRASOUND", "True"])
        load_tool("dataset_stats").main(["ucla_all", "--crop", "--output", str(out / "stats")])
        load_tool("export_coco").main(["ucla_all", str(out / "coco.json"), "--frames-dir", str(out / "frames")])
    captured = capsys.readouterr()
    assert len(errors) == 2 and "ucla_all" in captured.out  # sanity: everything did run
    assert os.path.isfile(out / "coco.json") and os.listdir(out / "sheets") and os.listdir(out / "frames")
    texts = [captured.out, captured.err, caplog.text] + errors
    assert not [t for t in texts if PHI_CANARY in t]
    for directory in (out, tmp_path / "cache"):
        for root, _, files in os.walk(directory):
            for name in files:
                with open(os.path.join(root, name), "rb") as f:
                    assert PHI_CANARY.encode() not in f.read(), os.path.join(root, name)
    shutil.rmtree(out)
