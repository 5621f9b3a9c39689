"""MobileNetV2 (Sandler et al., CVPR 2018) as a Detectron2 backbone, and MobileNetV2-FPN.

Stages are named by the stride they end at, as ResNet's ``res2``..``res5``: the stem (stride 2),
``stage2`` (stride 4), ``stage3`` (8), ``stage4`` (16), ``stage5`` (32). A stage's output is
its last block's: the linear bottleneck (24, 32, 96 channels) at strides 4-16, and at stride 32
the 1x1 convolution to 1280 channels that ends the network. The bottleneck is the whole
representation at its stride (the next block's expansion is a 1x1 convolution of it, as is
FPN's lateral), at a sixth of the expansion's width; the 1280-channel layer is the last one
trained on ImageNet, and keeping it puts every tensor of the ImageNet checkpoint to use.

``build_mobilenet_v2_fpn_backbone`` wraps it in Detectron2's FPN with a max-pooled P6, so the
RPN and box head see p2-p6 at strides 4-64 as with R50-FPN. With
``MODEL.MOBILENET_V2.LOAD_IMAGENET_WEIGHTS`` the backbone starts from ImageNet weights
(:mod:`.mobilenet_v2_weights`); MODEL.WEIGHTS, loaded after the model is built, replaces them.
"""
import math

from detectron2.layers import CNNBlockBase, Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
from fvcore.nn import weight_init
from torch import nn
from torch.nn import functional as F

from .mobilenet_v2_weights import load_imagenet_weights

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
# The paper's Table 2 rows (expansion t, output channels c, blocks n, stride of the first
# block s), grouped by the stage whose stride they end at; stage5 ends with the 1x1 head.
STAGES = {
    "stage2": [(1, 16, 1, 1), (6, 24, 2, 2)],
    "stage3": [(6, 32, 3, 2)],
    "stage4": [(6, 64, 4, 2), (6, 96, 3, 1)],
    "stage5": [(6, 160, 3, 2), (6, 320, 1, 1)],
}
FEATURE_NAMES = ("stem", *STAGES)
GN_GROUPS = 32


def make_norm(norm, channels):
    """Detectron2's ``get_norm``, except that GN takes the largest group count up to 32
    that divides ``channels``: MobileNetV2 has 16-, 24- and 144-channel layers."""
    if norm == "GN":
        return get_norm(lambda c: nn.GroupNorm(math.gcd(GN_GROUPS, c), c), channels)
    return get_norm(norm, channels)


def conv_norm(in_channels, out_channels, kernel_size, *, stride=1, groups=1, norm, activation=None):
    conv = Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups,
                  bias=not norm, norm=make_norm(norm, out_channels), activation=activation)
    weight_init.c2_msra_fill(conv)
    return conv


class ConvNormReLU6(CNNBlockBase):
    """A convolution, its norm and ReLU6: the stem (3x3, stride 2) and the 1x1 head to 1280 channels."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, norm):
        super().__init__(in_channels, out_channels, stride)
        self.conv = conv_norm(in_channels, out_channels, kernel_size, stride=stride, norm=norm, activation=F.relu6)

    @property
    def convs(self):
        """The convolutions' attribute names, in the order the network applies them."""
        return ("conv",)

    def forward(self, x):
        return self.conv(x)


class InvertedResidual(CNNBlockBase):
    """1x1 expansion (absent when ``expansion`` is 1), 3x3 depthwise convolution, linear 1x1
    projection; the input is added back when the shapes allow."""

    def __init__(self, in_channels, out_channels, stride, expansion, norm):
        super().__init__(in_channels, out_channels, stride)
        hidden = in_channels * expansion
        self.expand = conv_norm(in_channels, hidden, 1, norm=norm, activation=F.relu6) if expansion != 1 else None
        self.depthwise = conv_norm(hidden, hidden, 3, stride=stride, groups=hidden, norm=norm, activation=F.relu6)
        self.project = conv_norm(hidden, out_channels, 1, norm=norm)  # no activation: the linear bottleneck
        self.residual = stride == 1 and in_channels == out_channels

    @property
    def convs(self):
        return ("depthwise", "project") if self.expand is None else ("expand", "depthwise", "project")

    def forward(self, x):
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


class MobileNetV2(Backbone):
    """MobileNetV2 at width 1.0, built up to the last stage of ``out_features``."""

    def __init__(self, in_channels=3, norm="FrozenBN", out_features=("stage2", "stage3", "stage4", "stage5"),
                 freeze_at=0):
        """
        Args:
            norm: FrozenBN, BN, SyncBN or GN (see :func:`make_norm`), after every convolution.
            out_features: names of :data:`FEATURE_NAMES` to return.
            freeze_at: freeze the stem (1), the stem and stage2 (2), ... (0: train everything),
                converting their BN to FrozenBN, as Detectron2's ResNet.
        """
        super().__init__()
        unknown = [name for name in out_features if name not in FEATURE_NAMES]
        if unknown or not out_features:
            raise ValueError(f"MODEL.MOBILENET_V2.OUT_FEATURES {list(out_features)}: choose from {FEATURE_NAMES}")
        self._out_features = list(out_features)
        self.stem = ConvNormReLU6(in_channels, STEM_CHANNELS, 3, 2, norm)
        channels, stride = STEM_CHANNELS, 2
        self._out_feature_channels = {"stem": channels}
        self._out_feature_strides = {"stem": stride}
        self.stage_names = []
        last = max(FEATURE_NAMES.index(name) for name in out_features)
        for name in FEATURE_NAMES[1:last + 1]:
            blocks = []
            for expansion, out_channels, count, first_stride in STAGES[name]:
                for i in range(count):
                    block_stride = first_stride if i == 0 else 1
                    blocks.append(InvertedResidual(channels, out_channels, block_stride, expansion, norm))
                    channels, stride = out_channels, stride * block_stride
            if name == "stage5":
                blocks.append(ConvNormReLU6(channels, HEAD_CHANNELS, 1, 1, norm))
                channels = HEAD_CHANNELS
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
            self._out_feature_channels[name] = channels
            self._out_feature_strides[name] = stride
        self.freeze(freeze_at)

    def blocks_in_order(self):
        """``(module path, block)`` of the stem and every block, in the order the network applies them."""
        yield "stem", self.stem
        for name in self.stage_names:
            for i, block in enumerate(getattr(self, name)):
                yield f"{name}.{i}", block

    def freeze(self, freeze_at=0):
        """Freeze the first ``freeze_at`` of the stem and the stages (see ``__init__``)."""
        stages = [[self.stem]] + [list(getattr(self, name)) for name in self.stage_names]
        for blocks in stages[:freeze_at]:
            for block in blocks:
                block.freeze()
        return self

    def forward(self, x):
        outputs = {}
        x = self.stem(x)
        if "stem" in self._out_features:
            outputs["stem"] = x
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs


@BACKBONE_REGISTRY.register()
def build_mobilenet_v2_backbone(cfg, input_shape: ShapeSpec):
    """MobileNetV2 from ``MODEL.MOBILENET_V2.*`` and ``MODEL.BACKBONE.FREEZE_AT``, ImageNet weights loaded if asked."""
    settings = cfg.MODEL.MOBILENET_V2
    backbone = MobileNetV2(input_shape.channels, norm=settings.NORM, out_features=settings.OUT_FEATURES,
                           freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)
    if settings.LOAD_IMAGENET_WEIGHTS:
        load_imagenet_weights(backbone, settings.IMAGENET_WEIGHTS, settings.NORM, cfg.INPUT.FORMAT)
    return backbone


@BACKBONE_REGISTRY.register()
def build_mobilenet_v2_fpn_backbone(cfg, input_shape: ShapeSpec):
    """MobileNetV2 under Detectron2's FPN with ``MODEL.FPN.*``, P6 by max pooling as R50-FPN."""
    return FPN(
        bottom_up=build_mobilenet_v2_backbone(cfg, input_shape),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
