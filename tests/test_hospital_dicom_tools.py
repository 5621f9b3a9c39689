"""Every command a hospital user runs, on a hospital set stored as DICOM cines.

``--eval-only`` and the picture tools run as subprocesses, as a user runs them, on the
phantom-trained model (tests/phantom_model.py) and a synthetic hospital export whose clips
are all multi-frame DICOM files, so several frames share one ``file_name``.
"""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, run_train_net
from phantom_model import CONFIG, SMALL_MODEL, run_tool_on, trained_phantom_model
from ustumor.synthetic.hospital import write_synthetic_hospital

pytestmark = pytest.mark.slow  # the module's fixture trains and evaluates a model

NUM_PATIENTS = 7
HOSPITAL = ["INPUT.CROP_ULTRASOUND", "True", "DATASETS.TRAIN", '("ucla_train",)', "DATASETS.TEST", '("ucla_all",)',
            "TEST.BOOTSTRAP.NUM_SAMPLES", "20"]


@pytest.fixture(scope="module")
def dicom_hospital(tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom_hospital")
    manifest = write_synthetic_hospital(str(root / "UCLA"), num_patients=NUM_PATIENTS, frames_per_clip=2, seed=3,
                                        dicom_patients=range(NUM_PATIENTS))
    assert all(clip["dicom"] for clip in manifest["clips"])
    return str(root), manifest


@pytest.fixture(scope="module")
def evaluated(dicom_hospital, tmp_path_factory):
    """(phantom model, run folder) after ``train_net.py --eval-only`` on ucla_all."""
    root, _ = dicom_hospital
    phantom = trained_phantom_model()
    run_dir = str(tmp_path_factory.mktemp("dicom_eval"))
    run_train_net(root, CONFIG, "--eval-only", "MODEL.WEIGHTS", phantom.weights, "OUTPUT_DIR", run_dir, *SMALL_MODEL,
                  "MODEL.DEVICE", "cpu", *HOSPITAL)
    return phantom, run_dir


def frames_in_csv(manifest):
    return sum(len(clip["frames"]) for clip in manifest["clips"])


def test_eval_only_on_dicom_cines_reports_patients_and_clips(evaluated, dicom_hospital):
    _, manifest = dicom_hospital
    _, run_dir = evaluated
    results = json.load(open(os.path.join(run_dir, "inference", "ucla_all", "results.json")))
    patients = results["patient_level"]
    clips = results["clip_level"]
    assert patients["num_positive"] + patients["num_negative"] == NUM_PATIENTS
    assert clips["num_positive"] + clips["num_negative"] == len(manifest["clips"])
    assert clips["num_negative"] == sum(clip["kind"] == "normal" for clip in manifest["clips"])
    per_image = json.load(open(os.path.join(run_dir, "inference", "ucla_all", "per_image.json")))
    assert len(per_image) == results["settings"]["num_images"]
    assert all(entry["file_name"].endswith(".dcm") and "dicom_frame" in entry and entry["clip_id"]
               for entry in per_image)


def test_picture_tools_and_report_run_on_dicom_cines(evaluated, dicom_hospital, tmp_path):
    root, manifest = dicom_hospital
    phantom, run_dir = evaluated
    pictures = os.path.join(run_dir, "visualization", "ucla_all")
    outcomes = run_tool_on(phantom, "visualize_predictions.py", pictures, "outcomes.json", "--dataset", "ucla_all",
                           *HOSPITAL, datasets_root=root)
    drawn = [name for name in os.listdir(pictures) if name.endswith(".png") and name != "contact_sheet.png"]
    # one picture per frame, although the frames of a clip share one DICOM file
    results = json.load(open(os.path.join(run_dir, "inference", "ucla_all", "results.json")))
    assert len(drawn) == len(outcomes["images"]) == results["settings"]["num_images"]
    assert all("_frame" in name for name in drawn)

    cams = os.path.join(run_dir, "gradcam", "ucla_all")
    index = run_tool_on(phantom, "gradcam.py", cams, "gradcam.json", "--dataset", "ucla_all", "--max-images", "3",
                        *HOSPITAL, datasets_root=root)
    assert len({entry["image"] for entry in index["images"]}) >= 1
    assert all(os.path.isfile(os.path.join(cams, entry["file"])) for entry in index["images"])

    env = dict(os.environ, USTUMOR_DATASETS=root)
    tools = {
        "crop_sheets.py": ["--config-file", CONFIG, "--dataset", "ucla_all", "--output", str(tmp_path / "sheets"),
                           *SMALL_MODEL, *HOSPITAL],
        "dataset_stats.py": ["ucla_all", "--crop", "--config-file", CONFIG, "--output", str(tmp_path / "stats"),
                             "--opts", *SMALL_MODEL, *HOSPITAL],
        "report.py": [run_dir],
    }
    for tool, args in tools.items():
        result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools", tool), *args], env=env,
                                capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
        assert result.returncode == 0, tool + ": " + result.stdout[-2000:] + result.stderr[-3000:]
    assert len(os.listdir(tmp_path / "sheets")) == NUM_PATIENTS
    stats = json.load(open(tmp_path / "stats" / "stats.json"))
    assert stats["ucla_all"]["images"] == frames_in_csv(manifest) - stats["ucla_all"]["load_report"].get(
        "dropped_unannotated_in_annotated_clips", 0)
    assert stats["ucla_all"]["crop_failures"] == []
    page = open(os.path.join(run_dir, "report.html")).read()
    assert "clip_level" in page and "patient_level" in page
