"""Ultrasound preprocessing: find the scan window in a scanner screenshot, crop, convert.

Many breast-ultrasound datasets are screenshots of the scanner's workspace (for
example a Philips iU22 600x800 frame): a black background with burned-in GUI
text, a body-marker pictogram, a grey-scale bar and depth tick marks around
the actual scan. :func:`crop_ultrasound_window` returns the scan's box so that
the detector sees (and is evaluated on) the scan only.

Everything here is a pure function of its arguments (numpy + OpenCV only);
counting and logging the frames where no scan window is found is left to the
caller, see :class:`CropFailureCounter`.

Boxes are ``(x0, y0, x1, y1)`` in pixels with exclusive ``x1, y1``:
``image[y0:y1, x0:x1]`` is the crop, and for continuous XYXY boxes (Detectron2's
convention) the crop covers ``[x0, x1] x [y0, y1]``.

Why not the simple rule "count non-zero pixels per row / column outward from
the centre, stop below 250"? It cuts dark frames (low gain, large hypoechoic
areas: many scan rows have fewer than 250 non-zero pixels) and it keeps GUI
text that sits next to the scan. Here the scan is found as a large, compact
blob in a downscaled density map and its edges are then placed at full
resolution on the background gap that separates the scan from the GUI.
"""
import logging
import math
from typing import NamedTuple, Optional, Tuple

import cv2
import numpy as np

__all__ = [
    "CropResult",
    "CropFailureCounter",
    "crop_ultrasound_window",
    "crop_ultrasound_window_or_full",
    "apply_crop",
    "shift_boxes",
    "to_grey",
    "to_three_channels",
]

Box = Tuple[int, int, int, int]

# Analysis is done on a copy whose long side is about this many pixels
# (600x800 -> 150x200): fast, and large enough to keep a 2-3 px gap visible
# after the full-resolution refinement.
_ANALYSIS_LONG_SIDE = 200
# A 4x4 block counts as "signal" if at least this fraction of its pixels is
# above the background level. Low on purpose: dark, low-gain scans have
# many exactly-black pixels between speckle grains.
_MIN_BLOCK_DENSITY = 0.1
# Structures thinner than this (text lines, tick marks, grey bar, pictogram
# outlines) are removed before looking for the scan blob.
_GUI_STROKE_PX = 24
# Plausible scan blob, relative to the frame.
_MIN_SCAN_SIDE_FRACTION = 0.1
_MIN_SCAN_AREA_FRACTION = 0.02
_MIN_SCAN_FILL = 0.3  # blob area / its box area; a sector fan is about 0.5
_MAX_SCAN_ASPECT = 4.0
# A frame whose outer ring is mostly signal has no workspace border: it is
# already cropped (e.g. BUSI) and the full frame is the scan.
_NO_BORDER_RING_FRACTION = 0.6
# Full-resolution edge refinement (see _walk_out_to_edge).
_GAP_LINE_FILL = 0.03  # a line with less signal than this is background
_MAX_BRIDGED_GAP_PX = 12  # dark band inside the scan that may be stepped over
_BRIDGE_RUN_PX = 6  # ... if at least this many scan-like lines follow it
_BRIDGE_FILL_RATIO = 0.6  # "scan-like": fill >= this times the scan's typical fill


class CropResult(NamedTuple):
    """Result of :func:`crop_ultrasound_window_or_full`.

    Attributes:
        box: ``(x0, y0, x1, y1)`` of the scan, exclusive ``x1, y1``; the full
            frame ``(0, 0, W, H)`` when ``ok`` is False.
        ok: False when no plausible scan window was found and ``box`` is only
            the full-frame fallback. An already-cropped image (no workspace
            border) is a success: its box is the full frame and ``ok`` is True.
    """

    box: Box
    ok: bool


def to_grey(image: np.ndarray) -> np.ndarray:
    """Convert an (H, W), (H, W, 1) or BGR (H, W, 3) uint8 image to (H, W) grey.

    Screenshots are often stored as 3 equal channels; those are returned as
    one of their channels (identical to the weighted conversion, just cheaper).
    A grey input is returned as is (not copied).
    """
    if image.ndim == 2:
        return image
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"Expected an (H, W), (H, W, 1) or (H, W, 3) image, got shape {image.shape}")
    if image.shape[2] == 1:
        return image[:, :, 0]
    blue = image[:, :, 0]
    # A strided subsample rejects real colour images cheaply before the full comparison.
    if (
        np.array_equal(blue[::16, ::16], image[::16, ::16, 1])
        and np.array_equal(blue[::16, ::16], image[::16, ::16, 2])
        and np.array_equal(blue, image[:, :, 1])
        and np.array_equal(blue, image[:, :, 2])
    ):
        return np.ascontiguousarray(blue)
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2GRAY)


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


def crop_ultrasound_window(image: np.ndarray, background_level: int = 4) -> Box:
    """Box of the ultrasound scan in a scanner screenshot, or the full frame.

    Same as ``crop_ultrasound_window_or_full(image, background_level).box``;
    use that function when the caller must know that nothing was found.

    Args:
        image: uint8 (H, W) grey or (H, W, 3) BGR frame.
        background_level: grey values up to this are workspace background.

    Returns:
        ``(x0, y0, x1, y1)`` with exclusive ``x1, y1``.
    """
    return crop_ultrasound_window_or_full(image, background_level).box


def crop_ultrasound_window_or_full(image: np.ndarray, background_level: int = 4) -> CropResult:
    """Find the scan window of a scanner screenshot; fall back to the full frame.

    Steps, all deterministic and without side effects:

    1. threshold at ``background_level`` and downscale (area average) to a
       density map of about 150x200 for a 600x800 frame;
    2. a frame whose outer ring is mostly signal is already cropped: full frame, ok;
    3. close the "has signal" map to join dark speckle, then open it to remove
       thin GUI structures (text lines, tick marks, grey bar, pictogram);
    4. pick the connected blob that looks most like a scan (large, compact,
       not too elongated, near the centre) and join blobs stacked above or
       below it (a scan split by a dark horizontal band);
    5. at full resolution, walk from inside the blob outward, row by row and
       then column by column, and put each edge at the first background line;
       text, tick marks and frame lines sit beyond such a gap.

    Sector / curvilinear scans get the bounding box of the fan (the outermost
    one or two pixels of its thin corners may be cut).

    Args:
        image: uint8 (H, W) grey or (H, W, 3) BGR frame.
        background_level: grey values up to this are workspace background.

    Returns:
        :class:`CropResult` ``(box, ok)``. ``ok`` is False (and ``box`` the
        full frame) when no plausible scan region is found, e.g. an all-black
        frame or one with GUI only.
    """
    if image.dtype != np.uint8:
        raise TypeError(f"Expected a uint8 image, got {image.dtype}")
    grey = to_grey(image)
    height, width = grey.shape
    full_frame = (0, 0, width, height)
    if height < 8 or width < 8:
        return CropResult(full_frame, False)

    _, signal = cv2.threshold(grey, int(background_level), 255, cv2.THRESH_BINARY)
    factor = max(1, int(round(max(height, width) / _ANALYSIS_LONG_SIDE)))
    small_w, small_h = max(1, width // factor), max(1, height // factor)
    density = cv2.resize(signal, (small_w, small_h), interpolation=cv2.INTER_AREA)
    has_signal = (density >= int(round(_MIN_BLOCK_DENSITY * 255))).astype(np.uint8)

    if _ring_fraction(has_signal) >= _NO_BORDER_RING_FRACTION:
        return CropResult(full_frame, True)

    blob_box = _find_scan_blob(has_signal, factor)
    if blob_box is None:
        return CropResult(full_frame, False)

    # Back to full resolution; small pixel i covers [i * scale, (i + 1) * scale).
    scale_x, scale_y = width / small_w, height / small_h
    bx, by, bw, bh = blob_box
    coarse = (
        int(math.floor(bx * scale_x)),
        int(math.floor(by * scale_y)),
        min(width, int(math.ceil((bx + bw) * scale_x))),
        min(height, int(math.ceil((by + bh) * scale_y))),
    )
    # The scan's typical fill, for telling a dark band inside it from a gap.
    typical_fill = float(density[by + bh // 4: by + bh - bh // 4, bx + bw // 4: bx + bw - bw // 4].mean()) / 255.0
    box = _refine_box(signal, coarse, typical_fill, margin=2 * factor + 4)
    x0, y0, x1, y1 = box
    if (x1 - x0) < _MIN_SCAN_SIDE_FRACTION * width or (y1 - y0) < _MIN_SCAN_SIDE_FRACTION * height:
        box = coarse  # the refinement went astray; the blob's box is still close
    return CropResult(tuple(int(v) for v in box), True)


def _ring_fraction(mask: np.ndarray) -> float:
    """Fraction of non-zero pixels on the outermost rows and columns of a mask."""
    ring = np.concatenate([mask[0], mask[-1], mask[1:-1, 0], mask[1:-1, -1]])
    return float(np.count_nonzero(ring)) / max(1, ring.size)


def _find_scan_blob(has_signal: np.ndarray, factor: int) -> Optional[Tuple[int, int, int, int]]:
    """(x, y, w, h) of the most scan-like blob in a small binary map, or None."""
    small_h, small_w = has_signal.shape
    open_size = max(3, int(round(_GUI_STROKE_PX / factor)))
    # Close first: in a low-gain scan a third of the blocks can be empty, and
    # opening alone would shred it. Text glued to the scan by the closing is
    # trimmed again by the full-resolution refinement.
    closed = cv2.morphologyEx(has_signal, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    opened = cv2.morphologyEx(closed, cv2.MORPH_OPEN, np.ones((open_size, open_size), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    if count <= 1:
        return None
    x, y, w, h, area = (stats[1:, i].astype(np.float64) for i in range(5))
    fill = area / (w * h)
    aspect = np.maximum(w / h, h / w)
    plausible = (
        (w >= _MIN_SCAN_SIDE_FRACTION * small_w)
        & (h >= _MIN_SCAN_SIDE_FRACTION * small_h)
        & (area >= _MIN_SCAN_AREA_FRACTION * small_w * small_h)
        & (fill >= _MIN_SCAN_FILL)
        & (aspect <= _MAX_SCAN_ASPECT)
    )
    if not plausible.any():
        return None
    # Prefer large blobs, and among similar ones the central one (screens put the scan
    # in the middle; side panels and thumbnails are off-centre).
    dx = (x + w / 2 - small_w / 2) / (small_w / 2)
    dy = (y + h / 2 - small_h / 2) / (small_h / 2)
    centrality = 1.0 - 0.5 * np.minimum(1.0, np.hypot(dx, dy) / math.sqrt(2))
    score = np.where(plausible, area * centrality, -1.0)
    best = int(np.argmax(score))
    x0, y0, x1, y1 = x[best], y[best], x[best] + w[best], y[best] + h[best]

    # Join large blobs stacked above / below: a dark tissue layer (fat, shadow)
    # can cut a low-gain scan in two. Text blocks are thinner than 2 strokes.
    fragment = (
        (area >= 0.5 * _MIN_SCAN_AREA_FRACTION * small_w * small_h)
        & (np.minimum(w, h) >= 2 * open_size)
        & (fill >= _MIN_SCAN_FILL)
    )
    fragment[best] = False
    max_gap = max(2.0, 0.06 * small_h)
    merged = True
    while merged:
        merged = False
        for i in np.flatnonzero(fragment):
            overlap = min(x1, x[i] + w[i]) - max(x0, x[i])
            gap = max(y[i] - y1, y0 - (y[i] + h[i]))
            if overlap >= 0.7 * min(w[i], x1 - x0) and w[i] >= 0.5 * (x1 - x0) and gap <= max_gap:
                x0, y0 = min(x0, x[i]), min(y0, y[i])
                x1, y1 = max(x1, x[i] + w[i]), max(y1, y[i] + h[i])
                fragment[i] = False
                merged = True
    return int(x0), int(y0), int(x1 - x0), int(y1 - y0)


def _refine_box(signal: np.ndarray, coarse: Box, typical_fill: float, margin: int) -> Box:
    """Place the edges of a coarse scan box on the background gaps around the scan.

    Rows first, over the middle 80% of the coarse columns (which keeps side
    text, tick labels and frame lines out of the row profiles), then columns
    over the refined rows.
    """
    height, width = signal.shape
    x0, y0, x1, y1 = coarse
    inset_x = int(min(max(16, 0.1 * (x1 - x0)), 40))
    inset_y = int(min(max(16, 0.1 * (y1 - y0)), 40))
    trim = (x1 - x0) // 10
    cols = slice(x0 + trim, x1 - trim)

    def rows_fill(first, last):  # fill of rows first..last, inclusive, in walk order
        step = 1 if last >= first else -1
        lines = signal[first:last + step if last + step >= 0 else None:step, cols]
        return np.count_nonzero(lines, axis=1) / max(1, lines.shape[1])

    # Start a little inside the blob: its edge may include GUI pieces merged in
    # by the coarse analysis; walk outward to at most `margin` beyond it.
    top_start = min(y0 + inset_y, (y0 + y1) // 2)
    bottom_start = max(y1 - 1 - inset_y, (y0 + y1) // 2)
    top_end, bottom_end = max(0, y0 - margin), min(height - 1, y1 - 1 + margin)
    new_y0 = top_start - _walk_out_to_edge(rows_fill(top_start, top_end), typical_fill) + 1
    new_y1 = bottom_start + _walk_out_to_edge(rows_fill(bottom_start, bottom_end), typical_fill)
    if new_y0 > top_start:  # the start line itself was background: keep the coarse edge
        new_y0 = y0
    if new_y1 <= bottom_start:
        new_y1 = y1

    rows = slice(new_y0, new_y1)

    def cols_fill(first, last):
        step = 1 if last >= first else -1
        lines = signal[rows, first:last + step if last + step >= 0 else None:step]
        return np.count_nonzero(lines, axis=0) / max(1, lines.shape[0])

    left_start = min(x0 + inset_x, (x0 + x1) // 2)
    right_start = max(x1 - 1 - inset_x, (x0 + x1) // 2)
    left_end, right_end = max(0, x0 - margin), min(width - 1, x1 - 1 + margin)
    new_x0 = left_start - _walk_out_to_edge(cols_fill(left_start, left_end), typical_fill) + 1
    new_x1 = right_start + _walk_out_to_edge(cols_fill(right_start, right_end), typical_fill)
    if new_x0 > left_start:
        new_x0 = x0
    if new_x1 <= right_start:
        new_x1 = x1
    return new_x0, new_y0, new_x1, new_y1


def _walk_out_to_edge(fill: np.ndarray, typical_fill: float) -> int:
    """Number of lines, from the first (inside) outward, that belong to the scan.

    The walk stops at the first background line (fill below
    ``_GAP_LINE_FILL``), unless that gap is short and followed by several
    lines as full as the scan itself: a dark band inside a low-gain scan,
    not the gap between the scan and a text line (text is much sparser).
    """
    bridge_fill = max(_GAP_LINE_FILL, _BRIDGE_FILL_RATIO * typical_fill)
    is_gap = fill < _GAP_LINE_FILL
    n = len(fill)
    inside = 0
    i = 0
    while i < n:
        if not is_gap[i]:
            inside = i + 1
            i += 1
            continue
        gap_end = i
        while gap_end < n and is_gap[gap_end]:
            gap_end += 1
        after = fill[gap_end:gap_end + _BRIDGE_RUN_PX]
        if gap_end - i <= _MAX_BRIDGED_GAP_PX and len(after) == _BRIDGE_RUN_PX and bool((after >= bridge_fill).all()):
            i = gap_end
            continue
        break
    return inside


class CropFailureCounter:
    """Counts frames where no scan window was found and warns about them.

    Keeps the pure crop functions free of logging. Each process (e.g. each
    DataLoader worker) has its own counter. The first ``log_first`` failures are
    logged with their file name, then one warning every ``log_every`` failures.

    Example::

        counter = CropFailureCounter()
        box, ok = crop_ultrasound_window_or_full(grey)
        counter.record(ok, file_name)
    """

    def __init__(self, logger: Optional[logging.Logger] = None, log_first: int = 10, log_every: int = 100):
        self.logger = logger or logging.getLogger(__name__)
        self.log_first = int(log_first)
        self.log_every = max(1, int(log_every))
        self.total = 0
        self.failures = 0

    def record(self, ok: bool, file_name: str = "") -> None:
        """Count one frame; warn if it failed (first ``log_first``, then every ``log_every``-th)."""
        self.total += 1
        if ok:
            return
        self.failures += 1
        if self.failures <= self.log_first or self.failures % self.log_every == 0:
            self.logger.warning(
                "No ultrasound scan window found%s; using the full frame (%d of %d frames so far)",
                f" in {file_name}" if file_name else "", self.failures, self.total,
            )

    def summary(self) -> str:
        return f"ultrasound crop: {self.failures} of {self.total} frames used the full-frame fallback"
