"""ValidationLoss: training-mode losses without gradients, BN statistics or random streams moving."""
import itertools

import pytest
import torch
from detectron2.engine import SimpleTrainer
from torch import nn

from ustumor.engine.hooks import ValidationLoss


class LossModel(nn.Module):
    """Returns losses only in training mode, like Detectron2's models, and samples randomly
    (as the RPN does)."""

    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm1d(2)
        self.weight = nn.Parameter(torch.ones(2))
        self.grad_enabled_in_forward = []

    def forward(self, batch):
        if not self.training:
            return [{} for _ in batch]
        self.grad_enabled_in_forward.append(torch.is_grad_enabled())
        x = self.norm(torch.stack(batch))
        torch.rand(1)  # random sampling inside the model
        return {"loss_a": (x * self.weight).square().mean(), "loss_b": self.weight.sum() * 0 + len(batch)}


def test_validation_loss_is_logged_without_side_effects(tmp_path):
    model = LossModel()
    validation = [[torch.tensor([1.0, 2.0]), torch.tensor([3.0, 5.0])], [torch.tensor([0.0, 1.0])] * 3]
    trainer = SimpleTrainer(model, itertools.repeat([torch.randn(2), torch.randn(2)]),
                            torch.optim.SGD(model.parameters(), lr=0.0))
    hook = ValidationLoss(2, model, validation)
    trainer.register_hooks([hook])

    torch.manual_seed(0)
    expected_random = torch.rand(1)
    torch.manual_seed(0)
    running_mean = model.norm.running_mean.clone()
    losses = hook.compute()
    assert torch.equal(torch.rand(1), expected_random)  # the training's random stream did not move
    assert torch.equal(model.norm.running_mean, running_mean)  # BN did not learn from validation data
    assert model.training and model.norm.training  # modes put back
    assert model.grad_enabled_in_forward == [False, False]
    # per-image means: loss_b is the batch size, so (2 * 2 + 3 * 3) / 5 images
    assert losses["validation/loss_b"] == pytest.approx(13 / 5)
    assert losses["validation/total_loss"] == pytest.approx(losses["validation/loss_a"] + 13 / 5)

    trainer.train(0, 4)  # logged at iteration 1 (period 2) and after the last one
    history = trainer.storage.history("validation/total_loss")
    assert [iteration for _, iteration in history.values()] == [1, 4]
    assert history.latest() == pytest.approx(hook.compute()["validation/total_loss"])  # the final model's
