"""Synthetic breast-ultrasound "phantom" that mimics the public BUSI dataset.

The phantom lets the whole pipeline (dataset registration, cleaning, training,
evaluation) run and be tested without the real data, which cannot be shipped.
Everything here is pure numpy + OpenCV and deterministic given a
:class:`numpy.random.Generator` (or a seed for :func:`write_phantom_dataset`).

Image model, in the order it is applied by :func:`render_phantom`:

1. a smooth *echogenicity* map of the breast layers (bright skin line, dark-ish
   subcutaneous fat, bright fibroglandular tissue with a few fat lobules and
   Cooper-ligament streaks, retromammary fat and striated pectoral muscle);
2. hypoechoic lesions blended into that map (benign: smooth ovals, wider than
   tall; malignant: lobulated / spiculated outlines, sometimes taller than
   wide), with posterior acoustic enhancement (benign) or shadowing
   (malignant) in the columns below them;
3. a depth gain (brighter near the probe), fully developed speckle (the
   magnitude of low-pass filtered complex Gaussian noise, i.e. Rayleigh
   distributed, elongated laterally), a display gamma and a mild blur.

Optionally (``dark=True``) a low-gain frame: dark tissue reaching the scan's
border (fat, a shadow, the far field) above a receiver-noise floor, for the
scan-window crop (:func:`render_screenshots` makes sets of such screenshots).

The lesions are much darker than any normal tissue on purpose: the phantom
must be learnable by a small detector trained from scratch in a few hundred
iterations.
"""
import json
import os
import shutil
from typing import Dict, Iterator, List, NamedTuple, Sequence, Tuple

import cv2
import numpy as np

__all__ = [
    "PHANTOM_CLASSES",
    "render_phantom",
    "add_calipers",
    "embed_in_workspace",
    "embed_mask",
    "PhantomScreenshot",
    "render_screenshots",
    "write_phantom_dataset",
]

# BUSI class folders, in the order used for class fractions and seeding.
PHANTOM_CLASSES = ("benign", "malignant", "normal")
# Name of the folder the BUSI release unpacks to.
BUSI_ROOT_NAME = "Dataset_BUSI_with_GT"
MANIFEST_NAME = "phantom_manifest.json"

# Lesion long-axis extent as a fraction of the image's short side.
_LESION_SIZE_RANGE = (0.08, 0.35)
# Smaller upper bound when two lesions have to share one image.
_TWO_LESION_SIZE_RANGE = (0.08, 0.24)
_TWO_LESION_PROBABILITY = 0.1
# Fractions of benign, malignant and normal images in BUSI.
_BUSI_CLASS_FRACTIONS = (0.55, 0.27, 0.18)
# Pixels kept free between a lesion and the image border / another lesion.
_BORDER_MARGIN = 3
_LESION_GAP = 6
# Dark (low-gain) scans: display gain (a normal scan's is 185-205) and the grey
# level of the receiver-noise floor (the median of its speckle is a little lower).
_DARK_DISPLAY_GAIN = (50.0, 100.0)
_DARK_FLOOR_GREY = (5.0, 10.0)

# Text drawn on the simulated scanner screen (fake, but typical of BUSI).
_VENDORS = ("PHILIPS", "GE", "SIEMENS", "TOSHIBA", "SAMSUNG")
_PROBES = ("L12-5", "L9-3", "ML6-15", "14L5", "L18-4")
_PRESETS = ("Breast", "Br Gen", "SmallParts", "BREAST", "Thyroid")


# --------------------------------------------------------------------------
# Low-level random fields
# --------------------------------------------------------------------------
def _smooth_field(rng: np.random.Generator, height: int, width: int, cells: Tuple[int, int]):
    """Zero-mean, roughly unit-variance random field varying over ~`cells` blobs."""
    coarse = rng.standard_normal((cells[0], cells[1])).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def _smooth_curve(rng: np.random.Generator, width: int, base: float, amplitude: float):
    """A gently undulating horizontal curve (in pixels), used for layer boundaries."""
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)
    curve = np.full(width, base, dtype=np.float32)
    for _ in range(2):
        frequency = rng.uniform(0.3, 1.5)
        phase = rng.uniform(0, 2 * np.pi)
        curve += amplitude * rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * frequency * x + phase)
    return curve


def _speckle_envelope(rng: np.random.Generator, height: int, width: int):
    """Fully developed speckle: Rayleigh-distributed, normalised to unit RMS.

    Low-pass filtering the complex noise sets the speckle grain; the grain is
    wider laterally than axially, as with a real linear probe.
    """
    sigma_lateral = rng.uniform(1.0, 1.6)
    sigma_axial = rng.uniform(0.5, 0.8)
    real = rng.standard_normal((height, width)).astype(np.float32)
    imag = rng.standard_normal((height, width)).astype(np.float32)
    real = cv2.GaussianBlur(real, (0, 0), sigmaX=sigma_lateral, sigmaY=sigma_axial)
    imag = cv2.GaussianBlur(imag, (0, 0), sigmaX=sigma_lateral, sigmaY=sigma_axial)
    envelope = np.sqrt(real * real + imag * imag)
    return envelope / np.sqrt(np.mean(envelope * envelope) + 1e-12)


# --------------------------------------------------------------------------
# Tissue background
# --------------------------------------------------------------------------
def _tissue_echogenicity(rng: np.random.Generator, height: int, width: int):
    """Smooth echogenicity map of the breast layers, values roughly in [0, 1]."""
    rows = np.arange(height, dtype=np.float32)[:, None]
    skin_end = _smooth_curve(rng, width, rng.uniform(0.025, 0.05) * height, 0.005 * height)
    fat_end = _smooth_curve(rng, width, rng.uniform(0.14, 0.3) * height, 0.05 * height)
    gland_end = _smooth_curve(rng, width, rng.uniform(0.72, 0.86) * height, 0.05 * height)
    muscle_start = gland_end + rng.uniform(0.04, 0.08) * height

    # Soft layer transitions avoid unnaturally crisp horizontal lines.
    def step(boundary, softness):
        distance = np.clip((rows - boundary[None, :]) / softness, -30, 30)  # no exp overflow
        return 1.0 / (1.0 + np.exp(-distance))

    in_fat = step(skin_end, 1.5)
    in_gland = step(fat_end, 4.0)
    in_retro_fat = step(gland_end, 4.0)
    in_muscle = step(muscle_start, 2.0)

    fat_level = rng.uniform(0.38, 0.48)
    gland_level = rng.uniform(0.72, 0.88)
    blotches = _smooth_field(rng, height, width, (5, 7))
    gland = gland_level * (1.0 + 0.12 * blotches)
    fat = fat_level * (1.0 + 0.08 * _smooth_field(rng, height, width, (4, 6)))

    # Pectoral muscle: horizontal striations.
    striations = rng.standard_normal((height, 1)).astype(np.float32)
    striations = cv2.GaussianBlur(striations, (0, 0), sigmaX=0.1, sigmaY=1.2)
    muscle = rng.uniform(0.45, 0.55) * (1.0 + 0.35 * np.repeat(striations, width, axis=1))

    skin = rng.uniform(0.9, 1.0)
    tissue = skin * (1 - in_fat) + fat * in_fat
    tissue = tissue * (1 - in_gland) + gland * in_gland
    tissue = tissue * (1 - in_retro_fat) + fat * in_retro_fat
    tissue = tissue * (1 - in_muscle) + muscle * in_muscle

    extras = np.zeros((height, width), dtype=np.float32)
    short_side = min(height, width)
    # Fat lobules inside the gland: darker, but far less than lesions, so that
    # a detector has to learn more than "any dark blob".
    for _ in range(rng.integers(0, 5)):
        center = (int(rng.uniform(0, width)), int(rng.uniform(0.3, 0.75) * height))
        axes = (
            int(rng.uniform(0.03, 0.08) * short_side) + 1,
            int(rng.uniform(0.015, 0.04) * short_side) + 1,
        )
        cv2.ellipse(extras, center, axes, rng.uniform(-20, 20), 0, 360, -0.25, -1)
    # Cooper ligaments: thin bright arcs crossing the fat towards the skin.
    for _ in range(rng.integers(2, 7)):
        center = (int(rng.uniform(0, width)), int(rng.uniform(0.1, 0.35) * height))
        axes = (int(rng.uniform(0.1, 0.3) * width) + 1, int(rng.uniform(0.03, 0.1) * height) + 1)
        start = rng.uniform(180, 260)
        cv2.ellipse(extras, center, axes, rng.uniform(-25, 25), start, start + rng.uniform(40, 90),
                    rng.uniform(0.25, 0.45), 1)
    extras = cv2.GaussianBlur(extras, (0, 0), 1.2)
    return np.clip(tissue + extras, 0.05, None).astype(np.float32)


# --------------------------------------------------------------------------
# Lesions
# --------------------------------------------------------------------------
def _lesion_outline(rng: np.random.Generator, kind: str, long_axis: float):
    """Closed outline (N, 2) of a lesion around (0, 0), in pixels (x, y).

    The outline is a radius function r(theta) around an ellipse. Benign
    lesions only get a faint low-order wobble; malignant ones get lobulation
    (low harmonics) plus narrow spicules, which lowers their solidity.
    """
    num_points = 180
    theta = np.linspace(0, 2 * np.pi, num_points, endpoint=False)
    radius = np.ones(num_points)
    if kind == "benign":
        height_over_width = rng.uniform(0.45, 0.8)  # "wider than tall"
        rotation = rng.uniform(-20, 20)
        for harmonic in (2, 3):
            radius += rng.uniform(0, 0.04) * np.cos(harmonic * theta + rng.uniform(0, 2 * np.pi))
    else:
        height_over_width = rng.uniform(0.7, 1.4)  # sometimes taller than wide
        rotation = rng.uniform(-45, 45)
        # Lobulation (low harmonics) and microlobulation (higher ones).
        for harmonic in range(2, 6):
            amplitude = rng.uniform(0.05, 0.18) / np.sqrt(harmonic - 1)
            radius += amplitude * np.cos(harmonic * theta + rng.uniform(0, 2 * np.pi))
        for harmonic in rng.choice(np.arange(6, 15), size=3, replace=False):
            radius += rng.uniform(0.02, 0.05) * np.cos(harmonic * theta + rng.uniform(0, 2 * np.pi))
        # Spicules: narrow angular bumps sticking out of the boundary.
        for _ in range(rng.integers(5, 13)):
            center = rng.uniform(0, 2 * np.pi)
            width = rng.uniform(0.05, 0.12)
            distance = np.angle(np.exp(1j * (theta - center)))
            radius += rng.uniform(0.2, 0.55) * np.clip(1 - np.abs(distance) / width, 0, None)
        radius += 0.02 * rng.standard_normal(num_points)
        radius = np.clip(radius, 0.3, None)
    points = np.stack([radius * np.cos(theta), height_over_width * radius * np.sin(theta)], axis=1)
    angle = np.deg2rad(rotation)
    rotation_matrix = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = points @ rotation_matrix.T
    # Scale so that the longest bounding-box side equals the requested size.
    extent = (points.max(axis=0) - points.min(axis=0)).max()
    return points * (long_axis / extent)


def _rasterize(points: np.ndarray, height: int, width: int):
    """Fill a float polygon into a {0, 255} uint8 mask with sub-pixel precision."""
    mask = np.zeros((height, width), dtype=np.uint8)
    fixed_point = np.round(points * 16).astype(np.int32)  # shift=4 -> 1/16 px
    cv2.fillPoly(mask, [fixed_point], 255, lineType=cv2.LINE_8, shift=4)
    return mask


def _place_lesion(rng, kind, height, width, size_range, occupied):
    """Sample one lesion mask fully inside the image and clear of `occupied`.

    Returns None if no free position was found in a few tries.
    """
    short_side = min(height, width)
    for _ in range(20):
        outline = _lesion_outline(rng, kind, rng.uniform(*size_range) * short_side)
        low, high = outline.min(axis=0), outline.max(axis=0)
        x_range = (_BORDER_MARGIN - low[0], width - 1 - _BORDER_MARGIN - high[0])
        y_range = (_BORDER_MARGIN - low[1], height - 1 - _BORDER_MARGIN - high[1])
        if x_range[0] >= x_range[1] or y_range[0] >= y_range[1]:
            continue
        # Lesions sit mostly in the glandular layer, i.e. at mid depth.
        preferred_y = (max(y_range[0], 0.25 * height), min(y_range[1], 0.72 * height))
        if preferred_y[0] < preferred_y[1]:
            y_range = preferred_y
        center = np.array([rng.uniform(*x_range), rng.uniform(*y_range)])
        mask = _rasterize(outline + center, height, width)
        if not mask.any():
            continue
        if occupied is not None:
            kernel = np.ones((2 * _LESION_GAP + 1, 2 * _LESION_GAP + 1), np.uint8)
            if (cv2.dilate(mask, kernel) & occupied).any():
                continue
        return mask
    return None


def _add_lesion(rng, tissue, mask, kind):
    """Blend one hypoechoic lesion and its posterior acoustic feature into `tissue`."""
    height, width = tissue.shape
    inside = mask.astype(np.float32) / 255.0
    # A slightly soft edge; malignant margins are less sharp ("indistinct").
    edge_sigma = rng.uniform(0.6, 1.0) if kind == "benign" else rng.uniform(0.8, 1.5)
    alpha = cv2.GaussianBlur(inside, (0, 0), edge_sigma)

    lesion_level = rng.uniform(0.1, 0.2)
    heterogeneity = 0.1 if kind == "benign" else 0.25
    interior = lesion_level * (1.0 + heterogeneity * _smooth_field(rng, height, width, (6, 8)))
    if kind == "malignant" and rng.random() < 0.3:
        # Microcalcifications: a few tiny bright dots.
        ys, xs = np.nonzero(mask)
        for index in rng.integers(0, len(xs), size=rng.integers(1, 5)):
            cv2.circle(interior, (int(xs[index]), int(ys[index])), 1, 0.55, -1)

    # Rim: a thin echogenic capsule (benign) or a thicker echogenic halo
    # (malignant); both appear only sometimes.
    rim = np.zeros_like(inside)
    if rng.random() < (0.5 if kind == "benign" else 0.4):
        thickness = 1 if kind == "benign" else int(rng.integers(2, 5))
        kernel = np.ones((2 * thickness + 1, 2 * thickness + 1), np.uint8)
        rim = (cv2.dilate(mask, kernel) > 0) & (mask == 0)
        rim = cv2.GaussianBlur(rim.astype(np.float32), (0, 0), 0.8) * rng.uniform(0.12, 0.25)

    # Posterior feature: the columns under the lesion, from its lower edge down.
    below = (np.cumsum(inside > 0, axis=0) > 0) & (inside == 0)
    below = cv2.GaussianBlur(below.astype(np.float32), (0, 0), sigmaX=2.5, sigmaY=1.0)
    if kind == "benign" and rng.random() < 0.6:
        posterior_gain = 1.0 + rng.uniform(0.2, 0.45) * below  # enhancement
    elif kind == "malignant" and rng.random() < 0.6:
        posterior_gain = 1.0 - rng.uniform(0.25, 0.5) * below  # shadowing
    else:
        posterior_gain = 1.0

    tissue = (tissue * posterior_gain + rim) * (1 - alpha) + interior * alpha
    return tissue.astype(np.float32)


def _add_dark_regions(rng, tissue, masks):
    """Low-echo tissue reaching the scan's border, as in low-gain frames of fatty breasts.

    One to three of: a fat lobe against the left or right border; an acoustic
    shadow (under a lesion, or from a ligament or rib) running down to the
    bottom border; a strongly attenuated far field along the whole bottom.
    Multiplies ``tissue``; :func:`render_phantom` then adds the noise floor that
    keeps such regions faintly visible, as on a real scanner.
    """
    height, width = tissue.shape
    rows = np.arange(height, dtype=np.float32)[:, None]
    cols = np.arange(width, dtype=np.float32)[None, :]
    kinds = [k for k, p in (("fat", 0.5), ("shadow", 0.5), ("far_field", 0.35)) if rng.random() < p]
    if not kinds:
        kinds = [("fat", "shadow", "far_field")[int(rng.integers(3))]]
    darkness = np.zeros((height, width), np.float32)
    if "fat" in kinds:
        # A large ellipse centred on (or just beyond) a lateral border.
        left = rng.random() < 0.5
        centre_x = width * (rng.uniform(-0.1, 0.05) if left else rng.uniform(0.95, 1.1))
        centre_y = height * rng.uniform(0.35, 0.75)
        axis_x, axis_y = width * rng.uniform(0.2, 0.4), height * rng.uniform(0.3, 0.6)
        inside = ((cols - centre_x) / axis_x) ** 2 + ((rows - centre_y) / axis_y) ** 2 <= 1.0
        lobe = cv2.GaussianBlur(inside.astype(np.float32), (0, 0), 4.0)
        darkness = np.maximum(darkness, rng.uniform(0.85, 0.97) * lobe)
    if "shadow" in kinds:
        # Down to the bottom border, soft at the sides.
        if masks and rng.random() < 0.7:
            # Behind a lesion: every column it covers, from its lower edge down.
            lesion = masks[int(rng.integers(len(masks)))] > 0
            band = ((np.cumsum(lesion, axis=0) > 0) & ~lesion).astype(np.float32)
        else:
            span = int(width * rng.uniform(0.1, 0.35))
            c0 = 0 if rng.random() < 0.3 else int(rng.integers(0, width - span))
            band = np.zeros((height, width), np.float32)
            band[int(height * rng.uniform(0.15, 0.6)):, c0:c0 + span] = 1.0
        band = cv2.GaussianBlur(band, (0, 0), sigmaX=4.0, sigmaY=2.0)
        darkness = np.maximum(darkness, rng.uniform(0.9, 0.98) * band)
    if "far_field" in kinds:
        # Attenuation the time-gain compensation does not make up for.
        start = rng.uniform(0.55, 0.8) * height
        ramp = np.clip((rows - start) / max(1.0, rng.uniform(0.1, 0.2) * height), 0.0, 1.0)
        darkness = np.maximum(darkness, rng.uniform(0.9, 0.98) * ramp)
    return (tissue * (1.0 - darkness)).astype(np.float32)


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------
def render_phantom(
    rng: np.random.Generator, height: int, width: int, kind: str, dark: bool = False
) -> Tuple[np.ndarray, List[np.ndarray]]:
    """Render one synthetic breast-ultrasound scan.

    Args:
        rng: source of all randomness; the same generator state gives the same image.
        height, width: size of the scan in pixels.
        kind: "benign", "malignant" or "normal".
        dark: a low-gain frame (display gain a quarter to a half of a normal
            frame's) with dark tissue reaching the scan's border: one to three
            of a fat lobe at a side, an acoustic shadow down to the bottom and
            an attenuated far field (a lesion there darkens with it). Those
            regions stay dimly visible above the black of the screen (a noise
            floor, grey about 4-10), as on a real scanner. ``False`` draws
            exactly the random numbers it always did.

    Returns:
        image: uint8 (height, width) grey scan.
        masks: one uint8 (height, width) {0, 255} mask per lesion (empty for
            "normal"); lesions never touch the border nor each other.
    """
    if kind not in PHANTOM_CLASSES:
        raise ValueError(f"kind must be one of {PHANTOM_CLASSES}, got {kind!r}")
    height, width = int(height), int(width)
    tissue = _tissue_echogenicity(rng, height, width)

    masks: List[np.ndarray] = []
    if kind != "normal":
        two_lesions = rng.random() < _TWO_LESION_PROBABILITY
        size_range = _TWO_LESION_SIZE_RANGE if two_lesions else _LESION_SIZE_RANGE
        occupied = None
        for _ in range(2 if two_lesions else 1):
            mask = _place_lesion(rng, kind, height, width, size_range, occupied)
            if mask is None:  # no room left for a second lesion
                break
            masks.append(mask)
            occupied = mask if occupied is None else (occupied | mask)
        if not masks:
            raise RuntimeError(f"could not place a lesion in a {height}x{width} image")
        for mask in masks:
            tissue = _add_lesion(rng, tissue, mask, kind)
    if dark:
        tissue = _add_dark_regions(rng, tissue, masks)

    # Depth gain: the near field is brighter, deep tissue attenuated.
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    tissue = tissue * (rng.uniform(1.05, 1.2) - rng.uniform(0.25, 0.4) * rows)

    speckle = _speckle_envelope(rng, height, width)
    # A compressive gamma, like the scanner's log compression, tames the speckle contrast.
    gain = rng.uniform(*_DARK_DISPLAY_GAIN) if dark else rng.uniform(185, 205)
    gamma = rng.uniform(0.6, 0.75)
    if dark:
        # Receiver noise: the darkest tissue still shows as dim speckle, never as the
        # exact black of the screen around the scan.
        floor_grey = rng.uniform(*_DARK_FLOOR_GREY)
        tissue = np.maximum(tissue, (floor_grey / gain) ** (1.0 / gamma))
    display = gain * np.power(np.clip(tissue * speckle, 0, None), gamma)
    display = cv2.GaussianBlur(display, (0, 0), rng.uniform(0.5, 0.8))
    image = np.clip(display + 0.5, 0, 255).astype(np.uint8)
    return image, masks


def add_calipers(
    rng: np.random.Generator, image: np.ndarray, masks: Sequence[np.ndarray]
) -> np.ndarray:
    """Return a copy of `image` with measurement calipers drawn near a lesion.

    BUSI contains near-duplicate images where the sonographer measured the
    lesion: "+" marks just outside its boundary joined by a dotted line. One
    horizontal measurement is always drawn, a vertical one usually. Without
    masks (normal scans) the calipers land somewhere in the middle of the scan.
    The masks are not changed: the calipers are not part of the lesion.
    """
    marked = image.copy()
    height, width = image.shape[:2]
    color = int(rng.integers(215, 256))
    color = color if marked.ndim == 2 else (color,) * marked.shape[2]
    if masks:
        ys, xs = np.nonzero(masks[int(rng.integers(len(masks)))])
        center_x, center_y = int(np.round(xs.mean())), int(np.round(ys.mean()))
        row = xs[ys == center_y] if np.any(ys == center_y) else xs
        column = ys[xs == center_x] if np.any(xs == center_x) else ys
        gap = 3  # the marks sit just outside the boundary, as a sonographer places them
        segments = [((int(row.min()) - gap, center_y), (int(row.max()) + gap, center_y))]
        if rng.random() < 0.7:
            upper, lower = int(column.min()) - gap, int(column.max()) + gap
            segments.append(((center_x, upper), (center_x, lower)))
    else:
        y = int(rng.uniform(0.3, 0.7) * height)
        x0 = int(rng.uniform(0.2, 0.45) * width)
        segments = [((x0, y), (x0 + int(rng.uniform(0.15, 0.35) * width), y))]

    arm = int(rng.integers(3, 6))
    for start, end in segments:
        length = max(abs(end[0] - start[0]), abs(end[1] - start[1]))
        for step in range(0, length + 1, 4):  # dotted line
            t = step / max(length, 1)
            x = int(round(start[0] + t * (end[0] - start[0])))
            y = int(round(start[1] + t * (end[1] - start[1])))
            if 0 <= x < width and 0 <= y < height:
                marked[y, x] = color
        for x, y in (start, end):
            cv2.line(marked, (x - arm, y), (x + arm, y), color, 1)
            cv2.line(marked, (x, y - arm), (x, y + arm), color, 1)
    return marked


def _draw_body_marker(canvas, rng, center, size, color):
    """Small breast pictogram: outline, nipple, probe position, side letter."""
    radius = size // 2
    cv2.circle(canvas, center, radius, color, 1, cv2.LINE_AA)
    cv2.circle(canvas, center, max(2, radius // 6), color, -1, cv2.LINE_AA)
    angle = rng.uniform(0, np.pi)
    offset = rng.uniform(0.2, 0.6) * radius
    probe_center = np.array(center) + offset * np.array([np.cos(angle), -np.sin(angle)])
    direction = np.array([np.cos(angle + np.pi / 2), -np.sin(angle + np.pi / 2)]) * radius * 0.45
    cv2.line(canvas, tuple(np.round(probe_center - direction).astype(int)),
             tuple(np.round(probe_center + direction).astype(int)), (255, 255, 255), 3)
    letter = "R" if rng.random() < 0.5 else "L"
    cv2.putText(canvas, letter, (center[0] - radius, center[1] + radius + 12),
                cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1, cv2.LINE_AA)


def _draw_grey_bar(canvas, rng, x, y, bar_height):
    """Vertical grey-scale bar with a small slider triangle, as on scanner screens."""
    bar_width = 8
    ramp = np.linspace(255, 0, bar_height).astype(np.uint8)[:, None, None]
    canvas[y:y + bar_height, x:x + bar_width] = ramp
    cv2.rectangle(canvas, (x - 1, y - 1), (x + bar_width, y + bar_height), (150, 150, 150), 1)
    slider_y = y + int(rng.uniform(0.2, 0.8) * bar_height)
    triangle = np.array([[x + bar_width + 2, slider_y], [x + bar_width + 8, slider_y - 4],
                         [x + bar_width + 8, slider_y + 4]], np.int32)
    cv2.fillPoly(canvas, [triangle], (230, 200, 60))


def embed_in_workspace(
    rng: np.random.Generator, image: np.ndarray, workspace_hw: Tuple[int, int] = (600, 800)
) -> Tuple[np.ndarray, Tuple[int, int, int, int]]:
    """Place a scan on a simulated scanner screenshot.

    The screen is black with burned-in GUI text (vendor, probe, frame rate,
    MI/TIS, date, preset), a depth scale beside the scan, a grey-scale bar, a
    body-marker pictogram in the margin and sometimes a thin frame around the
    scan window. The scan is shrunk (never enlarged) only if it does not fit
    between the margins, then placed roughly centrally.

    Args:
        rng: source of randomness.
        image: uint8 (H, W) grey or (H, W, 3) scan.
        workspace_hw: (height, width) of the screenshot.

    Returns:
        workspace: uint8 (height, width, 3) RGB screenshot.
        box: (x0, y0, x1, y1), exclusive; ``workspace[y0:y1, x0:x1]`` is
            exactly the (possibly resized) scan in every channel.
    """
    screen_h, screen_w = int(workspace_hw[0]), int(workspace_hw[1])
    # Margins keep room for text above/below and the scale / marker at the sides.
    top, bottom, side = 40, 32, 64
    if screen_h <= top + bottom + 16 or screen_w <= 2 * side + 16:
        raise ValueError(f"workspace {workspace_hw} is too small")
    scan = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    scale = min(
        1.0, (screen_h - top - bottom) / scan.shape[0], (screen_w - 2 * side) / scan.shape[1]
    )
    if scale < 1.0:
        size = (max(1, int(scan.shape[1] * scale)), max(1, int(scan.shape[0] * scale)))
        scan = cv2.resize(scan, size, interpolation=cv2.INTER_AREA)
    scan_h, scan_w = scan.shape[:2]

    # Roughly central: jitter within at most a quarter of the free space.
    slack_x = screen_w - 2 * side - scan_w
    slack_y = screen_h - top - bottom - scan_h
    x0 = side + int(round(slack_x * rng.uniform(0.375, 0.625)))
    y0 = top + int(round(slack_y * rng.uniform(0.2, 0.55)))
    x1, y1 = x0 + scan_w, y0 + scan_h

    canvas = np.zeros((screen_h, screen_w, 3), dtype=np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    white, grey = (225, 225, 225), (170, 170, 170)
    accent = [(230, 220, 90), (120, 220, 230), (225, 225, 225)][int(rng.integers(3))]

    # Header: vendor and institution at the top left, acquisition settings at the top right.
    cv2.putText(canvas, str(rng.choice(_VENDORS)), (10, 20), font, 0.6, white, 1, cv2.LINE_AA)
    date = "{:04d}/{:02d}/{:02d} {:02d}:{:02d}:{:02d}".format(
        int(rng.integers(2012, 2019)), int(rng.integers(1, 13)), int(rng.integers(1, 29)),
        int(rng.integers(8, 18)), int(rng.integers(0, 60)), int(rng.integers(0, 60)))
    cv2.putText(canvas, date, (150, 20), font, 0.4, grey, 1, cv2.LINE_AA)
    settings = "{}  {}Hz  MI {:.1f}  TIS {:.1f}".format(
        rng.choice(_PROBES), int(rng.integers(8, 60)), rng.uniform(0.6, 1.4), rng.uniform(0.1, 0.9))
    cv2.putText(canvas, settings, (screen_w - 300, 20), font, 0.4, accent, 1, cv2.LINE_AA)

    # Text lines close to, but outside, the scan window.
    cv2.putText(canvas, str(rng.choice(_PRESETS)), (x0, y0 - 6), font, 0.4, white, 1, cv2.LINE_AA)
    footer = "2D  G {}  DR {}  FR {}".format(
        int(rng.integers(30, 70)), int(rng.integers(50, 80)), int(rng.integers(10, 40)))
    cv2.putText(canvas, footer, (x0, min(y1 + 16, screen_h - 4)), font, 0.4, grey, 1, cv2.LINE_AA)

    # Depth scale and grey bar on one side, body marker on the other.
    scale_on_right = rng.random() < 0.7
    tick_x = x1 + 3 if scale_on_right else x0 - 8
    depth_cm = rng.uniform(2.5, 5.0)
    for centimetre in range(int(depth_cm) + 1):
        tick_y = y0 + int(round(centimetre / depth_cm * (scan_h - 1)))
        cv2.line(canvas, (tick_x, tick_y), (tick_x + 5, tick_y), white, 1)
        label_x = tick_x + 8 if scale_on_right else tick_x - 12
        cv2.putText(canvas, str(centimetre), (label_x, tick_y + 4), font, 0.35, white, 1,
                    cv2.LINE_AA)
    bar_height = min(150, scan_h)
    bar_x = x1 + 30 if scale_on_right else x0 - 54
    _draw_grey_bar(canvas, rng, bar_x, y0, bar_height)
    marker_size = 36
    marker_x = x0 - side // 2 if scale_on_right else x1 + side // 2
    marker_y = max(y0 + marker_size // 2, y1 - marker_size)
    _draw_body_marker(canvas, rng, (marker_x, marker_y), marker_size, grey)

    if rng.random() < 0.5:  # thin frame around the scan window
        cv2.rectangle(canvas, (x0 - 2, y0 - 2), (x1 + 1, y1 + 1), (90, 90, 90), 1)

    # The scan goes on last so that nothing drawn above can leak into it.
    canvas[y0:y1, x0:x1] = scan
    return canvas, (x0, y0, x1, y1)


def embed_mask(
    mask: np.ndarray, box: Tuple[int, int, int, int], workspace_hw: Tuple[int, int]
) -> np.ndarray:
    """Paste a scan's mask into a workspace exactly where :func:`embed_in_workspace` put the scan.

    Returns a uint8 (height, width) mask with values {0, 255}.
    """
    x0, y0, x1, y1 = box
    out = np.zeros((int(workspace_hw[0]), int(workspace_hw[1])), dtype=np.uint8)
    if mask.shape[:2] != (y1 - y0, x1 - x0):
        # Nearest neighbour keeps the mask binary.
        mask = cv2.resize(mask, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
    out[y0:y1, x0:x1] = np.where(mask > 0, 255, 0).astype(np.uint8)
    return out


# --------------------------------------------------------------------------
# Screenshot sets (scan-window crop tests and benchmarks)
# --------------------------------------------------------------------------
class PhantomScreenshot(NamedTuple):
    """One frame of :func:`render_screenshots`.

    Attributes:
        image: uint8 (H, W, 3) RGB scanner screenshot.
        scan_box: exclusive (x0, y0, x1, y1) of the scan in it.
        lesion_boxes: exclusive (x0, y0, x1, y1) of each lesion's mask in it.
        kind: "benign", "malignant" or "normal".
        dark: rendered with ``render_phantom(..., dark=True)``.
    """

    image: np.ndarray
    scan_box: Tuple[int, int, int, int]
    lesion_boxes: List[Tuple[int, int, int, int]]
    kind: str
    dark: bool


def render_screenshots(
    seed: int,
    num_frames: int,
    dark_fraction: float = 0.0,
    workspace_hw: Tuple[int, int] = (600, 800),
) -> Iterator[PhantomScreenshot]:
    """Phantom scans of many sizes on scanner screenshots, with their true boxes.

    Scan sizes range from about a third of the screen to nearly the largest
    that fits between its margins; classes follow the BUSI fractions. Frame
    ``i`` depends on ``(seed, i, dark_fraction, workspace_hw)`` only, not on
    ``num_frames``; the ``int(dark_fraction * num_frames)`` dark frames are
    spread evenly (every fourth frame for 0.25).
    """
    if not 0.0 <= dark_fraction <= 1.0:
        raise ValueError(f"dark_fraction must be in [0, 1], got {dark_fraction}")
    screen_h, screen_w = int(workspace_hw[0]), int(workspace_hw[1])
    for index in range(int(num_frames)):
        rng = np.random.default_rng([seed, index])
        dark = int((index + 1) * dark_fraction) > int(index * dark_fraction)
        kind = str(rng.choice(PHANTOM_CLASSES, p=_BUSI_CLASS_FRACTIONS))
        height = int(rng.uniform(0.33, 0.87) * screen_h)
        width = int(rng.uniform(0.33, 0.82) * screen_w)
        scan, masks = render_phantom(rng, height, width, kind, dark=dark)
        image, box = embed_in_workspace(rng, scan, workspace_hw)
        lesion_boxes = []
        for mask in masks:
            x, y, w, h = cv2.boundingRect(embed_mask(mask, box, workspace_hw))
            lesion_boxes.append((x, y, x + w, y + h))
        yield PhantomScreenshot(image, tuple(int(v) for v in box), lesion_boxes, kind, dark)


# --------------------------------------------------------------------------
# Dataset writer
# --------------------------------------------------------------------------
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
    class_fractions: Sequence[float] = _BUSI_CLASS_FRACTIONS,
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
