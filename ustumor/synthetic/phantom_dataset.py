"""A phantom dataset on disk in the layout of the BUSI release (images, lesion masks,
near-duplicates with calipers and a manifest), deterministic given a seed."""
import json
import os
import shutil
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np

from .screen import add_calipers, embed_in_workspace, embed_mask
from .tissue import BUSI_CLASS_FRACTIONS, PHANTOM_CLASSES, render_phantom

__all__ = ["BUSI_ROOT_NAME", "MANIFEST_NAME", "write_phantom_dataset"]

# Name of the folder the BUSI release unpacks to.
BUSI_ROOT_NAME = "Dataset_BUSI_with_GT"
MANIFEST_NAME = "phantom_manifest.json"


def _allocate(total: int, fractions: Sequence[float]) -> List[int]:
    """Split `total` into integer parts proportional to `fractions` (largest remainder)."""
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.ndim != 1 or np.any(fractions < 0) or fractions.sum() <= 0:
        raise ValueError(f"invalid fractions {fractions}")
    exact = total * fractions / fractions.sum()
    counts = np.floor(exact).astype(int)
    for index in np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]:
        counts[index] += 1
    return counts.tolist()


def _jitter_size(rng: np.random.Generator, image_size: Tuple[int, int]) -> Tuple[int, int]:
    """Per-image size around the nominal one (BUSI image sizes vary a little)."""
    height = int(round(image_size[0] * rng.uniform(0.86, 1.17)))
    width = int(round(image_size[1] * rng.uniform(0.81, 1.13)))
    return height, width


def write_phantom_dataset(
    out_dir: str,
    num_images: int,
    seed: int,
    image_size: Tuple[int, int] = (256, 320),
    workspace: bool = False,
    duplicate_fraction: float = 0.1,
    class_fractions: Sequence[float] = BUSI_CLASS_FRACTIONS,
    overwrite: bool = False,
    dark_fraction: float = 0.0,
) -> Dict[str, object]:
    """Write a phantom dataset in the layout of the BUSI release.

    Layout::

        out_dir/Dataset_BUSI_with_GT/<class>/<class> (N).png
        out_dir/Dataset_BUSI_with_GT/<class>/<class> (N)_mask.png      first lesion
        out_dir/Dataset_BUSI_with_GT/<class>/<class> (N)_mask_1.png    second lesion, ...
        out_dir/phantom_manifest.json

    N counts from 1 within each class; normal images get one all-zero mask.

    Args:
        out_dir: output folder (created if needed).
        num_images: total number of images written, near-duplicates included.
        seed: everything written is a deterministic function of the arguments.
        image_size: nominal (height, width) of a scan; each scan's size is
            jittered around it (about -14%..+17% and -19%..+13%).
        workspace: embed every scan and mask in a 600x800 scanner screenshot
            (RGB images) instead of writing the bare scan (grey images).
        duplicate_fraction: fraction of the written images that are
            near-duplicates of another image of the same class (same scan with
            calipers and a slight brightness change; identical masks).
        class_fractions: fractions of benign, malignant and normal images.
        overwrite: replace an existing non-empty Dataset_BUSI_with_GT folder
            (it is deleted first) instead of raising FileExistsError.
        dark_fraction: probability that a scan is rendered dark (low gain,
            dark tissue reaching its border; see :func:`render_phantom`); its
            near-duplicate is dark too. 0 writes exactly what it always did.

    Returns:
        dict with "counts" (images per class), "num_images",
        "num_near_duplicate_pairs" and "dataset_dir".
    """
    if num_images < 0:
        raise ValueError("num_images must be >= 0")
    if len(class_fractions) != len(PHANTOM_CLASSES):
        raise ValueError(f"class_fractions needs one value per class {PHANTOM_CLASSES}")
    if not 0.0 <= duplicate_fraction <= 0.5:
        # Each duplicate needs its own original.
        raise ValueError("duplicate_fraction must be in [0, 0.5]")
    if not 0.0 <= dark_fraction <= 1.0:
        raise ValueError(f"dark_fraction must be in [0, 1], got {dark_fraction}")
    dataset_dir = os.path.join(out_dir, BUSI_ROOT_NAME)
    if os.path.isdir(dataset_dir) and os.listdir(dataset_dir):
        if not overwrite:
            raise FileExistsError(f"{dataset_dir} exists and is not empty")
        shutil.rmtree(dataset_dir)
    workspace_hw = (600, 800)

    class_counts = _allocate(num_images, class_fractions)
    duplicate_counts = _allocate(int(round(duplicate_fraction * num_images)), class_counts) \
        if num_images > 0 else [0] * len(PHANTOM_CLASSES)

    records, pairs = [], []
    for class_index, class_name in enumerate(PHANTOM_CLASSES):
        class_dir = os.path.join(dataset_dir, class_name)
        os.makedirs(class_dir, exist_ok=True)
        total = class_counts[class_index]
        num_duplicates = min(duplicate_counts[class_index], total // 2)
        num_originals = total - num_duplicates
        # Shuffle the numbering so that a duplicate's number says nothing about its partner.
        order_rng = np.random.default_rng([seed, class_index, 0])
        numbers = order_rng.permutation(total) + 1
        duplicated = order_rng.choice(num_originals, size=num_duplicates, replace=False)
        duplicated = set(duplicated.tolist())

        duplicate_slot = num_originals
        for original_index in range(num_originals):
            # One generator per scan: a scan does not change when other counts do.
            scan_rng = np.random.default_rng([seed, class_index, 1, original_index])
            height, width = _jitter_size(scan_rng, image_size)
            # Its own generator: the other scans stay as they are whatever dark_fraction is.
            dark = bool(np.random.default_rng([seed, class_index, 2, original_index]).random()
                        < dark_fraction)
            image, masks = render_phantom(scan_rng, height, width, class_name, dark=dark)
            workspace_seed = int(scan_rng.integers(2**62))
            variants = [(int(numbers[original_index]), image)]
            if original_index in duplicated:
                # Same scan, measured: calipers plus a slight gain change.
                gain = scan_rng.uniform(0.95, 1.05)
                brighter = np.clip(image.astype(np.float32) * gain + 0.5, 0, 255).astype(np.uint8)
                measured = add_calipers(scan_rng, brighter, masks)
                variants.append((int(numbers[duplicate_slot]), measured))
                duplicate_slot += 1

            files = []
            for number, scan in variants:
                stem = f"{class_name} ({number})"
                lesion_masks = masks if masks else [np.zeros_like(image)]
                box = None
                if workspace:
                    # Same screen for both variants, as when one exam is saved twice.
                    screen_rng = np.random.default_rng(workspace_seed)
                    scan, box = embed_in_workspace(screen_rng, scan, workspace_hw)
                    lesion_masks = [embed_mask(mask, box, workspace_hw) for mask in lesion_masks]
                    scan = cv2.cvtColor(scan, cv2.COLOR_RGB2BGR)  # cv2.imwrite expects BGR
                image_file = f"{class_name}/{stem}.png"
                mask_files = [
                    f"{class_name}/{stem}_mask{'' if index == 0 else f'_{index}'}.png"
                    for index in range(len(lesion_masks))
                ]
                _imwrite(os.path.join(dataset_dir, image_file), scan)
                for mask_file, mask in zip(mask_files, lesion_masks):
                    _imwrite(os.path.join(dataset_dir, mask_file), mask)
                record = {
                    "file": image_file,
                    "class": class_name,
                    "num_lesions": len(masks),
                    "mask_files": mask_files,
                    "scan_size": [int(height), int(width)],
                    "dark": dark,
                }
                if box is not None:
                    record["scan_box"] = [int(v) for v in box]
                records.append(record)
                files.append(image_file)
            if len(files) == 2:
                pairs.append(files)

    records.sort(key=lambda r: (PHANTOM_CLASSES.index(r["class"]), _number_of(r["file"])))
    manifest = {
        "seed": int(seed),
        "num_images": int(num_images),
        "image_size": [int(v) for v in image_size],
        "workspace": bool(workspace),
        "workspace_hw": list(workspace_hw) if workspace else None,
        "duplicate_fraction": float(duplicate_fraction),
        "class_fractions": [float(v) for v in class_fractions],
        "dark_fraction": float(dark_fraction),
        "near_duplicates": pairs,
        "images": records,
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, MANIFEST_NAME), "w") as f:
        json.dump(manifest, f, indent=1)
    return {
        "counts": dict(zip(PHANTOM_CLASSES, (int(c) for c in class_counts))),
        "num_images": int(num_images),
        "num_near_duplicate_pairs": len(pairs),
        "dataset_dir": dataset_dir,
    }


def _number_of(file_name: str) -> int:
    """N in '<class>/<class> (N).png'."""
    return int(file_name.rsplit("(", 1)[1].split(")", 1)[0])


def _imwrite(path: str, array: np.ndarray) -> None:
    if not cv2.imwrite(path, array):
        raise IOError(f"could not write {path}")
