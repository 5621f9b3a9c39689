"""The scanner screen around a phantom scan: calipers, the workspace screenshot
(text, body marker, grey bar) and sets of screenshots with their true boxes, for the
scan-window crop's tests and benchmarks."""
from typing import Iterator, List, NamedTuple, Sequence, Tuple

import cv2
import numpy as np

from .tissue import BUSI_CLASS_FRACTIONS, PHANTOM_CLASSES, render_phantom

__all__ = ["add_calipers", "embed_in_workspace", "embed_mask", "PhantomScreenshot", "render_screenshots"]

# Text drawn on the simulated scanner screen (fake, but typical of BUSI).
_VENDORS = ("PHILIPS", "GE", "SIEMENS", "TOSHIBA", "SAMSUNG")
_PROBES = ("L12-5", "L9-3", "ML6-15", "14L5", "L18-4")
_PRESETS = ("Breast", "Br Gen", "SmallParts", "BREAST", "Thyroid")


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
        kind = str(rng.choice(PHANTOM_CLASSES, p=BUSI_CLASS_FRACTIONS))
        height = int(rng.uniform(0.33, 0.87) * screen_h)
        width = int(rng.uniform(0.33, 0.82) * screen_w)
        scan, masks = render_phantom(rng, height, width, kind, dark=dark)
        image, box = embed_in_workspace(rng, scan, workspace_hw)
        lesion_boxes = []
        for mask in masks:
            x, y, w, h = cv2.boundingRect(embed_mask(mask, box, workspace_hw))
            lesion_boxes.append((x, y, x + w, y + h))
        yield PhantomScreenshot(image, tuple(int(v) for v in box), lesion_boxes, kind, dark)
