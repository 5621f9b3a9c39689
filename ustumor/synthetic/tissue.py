"""Synthetic breast-ultrasound tissue: one scan of the "phantom" that mimics the public BUSI dataset.

The phantom lets the whole pipeline (dataset registration, cleaning, training,
evaluation) run and be tested without the real data, which cannot be shipped.
Everything here is pure numpy + OpenCV and deterministic given a
:class:`numpy.random.Generator`.

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
scan-window crop (:func:`ustumor.synthetic.screen.render_screenshots` makes sets
of such screenshots).

The lesions are much darker than any normal tissue on purpose: the phantom
must be learnable by a small detector trained from scratch in a few hundred
iterations.
"""
from typing import List, Tuple

import cv2
import numpy as np

__all__ = ["PHANTOM_CLASSES", "BUSI_CLASS_FRACTIONS", "render_phantom"]

# BUSI class folders, in the order used for class fractions and seeding.
PHANTOM_CLASSES = ("benign", "malignant", "normal")
# Fractions of benign, malignant and normal images in BUSI.
BUSI_CLASS_FRACTIONS = (0.55, 0.27, 0.18)

# Lesion long-axis extent as a fraction of the image's short side.
_LESION_SIZE_RANGE = (0.08, 0.35)
# Smaller upper bound when two lesions have to share one image.
_TWO_LESION_SIZE_RANGE = (0.08, 0.24)
_TWO_LESION_PROBABILITY = 0.1
# Pixels kept free between a lesion and the image border / another lesion.
_BORDER_MARGIN = 3
_LESION_GAP = 6
# Dark (low-gain) scans: display gain (a normal scan's is 185-205) and the grey
# level of the receiver-noise floor (the median of its speckle is a little lower).
_DARK_DISPLAY_GAIN = (50.0, 100.0)
_DARK_FLOOR_GREY = (5.0, 10.0)


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
