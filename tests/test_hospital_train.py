"""The hospital configs end to end: stage 2 starts from a stage-1 checkpoint, trains, evaluates."""
import json
import os
import subprocess
import sys

import pytest
import torch
from detectron2.data import build_detection_train_loader, get_detection_dataset_dicts
from detectron2.modeling import build_model

from conftest import REPO_ROOT
from hospital_data import synthetic_hospital
from ustumor.data.mapper import UltrasoundDatasetMapper
from ustumor.engine.defaults import build_config

STAGE2 = os.path.join(REPO_ROOT, "configs", "ucla", "faster_rcnn_R_50_FPN_from_busi.yaml")
JOINT = os.path.join(REPO_ROOT, "configs", "busi_ucla", "faster_rcnn_R_50_FPN_joint.yaml")
# small and fast; R18 keeps the checkpoint small. BASE_LR 0: the weights must stay stage 1's.
SMALL = ["MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
         "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "192", "INPUT.MIN_SIZE_TEST", "128",
         "INPUT.MAX_SIZE_TEST", "192", "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2",
         "SOLVER.BASE_LR", "0.0", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()", "SOLVER.MAX_ITER", "2",
         "SOLVER.CHECKPOINT_PERIOD", "100", "TEST.EVAL_PERIOD", "0"]


@pytest.fixture(scope="module")
def datasets_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    os.symlink(synthetic_hospital()[0], root / "UCLA")
    return root


def test_stage2_from_stage1_checkpoint_trains_and_evaluates(datasets_root, tmp_path, monkeypatch):
    monkeypatch.setenv("USTUMOR_DATASETS", str(datasets_root))
    cfg = build_config(STAGE2, SMALL + ["MODEL.WEIGHTS", ""])
    assert cfg.INPUT.CROP_ULTRASOUND and cfg.DATASETS.TRAIN == ("ucla_train",)
    stage1 = str(tmp_path / "stage1_model_best.pth")
    torch.save({"model": build_model(cfg).state_dict()}, stage1)

    env = dict(os.environ, USTUMOR_DATASETS=str(datasets_root), PYTHONPATH=REPO_ROOT)
    out = str(tmp_path / "stage2")

    def train_net(*args):
        command = [sys.executable, os.path.join(REPO_ROOT, "tools", "train_net.py"), "--config-file", STAGE2, *args,
                   "OUTPUT_DIR", out, *SMALL]
        result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        return result.stdout + result.stderr

    train_net("MODEL.WEIGHTS", stage1)
    assert "CROP_ULTRASOUND: true" in open(os.path.join(out, "config.yaml")).read()
    final = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=False)["model"]
    start = torch.load(stage1, map_location="cpu")["model"]
    assert all(torch.equal(final[k], start[k]) for k in start)  # it started from the stage-1 weights
    split = json.load(open(os.path.join(out, "splits", "ucla.json")))
    assert split["dataset"] == "ucla" and split["patients"]

    log = train_net("--eval-only", "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"),
                    "DATASETS.TEST", '("ucla_test",)')
    assert "AP50" in log
    results = json.load(open(os.path.join(out, "inference", "ucla_test", "results.json")))
    assert "AP" in results["bbox"]


def test_joint_config_trains_on_busi_and_hospital_together(datasets_root, tiny_busi, monkeypatch):
    os.symlink(os.path.dirname(tiny_busi), datasets_root / "BUSI")
    try:
        monkeypatch.setenv("USTUMOR_DATASETS", str(datasets_root))
        cfg = build_config(JOINT, SMALL + ["MODEL.WEIGHTS", "", "DATASETS.BUSI.MIN_AREA", "1",
                                           "DATASETS.SPLIT.RATIOS", "[1.0, 0.0, 0.0]"])
        dicts = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=False)  # checks the classes match
        assert {"busi_class" in d for d in dicts} == {True, False}
        batch = next(iter(build_detection_train_loader(cfg, mapper=UltrasoundDatasetMapper(cfg, is_train=True))))
        assert len(batch) == 2 and all(b["image"].shape[0] == 3 for b in batch)
        mismatched = build_config(JOINT, SMALL + ["MODEL.WEIGHTS", "", "DATASETS.BUSI.CLASS_MODE", "benign_malignant"])
        with pytest.raises(Exception, match="thing_classes"):
            get_detection_dataset_dicts(mismatched.DATASETS.TRAIN, filter_empty=False)
    finally:
        os.unlink(datasets_root / "BUSI")
