"""End-to-end: tools/train_net.py trains, resumes and evaluates, as a user runs it."""
import json
import os
import subprocess

import pytest
import torch

from conftest import REPO_ROOT, train_net_command
from ustumor.synthetic import write_phantom_dataset

CONFIG = os.path.join(REPO_ROOT, "configs", "phantom", "faster_rcnn_R_50_FPN_cpu_300it.yaml")
SMALL = ["INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "160", "INPUT.MIN_SIZE_TEST", "128",
         "INPUT.MAX_SIZE_TEST", "160", "DATALOADER.NUM_WORKERS", "0", "SOLVER.CHECKPOINT_PERIOD", "2",
         "SOLVER.WARMUP_ITERS", "2", "SOLVER.STEPS", "()", "TEST.EVAL_PERIOD", "0"]


@pytest.fixture(scope="module")
def phantom_env(tmp_path_factory):
    datasets = tmp_path_factory.mktemp("datasets")
    write_phantom_dataset(str(datasets / "phantom"), num_images=30, seed=0, image_size=(128, 160))
    return dict(os.environ, USTUMOR_DATASETS=str(datasets), PYTHONPATH=REPO_ROOT)


def train_net(env, *args):
    result = subprocess.run(train_net_command(CONFIG, *args), env=env, capture_output=True, text=True, cwd=REPO_ROOT,
                            timeout=600)
    return result.returncode, result.stdout + result.stderr


def saved_iteration(path):
    return torch.load(path, map_location="cpu", weights_only=False)["iteration"]


@pytest.mark.slow
def test_train_resume_and_eval_only(phantom_env, tmp_path):
    out = str(tmp_path / "run")
    code, log = train_net(phantom_env, "OUTPUT_DIR", out, "SOLVER.MAX_ITER", "4", *SMALL)
    assert code == 0, log[-3000:]
    assert saved_iteration(os.path.join(out, "model_final.pth")) == 3
    assert os.path.exists(os.path.join(out, "config.yaml"))
    split = json.load(open(os.path.join(out, "splits", "phantom.json")))
    assert set(split["assignment"].values()) == {"train", "val", "test"}

    # TEST.EXPECTED_RESULTS (Detectron2's verify_results) checks the final evaluation: piou <= 1 fails this one
    code, log = train_net(phantom_env, "--resume", "OUTPUT_DIR", out, "SOLVER.MAX_ITER", "6", *SMALL,
                          "TEST.EXPECTED_RESULTS", '[["penalized_iou", "piou", 2.0, 0.5]]')
    assert code != 0 and "Result verification failed" in log, log[-3000:]
    assert "Starting training from iteration 4" in log
    assert saved_iteration(os.path.join(out, "model_final.pth")) == 5

    code, log = train_net(phantom_env, "--eval-only", "OUTPUT_DIR", out, *SMALL,
                          "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"), "DATASETS.TEST", '("phantom_test",)',
                          "TEST.EXPECTED_RESULTS", '[["penalized_iou", "piou", 0.5, 0.5]]')  # any piou in [0, 1]
    assert code == 0, log[-3000:]
    assert "Results verification passed" in log
    # the training run's config stays; the evaluation's is written beside it
    assert "phantom_test" not in open(os.path.join(out, "config.yaml")).read()
    assert "phantom_test" in open(os.path.join(out, "config_eval.yaml")).read()
    assert "Evaluation results for phantom_test" in log and "AP50" in log
    with open(os.path.join(out, "log.txt")) as f:  # logged, so also in the run's log file
        assert "Evaluation results for phantom_test" in f.read()
    results = json.load(open(os.path.join(out, "inference", "phantom_test", "results.json")))
    assert set(results["bbox"]) >= {"AP", "AP50", "AP75"}  # NaN when a 6-iteration model detects nothing


@pytest.mark.slow
def test_training_without_a_test_set_has_no_model_best_and_no_warning(phantom_env, tmp_path):
    out = str(tmp_path / "run")
    code, log = train_net(phantom_env, "OUTPUT_DIR", out, "SOLVER.MAX_ITER", "2", "DATASETS.TEST", "()", *SMALL)
    assert code == 0, log[-3000:]
    assert os.path.exists(os.path.join(out, "model_final.pth"))
    assert not [name for name in os.listdir(out) if name.startswith("model_best")]
    assert "was not computed" not in log


def test_expected_results_need_one_test_set(phantom_env, tmp_path):
    code, log = train_net(phantom_env, "--eval-only", "OUTPUT_DIR", str(tmp_path / "run"), *SMALL,
                          "DATASETS.TEST", '("phantom_val", "phantom_test")',
                          "TEST.EXPECTED_RESULTS", '[["penalized_iou", "piou", 0.5, 0.5]]')
    assert code != 0 and "TEST.EXPECTED_RESULTS checks the results of one test set" in log, log[-3000:]


def test_unreachable_model_zoo_weights_give_a_clear_error(phantom_env, tmp_path):
    url = "detectron2://COCO-Detection/faster_rcnn_R_50_FPN_3x/137849458/model_final_280758.pkl"
    env = dict(phantom_env, https_proxy="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9")  # force offline
    code, log = train_net(env, "OUTPUT_DIR", str(tmp_path / "run"), "SOLVER.MAX_ITER", "1",
                          "MODEL.WEIGHTS", url, *SMALL)
    assert code != 0
    assert "MODEL.WEIGHTS" in log and "offline" in log and url in log


@pytest.mark.slow
def test_weights_of_another_architecture_give_a_clear_error(phantom_env, tmp_path):
    stage_one = str(tmp_path / "stage_one")
    code, log = train_net(phantom_env, "OUTPUT_DIR", stage_one, "SOLVER.MAX_ITER", "1", *SMALL)
    assert code == 0, log[-3000:]
    weights = os.path.join(stage_one, "model_final.pth")
    # the same tensors, the stride moved from the 1x1 to the 3x3 convolution: loads, computes something else
    code, log = train_net(phantom_env, "--eval-only", "OUTPUT_DIR", str(tmp_path / "other"), *SMALL,
                          "MODEL.WEIGHTS", weights, "MODEL.RESNETS.STRIDE_IN_1X1", "False")
    assert code != 0
    assert "ArchitectureMismatchError" in log and weights in log
    assert "MODEL.RESNETS.STRIDE_IN_1X1 was True, this config has False" in log
    assert os.path.join(stage_one, "config.yaml") in log
    # a training setting is not architecture: fine-tuning at another LR starts
    code, log = train_net(phantom_env, "OUTPUT_DIR", str(tmp_path / "stage_two"), *SMALL, "SOLVER.MAX_ITER", "1",
                          "MODEL.WEIGHTS", weights, "SOLVER.BASE_LR", "0.001")
    assert code == 0, log[-3000:]
