"""Initial weights: an error that says what to do when offline, and one when the weights were
trained under an architecture the config does not build."""
import logging
import os
import urllib.error

from detectron2.utils.file_io import PathManager

from ..config import config_value
from .defaults import merged_config

logger = logging.getLogger(__name__)

# Keys under which a checkpoint's tensors load without an error yet compute something else
# (or, for the anchors, predict for other anchors) when they differ from the training run's.
ARCHITECTURE_KEYS = (
    "MODEL.META_ARCHITECTURE", "MODEL.BACKBONE.NAME", "MODEL.RESNETS.DEPTH", "MODEL.RESNETS.STRIDE_IN_1X1",
    "MODEL.RESNETS.NUM_GROUPS", "MODEL.RESNETS.WIDTH_PER_GROUP", "MODEL.RESNETS.RES5_DILATION",
    "MODEL.FPN.FUSE_TYPE", "MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD", "INPUT.FORMAT", "INPUT.MIN_MAX_STRETCH",
    "MODEL.ANCHOR_GENERATOR.SIZES", "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "MODEL.ROI_BOX_HEAD.POOLER_TYPE",
)


class WeightsUnavailableError(RuntimeError):
    pass


def explain_unreachable_weights(weights, error):
    return WeightsUnavailableError(
        f"MODEL.WEIGHTS={weights!r} could not be fetched ({error}). This machine seems to be offline. "
        "Download the file elsewhere and set MODEL.WEIGHTS to its local path, or train from scratch "
        "with MODEL.WEIGHTS \"\" and a BN/GN config (e.g. configs/phantom/faster_rcnn_R_50_FPN_cpu_300it.yaml): "
        "FrozenBN with random weights does not train."
    )


def fetch_weights(weights):
    """Local path of ``weights`` (downloading a URL once), or a clear error."""
    try:
        return PathManager.get_local_path(weights)
    except (urllib.error.URLError, OSError, ConnectionError) as error:
        raise explain_unreachable_weights(weights, error) from error


class ArchitectureMismatchError(ValueError):
    pass


def check_architecture_matches(cfg, weights_path):
    """Compare ``cfg`` with the config a ustumor run saved beside ``weights_path``
    (``config.yaml`` of its output folder); weights without one are not checked."""
    trained_path = os.path.join(os.path.dirname(os.path.abspath(weights_path)), "config.yaml")
    if not os.path.isfile(trained_path):
        return
    try:
        trained = merged_config(trained_path)
    except Exception as error:  # an unreadable or foreign config.yaml must not block training
        logger.warning(f"Not checking MODEL.WEIGHTS against {trained_path}, which cannot be read: {error}")
        return
    differing = [(key, config_value(trained, key), config_value(cfg, key)) for key in ARCHITECTURE_KEYS
                 if _comparable(config_value(trained, key)) != _comparable(config_value(cfg, key))]
    if differing:
        listed = "; ".join(f"{key} was {was!r}, this config has {now!r}" for key, was, now in differing)
        raise ArchitectureMismatchError(
            f"MODEL.WEIGHTS={weights_path!r} was trained under {trained_path}, whose architecture differs: {listed}. "
            "Its tensors would load without an error and compute something else. Fine-tune with a config "
            "built on the one it was trained with (_BASE_), e.g. configs/ucla/"
            "faster_rcnn_R_50_FPN_from_busi_scratch_3000it.yaml after the from-scratch BUSI config, "
            "or set these keys to the checkpoint's values.")


def _comparable(value):
    """Lists and tuples alike (a YAML round trip turns one into the other)."""
    if isinstance(value, (list, tuple)):
        return tuple(_comparable(item) for item in value)
    return value


def check_initial_weights(checkpointer, cfg, resume):
    """Before ``resume_or_load``: unless a checkpoint will be resumed instead, fetch
    ``MODEL.WEIGHTS`` and check it was trained under the architecture ``cfg`` builds."""
    weights = cfg.MODEL.WEIGHTS
    if weights and not (resume and checkpointer.has_checkpoint()):
        check_architecture_matches(cfg, fetch_weights(weights))
