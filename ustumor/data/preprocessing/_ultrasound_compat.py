"""What ``ustumor.data.ultrasound`` was: the scan-window crop
(:mod:`ustumor.data.preprocessing.scan_window`) plus four helpers that only tests used (the
mapper crops with Detectron2's ``CropTransform``). Served at the old path for one release."""
import numpy as np

from . import scan_window
from .scan_window import *  # noqa: F401,F403
from .scan_window import Box, _to_grey as to_grey  # noqa: F401


def __getattr__(name):
    return getattr(scan_window, name)


def to_three_channels(grey: np.ndarray) -> np.ndarray:
    """Replicate an (H, W) or (H, W, 1) grey image into a new (H, W, 3) array."""
    if grey.ndim == 3 and grey.shape[2] == 1:
        grey = grey[:, :, 0]
    if grey.ndim != 2:
        raise ValueError(f"Expected an (H, W) or (H, W, 1) grey image, got shape {grey.shape}")
    return np.repeat(grey[:, :, None], 3, axis=2)


def apply_crop(image: np.ndarray, crop_box: Box) -> np.ndarray:
    """``image[y0:y1, x0:x1]`` for ``crop_box = (x0, y0, x1, y1)``; a view, not a copy."""
    x0, y0, x1, y1 = (int(v) for v in crop_box)
    return image[y0:y1, x0:x1]


def shift_boxes(boxes_xyxy: np.ndarray, crop_box: Box) -> np.ndarray:
    """Move absolute XYXY boxes into the coordinates of a crop and clip them to it.

    Args:
        boxes_xyxy: (N, 4) or (4,) boxes ``x0, y0, x1, y1`` in the frame's
            continuous pixel coordinates (Detectron2's XYXY_ABS).
        crop_box: ``(x0, y0, x1, y1)`` of the crop in the same frame.

    Returns:
        (N, 4) float64 array (a new one) in the crop's coordinates, clipped to
        ``[0, crop_width] x [0, crop_height]``. A box that lies entirely
        outside the crop ends up with zero width or height; callers drop
        those, e.g. ``keep = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])``.
    """
    boxes = np.array(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = (float(v) for v in crop_box)
    boxes -= (x0, y0, x0, y0)
    np.clip(boxes[:, 0::2], 0.0, x1 - x0, out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0.0, y1 - y0, out=boxes[:, 1::2])
    return boxes
