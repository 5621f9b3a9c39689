"""SOLVER.OPTIMIZER: Detectron2's SGD or AdamW, with Detectron2's per-parameter settings
and gradient clipping; the from-scratch BUSI config uses AdamW."""
import os

import pytest
import torch
from torch import nn

from conftest import REPO_ROOT
from ustumor.engine.defaults import build_config
from ustumor.engine.optimizer import build_optimizer


def toy_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))


def config(*overrides):
    return build_config("", ["SOLVER.BASE_LR", "0.001", *overrides])


def step(optimizer, model, scale=1.0):
    loss = model(torch.randn(2, 3, 8, 8)).sum() * scale
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def test_adamw_with_decoupled_decay_and_no_decay_on_norm_layers():
    model = toy_model()
    model(torch.zeros(1, 3, 8, 8))  # materialise the lazy layer
    optimizer = build_optimizer(config("SOLVER.OPTIMIZER", "AdamW", "SOLVER.WEIGHT_DECAY", "0.05",
                                       "SOLVER.WEIGHT_DECAY_NORM", "0.0", "SOLVER.ADAMW_BETAS", "[0.8, 0.99]"), model)
    assert isinstance(optimizer, torch.optim.AdamW)
    decay = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    assert decay[id(model[1].weight)] == 0.0 and decay[id(model[0].weight)] == 0.05
    assert all(group["betas"] == (0.8, 0.99) for group in optimizer.param_groups)
    before = model[0].weight.detach().clone()
    step(optimizer, model)
    # Adam's first step moves every weight by about the learning rate
    change = (model[0].weight.detach() - before).abs()
    assert torch.allclose(change, torch.full_like(change, 0.001), rtol=0.2)


def test_sgd_stays_detectron2s():
    optimizer = build_optimizer(config(), toy_model())
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["momentum"] == 0.9


@pytest.mark.parametrize("name", ["SGD", "ADAMW"])
def test_gradient_clipping_applies_to_both(name):
    model = toy_model()
    optimizer = build_optimizer(config("SOLVER.OPTIMIZER", name, "SOLVER.CLIP_GRADIENTS.ENABLED", "True",
                                       "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "norm",
                                       "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "1.0"), model)
    step(optimizer, model, scale=1e6)
    # Detectron2's "norm" clipping is per parameter
    assert all(p.grad.norm() <= 1.0 + 1e-4 for p in model.parameters())


def test_unknown_optimizer_is_a_clear_error():
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER.*'LAMB'"):
        build_optimizer(config("SOLVER.OPTIMIZER", "LAMB"), toy_model())


def test_the_scratch_busi_config_asks_for_random_weights_bn_and_adamw():
    cfg = build_config(os.path.join(REPO_ROOT, "configs", "busi", "faster_rcnn_R_50_FPN_scratch_4500it.yaml"))
    assert (cfg.MODEL.WEIGHTS, cfg.MODEL.RESNETS.NORM, cfg.MODEL.BACKBONE.FREEZE_AT) == ("", "BN", 0)
    assert cfg.SOLVER.OPTIMIZER == "ADAMW" and cfg.DATASETS.TRAIN == ("busi_train",)
