"""Shipped configs: a stage that starts from another shipped config's checkpoint builds the same
architecture, since a mismatched one would load those weights without an error."""
import glob
import os

import pytest

from conftest import REPO_ROOT
from ustumor.data.preprocessing.normalization import apply_normalization
from ustumor.engine.defaults import merged_config
from ustumor.config import config_value
from ustumor.engine.weights import ARCHITECTURE_KEYS

CONFIGS = sorted(path for path in glob.glob(os.path.join(REPO_ROOT, "configs", "*", "*.yaml")))


def built(path):
    return apply_normalization(merged_config(path))


def stage_pairs():
    """(stage-2 config, the config whose OUTPUT_DIR its MODEL.WEIGHTS lies in)."""
    configs = {path: built(path) for path in CONFIGS}
    by_output = {os.path.normpath(cfg.OUTPUT_DIR): path for path, cfg in configs.items()}
    return [(path, by_output[os.path.normpath(os.path.dirname(cfg.MODEL.WEIGHTS))])
            for path, cfg in configs.items() if cfg.MODEL.WEIGHTS.startswith("output/")]


def test_every_stage_two_config_names_a_shipped_stage_one():
    stage_two = {os.path.relpath(path, REPO_ROOT) for path, _ in stage_pairs()}
    assert {"configs/ucla/faster_rcnn_R_50_FPN_from_busi_3000it.yaml",
            "configs/ucla/faster_rcnn_R_50_FPN_from_busi_scratch_3000it.yaml",
            "configs/ucla/faster_rcnn_MNV2_FPN_from_busi_3000it.yaml",
            "configs/ucla/faster_rcnn_R_50_FPN_from_phantom_cpu_60it.yaml"} <= stage_two


@pytest.mark.parametrize("stage_two, stage_one", stage_pairs(),
                         ids=lambda path: os.path.relpath(path, os.path.join(REPO_ROOT, "configs")))
def test_stage_two_builds_its_stage_one_architecture(stage_two, stage_one):
    after, before = built(stage_two), built(stage_one)
    assert {key: config_value(after, key) for key in ARCHITECTURE_KEYS} == \
        {key: config_value(before, key) for key in ARCHITECTURE_KEYS}
