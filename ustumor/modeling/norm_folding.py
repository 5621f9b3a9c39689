"""Inference with each convolution's batch norm folded into the convolution (``MODEL.FOLD_NORMS``).

In inference a batch norm (BN with running statistics, or FrozenBN) is a fixed per-channel
affine map, so ``norm(conv(x))`` equals one convolution with scaled weights and a bias. ResNet
has 53 such norms; folding them spared 5-8% of a CPU inference (``benchmarks/README.md``).
Training is untouched: the folded weights are computed only in eval mode, cached, and
recomputed whenever a weight or statistic changes (a checkpoint load, a training step).
"""
import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, FrozenBatchNorm2d

__all__ = ["FoldedNormConv2d", "fold_norms_in_inference"]


def _foldable(norm):
    if isinstance(norm, FrozenBatchNorm2d):
        return True
    return (isinstance(norm, torch.nn.modules.batchnorm._BatchNorm) and norm.track_running_stats
            and norm.running_var is not None)


class FoldedNormConv2d(Conv2d):
    """Detectron2's ``Conv2d`` whose norm is folded into its weights in eval mode."""

    def forward(self, x):
        if self.training or not _foldable(self.norm):
            return super().forward(x)
        weight, bias = self._folded()
        x = F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def _folded(self):
        norm = self.norm
        sources = [self.weight, self.bias, norm.weight, norm.bias, norm.running_mean, norm.running_var]
        # a loaded checkpoint or an optimizer step bumps a tensor's version; a layout or
        # device change makes a new tensor
        key = tuple((t.data_ptr(), t._version) if t is not None else None for t in sources)
        cached = self.__dict__.get("_folded_cache")
        if cached is None or cached[0] != key:
            with torch.no_grad():
                scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
                weight = self.weight * scale.reshape(-1, 1, 1, 1)
                bias = norm.bias - norm.running_mean * scale
                if self.bias is not None:
                    bias = bias + self.bias * scale
                channels_last = self.weight.is_contiguous(memory_format=torch.channels_last)
                weight = weight.contiguous(memory_format=torch.channels_last if channels_last
                                           else torch.contiguous_format)
            cached = (key, weight, bias)
            self.__dict__["_folded_cache"] = cached  # not a buffer: never saved in checkpoints
        return cached[1], cached[2]


def fold_norms_in_inference(model):
    """Make every Detectron2 ``Conv2d`` of ``model`` that has a batch norm fold it in eval mode.
    Returns how many convolutions that concerns."""
    count = 0
    for module in model.modules():
        if type(module) is Conv2d and module.norm is not None and _foldable(module.norm):
            module.__class__ = FoldedNormConv2d  # the same module, parameters and state-dict keys
            count += 1
    return count
