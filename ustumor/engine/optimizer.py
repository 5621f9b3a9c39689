"""The optimizer named by ``SOLVER.OPTIMIZER``: Detectron2's SGD, or AdamW.

AdamW is for training from random weights (no pretrained weights offline), where SGD
at detection learning rates converges slowly or diverges at small batches
(``benchmarks/README.md``). Both take Detectron2's per-parameter settings
(``WEIGHT_DECAY_NORM``, ``BIAS_LR_FACTOR``, ``WEIGHT_DECAY_BIAS``) and gradient clipping.
"""
import torch
from detectron2.solver import build_optimizer as build_sgd_optimizer
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping

OPTIMIZERS = ("SGD", "ADAMW")


def build_optimizer(cfg, model):
    name = cfg.SOLVER.OPTIMIZER.upper()
    if name == "SGD":
        return build_sgd_optimizer(cfg, model)
    if name != "ADAMW":
        raise ValueError(f"SOLVER.OPTIMIZER must be one of {OPTIMIZERS}, got {cfg.SOLVER.OPTIMIZER!r}")
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )
    return maybe_add_gradient_clipping(cfg, torch.optim.AdamW)(
        params, lr=cfg.SOLVER.BASE_LR, betas=tuple(cfg.SOLVER.ADAMW_BETAS), weight_decay=cfg.SOLVER.WEIGHT_DECAY
    )
