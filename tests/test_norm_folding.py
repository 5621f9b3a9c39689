"""MODEL.FOLD_NORMS: in inference each convolution's batch norm is folded into it; the outputs
stay those of the unfolded model, also after new weights are loaded, and training is untouched."""
import os

import pytest
import torch
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model

from conftest import REPO_ROOT
from ustumor.engine.defaults import build_config

CONFIG = os.path.join(REPO_ROOT, "configs", "phantom", "faster_rcnn_R_50_FPN_cpu_300it.yaml")


def model_with(norm, fold):
    cfg = build_config(CONFIG, ["MODEL.WEIGHTS", "", "MODEL.RESNETS.NORM", norm, "MODEL.FOLD_NORMS", str(fold)])
    torch.manual_seed(0)
    return build_model(cfg)


def randomise_norms(model, seed):
    """Norm statistics and affine parameters far from the identity, as after training."""
    generator = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    for name, tensor in state.items():
        if any(name.endswith(s) for s in ("running_mean", "norm.bias")):
            state[name] = torch.randn(tensor.shape, generator=generator) * 0.2
        elif any(name.endswith(s) for s in ("running_var", "norm.weight")):
            state[name] = torch.rand(tensor.shape, generator=generator) + 0.5
    return state


def count_norm_calls(model, run):
    calls = []
    norms = [m for m in model.modules() if isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d))]
    handles = [m.register_forward_hook(lambda *_: calls.append(1)) for m in norms]
    try:
        output = run()
    finally:
        for handle in handles:
            handle.remove()
    return len(calls), output


@pytest.mark.parametrize("norm", ["BN", "FrozenBN"])
def test_folded_inference_equals_the_unfolded_model(norm):
    folded, plain = model_with(norm, True), model_with(norm, False)
    image = torch.randn(1, 3, 96, 128)
    for seed in (1, 2):  # the second load, in eval mode, must not reuse the first fold
        state = randomise_norms(plain, seed)
        for model in (folded, plain):
            model.eval()
            model.load_state_dict(state)
        with torch.no_grad():
            calls, features = count_norm_calls(folded, lambda: folded.backbone(image))
            plain_calls, reference = count_norm_calls(plain, lambda: plain.backbone(image))
        assert calls == 0 and plain_calls == 53  # ResNet-50's norms, all folded
        for level, feature in reference.items():
            scale = feature.abs().max().item()
            assert torch.allclose(features[level], feature, atol=1e-4 * scale, rtol=1e-4), (norm, seed, level)


def test_training_runs_the_norms():
    model = model_with("BN", True).train()
    calls, _ = count_norm_calls(model, lambda: model.backbone(torch.randn(2, 3, 64, 64)))
    assert calls == 53
