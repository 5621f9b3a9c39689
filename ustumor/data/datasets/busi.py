"""BUSI (Breast Ultrasound Images, Al-Dhabyani et al. 2020) as Detectron2 dataset dicts.

Layout of the original release, under ``<root>/Dataset_BUSI_with_GT/``::

    benign/benign (N).png        benign/benign (N)_mask.png [_mask_1.png, _mask_2.png]
    malignant/malignant (N).png  ...
    normal/normal (N).png        normal/normal (N)_mask.png  (empty)

Every mask of an image is read; each connected component of at least ``min_area``
pixels becomes one box; a benign or malignant image left without one is bad input
(``DATASETS.ON_BAD_ITEM``), never a negative. Boxes are ``BoxMode.XYXY_ABS`` in
continuous pixel coordinates: pixel (i, j) covers [j, j+1) x [i, i+1), so a component
spanning columns 10..19 gets x0=10, x1=20.
"""
import logging
import os
import re

import cv2
import numpy as np
from detectron2.structures import BoxMode

from ..bad_input import BadInputError, BadInputPolicy
from ..fields import DIAGNOSIS
from ..image_io import read_binary_mask, read_image

logger = logging.getLogger(__name__)

BUSI_SUBDIR = "Dataset_BUSI_with_GT"
BUSI_CLASSES = ("benign", "malignant", "normal")
CLASS_MODES = {"lesion": ["lesion"], "benign_malignant": ["benign", "malignant"]}
# images may be re-exported as JPEG; masks stay lossless PNG
_IMAGE_NAME = re.compile(r"^(?P<stem>(?P<cls>benign|malignant|normal) \((?P<num>\d+)\))\.(png|jpe?g)$", re.I)
_MASK_NAME = re.compile(r"^(?P<stem>.+)_mask(_\d+)?\.png$", re.I)


def busi_class_names(class_mode):
    if class_mode not in CLASS_MODES:
        raise ValueError(f"DATASETS.CLASS_MODE must be one of {sorted(CLASS_MODES)}, got {class_mode!r}")
    return list(CLASS_MODES[class_mode])


def mask_to_boxes(mask, min_area):
    """XYXY_ABS boxes of the 8-connected components with at least ``min_area`` pixels."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    boxes = []
    for label in range(1, count):
        x, y, w, h, area = stats[label]
        if area >= min_area:
            boxes.append([float(x), float(y), float(x + w), float(y + h)])
    return boxes


def find_busi_root(root):
    """Accept either the folder holding ``Dataset_BUSI_with_GT`` or that folder itself."""
    nested = os.path.join(root, BUSI_SUBDIR)
    return nested if os.path.isdir(nested) else root


def _list_class_folder(folder):
    """Image files and, for each image stem, its mask files (sorted)."""
    images, masks = {}, {}
    for name in sorted(os.listdir(folder)):
        mask_match = _MASK_NAME.match(name)
        if mask_match:
            masks.setdefault(mask_match.group("stem"), []).append(name)
            continue
        image_match = _IMAGE_NAME.match(name)
        if image_match:
            images[image_match.group("stem")] = name
    return images, masks


def _natural_key(name):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def load_busi_dicts(root, class_mode="lesion", min_area=20, on_bad_item="error"):
    """Read a BUSI-layout folder into Detectron2 dicts (all images, normals included).

    Each dict has ``file_name, height, width, image_id, annotations`` plus ``diagnosis``
    (the folder: benign, malignant or normal) and ``mask_files``. ``group_id`` is added by
    the split.
    """
    class_names = busi_class_names(class_mode)
    root = find_busi_root(root)
    policy = BadInputPolicy(on_bad_item, source=root)
    dicts = []
    for busi_class in BUSI_CLASSES:
        folder = os.path.join(root, busi_class)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"BUSI folder {folder} not found; see datasets/README.md for the layout")
        images, masks = _list_class_folder(folder)
        for stem in sorted(set(masks) - set(images)):
            policy.handle("mask without image", f"{os.path.join(folder, masks[stem][0])}: mask has no image {stem}.png/.jpg")
        for stem in sorted(images, key=_natural_key):
            image_path = os.path.join(folder, images[stem])
            try:
                record = _load_one(image_path, folder, masks.get(stem, []), busi_class, class_names, min_area)
            except BadInputError as error:
                policy.handle(_reason(error), str(error))
                continue
            record["image_id"] = f"{busi_class}/{images[stem]}"
            dicts.append(record)
    policy.summarize()
    if not dicts:
        raise FileNotFoundError(f"no BUSI images found under {root}")
    return dicts


def _reason(error):
    text = str(error)
    for reason in ("no mask", "size", "distinct values", "decode", "not found", "only specks", "no lesion"):
        if reason in text:
            return reason
    return "bad item"


def _load_one(image_path, folder, mask_names, busi_class, class_names, min_area):
    if not mask_names:
        raise BadInputError(f"{image_path}: image has no mask (expected '<name>_mask.png' beside it)")
    image = read_image(image_path, cv2.IMREAD_UNCHANGED)  # decodes fully: catches corrupt PNGs
    height, width = image.shape[:2]
    category_id = class_names.index(busi_class) if busi_class in class_names else 0  # normals: no boxes
    annotations = []
    foreground = 0  # mask pixels, for the message when no component is big enough
    for mask_name in sorted(mask_names, key=_natural_key):
        mask_path = os.path.join(folder, mask_name)
        mask = read_binary_mask(mask_path)
        if mask.shape != (height, width):
            raise BadInputError(
                f"{mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} does not match "
                f"its image {image_path} ({width}x{height})"
            )
        foreground += int(np.count_nonzero(mask))
        boxes = mask_to_boxes(mask, min_area)
        if busi_class == "normal" and boxes:
            raise BadInputError(f"{mask_path}: an image in normal/ has a lesion in its mask")
        for box in boxes:
            annotations.append(
                {"bbox": box, "bbox_mode": BoxMode.XYXY_ABS, "category_id": category_id, "iscrowd": 0}
            )
    if busi_class != "normal" and not annotations:
        # a lesion image without a box would train as lesion-free: bad input, not a negative
        masks = ", ".join(os.path.join(folder, m) for m in sorted(mask_names, key=_natural_key))
        content = (f"only specks: {foreground} mask pixels, no component of MIN_AREA {min_area} pixels or more"
                   if foreground else "no lesion: the mask is empty")
        raise BadInputError(f"{image_path}: filed under {busi_class}/ but its mask(s) {masks} hold {content}")
    return {
        "file_name": image_path,
        "height": int(height),
        "width": int(width),
        "annotations": annotations,
        DIAGNOSIS: busi_class,
        "mask_files": [os.path.join(folder, m) for m in sorted(mask_names, key=_natural_key)],
    }
