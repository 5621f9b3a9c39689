"""The scan-window crop: find the scan in a scanner screenshot.

Many breast-ultrasound datasets are screenshots of the scanner's workspace (for
example a Philips iU22 600x800 frame): a black background with burned-in GUI
text, a body-marker pictogram, a grey-scale bar and depth tick marks around
the actual scan. :func:`crop_ultrasound_window` returns the scan's box so that
the detector sees (and is evaluated on) the scan only.

The functions here are pure (numpy + OpenCV only, no global state, no
logging); counting and logging the frames where no scan window is found is
left to the caller, see :class:`CropFailureCounter`.

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
# Full-resolution edge refinement (see _place_edges).
_EDGE_LEVEL_RATIO = 0.3  # signal there: above this times the scan's mean signal level, ...
_MAX_EDGE_LEVEL = 12  # ... but at most this (and at least the background level)
_GAP_LINE_FILL = 0.03  # a line with less signal than this is background, ...
_DIM_LINE_FILL = 0.4  # ... unless this much of it is above the background level (dark tissue), ...
_DIM_LINE_FILL_GO_ON = 0.25  # ... or this much, in a run of dim lines that started so (hysteresis)
_SCAN_RUN_PX = 6  # lines in a run that must look like scan: ...
_SCAN_RUN_FILL_RATIO = 0.6  # ... their mean fill is >= this times the scan's typical fill, ...
_SCAN_RUN_MIN_LINE_RATIO = 0.4  # ... at most a third has less than this times that, ...
_SCAN_RUN_CHUNK_PX = 16  # ... and signal in nearly all chunks of this length (two uint64 words) ...
_SCAN_RUN_CHUNK_COVER = 0.9  # ... along the line: text lines have word gaps and ends
_MAX_BRIDGED_GAP_PX = 12  # dark band inside the scan that may be stepped over
_MAX_BRIDGED_WIDE_GAP_PX = 48  # ... or a wider one if the blob goes on for ...
_BLOB_RUN_PX = 32  # ... this many lines beyond it (more than a text line is high)


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


def _to_grey(image: np.ndarray) -> np.ndarray:
    """Convert an (H, W), (H, W, 1) or BGR (H, W, 3) uint8 image to (H, W) grey.

    A grey input is returned as is (not copied). Screenshots are often stored
    as 3 equal channels; for those the result is exactly that channel:
    OpenCV's fixed-point BGR weights sum to exactly 1, and its conversion is
    as fast as copying one channel (0.12 ms at 600x800), so checking the
    channels for equality first would only cost time.
    """
    if image.ndim == 2:
        return image
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"Expected an (H, W), (H, W, 1) or (H, W, 3) image, got {image.shape}")
    if image.shape[2] == 1:
        return image[:, :, 0]
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2GRAY)


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
    5. at full resolution (thresholded a little higher, up to grey 12, to see
       through JPEG ringing), walk from inside the blob outward, row by row
       and then column by column, and put each edge at the first background
       line; text, tick marks and frame lines sit beyond such a gap. A line
       of dark tissue (low gain, fat, a shadow reaching the border) is not
       background: below grey 12, but much of it above ``background_level``.

    Sector / curvilinear scans get the bounding box of the fan (the outermost
    one or two pixels of its thin corners may be cut). The typical cost is
    1-2 ms for a 600x800 frame on one core.

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
    grey = _to_grey(image)
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

    blob_box, closed = _find_scan_blob(has_signal, factor)
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
    # Edges are placed on a map thresholded higher than the background: JPEG
    # ringing puts grey levels up to ~10-15 into the 1-3 px gaps between the
    # scan and the GUI. Lower for a dark scan, whose speckle would drop out.
    x0, y0, x1, y1 = coarse
    centre = (slice(y0 + (y1 - y0) // 4, y1 - (y1 - y0) // 4, 2),
              slice(x0 + (x1 - x0) // 4, x1 - (x1 - x0) // 4, 2))
    mean_signal = cv2.mean(
        np.ascontiguousarray(grey[centre]), np.ascontiguousarray(signal[centre])
    )[0]
    edge_level = int(round(min(_MAX_EDGE_LEVEL, _EDGE_LEVEL_RATIO * mean_signal)))
    above_background = signal
    if edge_level > background_level:
        _, signal = cv2.threshold(grey, edge_level, 255, cv2.THRESH_BINARY)
    # The scan's typical fill, for telling a dark band inside it from a gap.
    typical_fill = float(np.count_nonzero(signal[centre])) / max(1, signal[centre].size)
    box = _refine_box(signal, above_background, closed, coarse, typical_fill, margin=2 * factor + 4)
    x0, y0, x1, y1 = box
    if (x1 - x0) < _MIN_SCAN_SIDE_FRACTION * width or (y1 - y0) < _MIN_SCAN_SIDE_FRACTION * height:
        box = coarse  # the refinement went astray; the blob's box is still close
    return CropResult(tuple(int(v) for v in box), True)


def _ring_fraction(mask: np.ndarray) -> float:
    """Fraction of non-zero pixels on the outermost rows and columns of a mask."""
    ring = np.concatenate([mask[0], mask[-1], mask[1:-1, 0], mask[1:-1, -1]])
    return float(np.count_nonzero(ring)) / max(1, ring.size)


def _find_scan_blob(
    has_signal: np.ndarray, factor: int
) -> Tuple[Optional[Tuple[int, int, int, int]], np.ndarray]:
    """(x, y, w, h) of the most scan-like blob in a small binary map (or None),
    and that blob in the closed map (before the opening: with thin scan corners)."""
    small_h, small_w = has_signal.shape
    open_size = max(3, int(round(_GUI_STROKE_PX / factor)))
    # Close first: in a low-gain scan a third of the blocks can be empty, and
    # opening alone would shred it. Text glued to the scan by the closing is
    # trimmed again by the full-resolution refinement.
    closed = cv2.morphologyEx(has_signal, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    opened = cv2.morphologyEx(closed, cv2.MORPH_OPEN, np.ones((open_size, open_size), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    if count <= 1:
        return None, closed
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
        return None, closed
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
    chosen = [best]
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
                chosen.append(int(i))
                merged = True
    # The scan in the closed map: its pieces that hold the chosen blobs, with
    # what the opening shaved off (thin fan corners), without other GUI blobs.
    is_chosen = np.zeros(count, bool)
    is_chosen[np.array(chosen) + 1] = True
    closed_count, closed_labels = cv2.connectedComponents(closed, connectivity=8)
    holds_scan = np.zeros(closed_count, bool)
    holds_scan[closed_labels[is_chosen[labels]]] = True
    holds_scan[0] = False
    return (int(x0), int(y0), int(x1 - x0), int(y1 - y0)), holds_scan[closed_labels].view(np.uint8)


def _refine_box(
    signal: np.ndarray,
    above_background: np.ndarray,
    closed: np.ndarray,
    coarse: Box,
    typical_fill: float,
    margin: int,
) -> Box:
    """Place the edges of a coarse scan box on the background gaps around the scan.

    Rows first, over the middle 80% of the coarse columns (which keeps side
    text, tick labels and frame lines out of the row profiles), then columns
    over the refined rows.

    Args:
        signal: full-resolution uint8 map, non-zero where above the edge level.
        above_background: the same, non-zero where above the background level.
        closed: the scan blob in the small closed "has signal" map.
        coarse: the blob's box at full resolution.
        typical_fill: fraction of signal pixels inside the scan.
        margin: how far (px) an edge may move out beyond the coarse box, at
            least (large boxes allow more).
    """
    height, width = signal.shape
    scale_y, scale_x = height / closed.shape[0], width / closed.shape[1]
    x0, y0, x1, y1 = coarse
    trim = (x1 - x0) // 10
    new_y0, new_y1 = _place_edges(
        signal, _line_counts(above_background[:, x0 + trim: x1 - trim], 1), closed,
        (scale_y, scale_x), (y0, y1), (x0 + trim, x1 - trim), typical_fill, margin,
    )
    # Same walk along columns, on transposed views.
    new_x0, new_x1 = _place_edges(
        signal.T, _line_counts(above_background[new_y0:new_y1], 0), closed.T,
        (scale_x, scale_y), (x0, x1), (new_y0, new_y1), typical_fill, margin,
    )
    return new_x0, new_y0, new_x1, new_y1


def _line_counts(mask: np.ndarray, axis: int) -> np.ndarray:
    """Non-zero pixels of each row (axis 1) or column (axis 0) of a {0, 255} uint8 map."""
    # cv2.reduce is several times faster than numpy's count_nonzero(axis=...) here.
    return cv2.reduce(mask, axis, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel() // 255


def _place_edges(
    signal: np.ndarray,
    dim_counts: np.ndarray,
    closed: np.ndarray,
    scales: Tuple[float, float],
    extent: Tuple[int, int],
    across: Tuple[int, int],
    typical_fill: float,
    margin: int,
) -> Tuple[int, int]:
    """New (first, stop) of the row range ``extent`` of a scan whose columns are ``across``.

    For each edge, the lines from the middle of the scan out to ``margin``
    beyond the coarse edge are profiled; see :func:`_outermost_scan_line`.
    ``dim_counts`` holds, for every line, its pixels in ``across`` that are
    above the background level.
    """
    n_lines = signal.shape[0]
    first, stop = extent
    a0, a1 = across
    n = max(1, a1 - a0)
    scale_line, scale_across = scales
    # How much of each line the coarse blob covers, in full-resolution pixels: a
    # line crossing only a thin corner of a fan is judged against that, not against n.
    s0 = int(a0 / scale_across)
    s1 = max(s0 + 1, min(closed.shape[1], int(math.ceil(a1 / scale_across))))
    blob_cover = np.minimum(np.count_nonzero(closed[:, s0:s1], axis=1) * scale_across, n)
    # The opening may have shaved thin, dark fan corners off the coarse blob.
    margin = max(margin, int(0.2 * (stop - first)))
    middle = (first + stop) // 2

    def edge(outer_limit: int, coarse_edge: int, frame_edge: int) -> int:
        while True:
            step = 1 if outer_limit >= middle else -1
            lines = np.arange(middle, outer_limit + step, step)
            small_lines = np.minimum((lines / scale_line).astype(np.intp), closed.shape[0] - 1)
            cover = blob_cover[small_lines]
            k = _outermost_scan_line(
                signal[lines, a0:a1], dim_counts[lines], cover, abs(coarse_edge - middle),
                typical_fill,
            )
            if k is None:
                return coarse_edge
            if k < len(lines) - 1 or outer_limit == frame_edge:
                return int(lines[k])
            outer_limit = frame_edge  # still inside the scan at the limit: look further once

    new_first = edge(max(0, first - margin), first, 0)
    new_stop = edge(min(n_lines - 1, stop - 1 + margin), stop - 1, n_lines - 1) + 1
    return new_first, new_stop


def _outermost_scan_line(
    lines: np.ndarray,
    dim_counts: np.ndarray,
    cover: np.ndarray,
    coarse_index: int,
    typical_fill: float,
) -> Optional[int]:
    """Index of the scan's last line in a stack of lines ordered from inside outward.

    1. Start on the outermost *scan run* at or inside the coarse edge (index
       ``coarse_index``): ``_SCAN_RUN_PX`` lines that are, together, about as
       full as the scan and have signal along nearly their whole length. GUI
       text never looks like that: it is sparse and has word gaps and ends.
       Without one (the narrow half of a fan), start on line 0.
    2. Walk outward and stop at the first background line (less signal than
       ``_GAP_LINE_FILL`` of the line, or of the part the coarse blob covers
       where that is smaller, e.g. the corner of a fan, and not dim: dark
       tissue puts ``_DIM_LINE_FILL`` of a line above the background level,
       or ``_DIM_LINE_FILL_GO_ON`` next to such lines), unless the gap is
       short and followed by another scan run (a dark band inside a low-gain
       scan, not the gap between the scan and a text line), or the coarse blob
       goes on beyond the gap, as full as the scan, for ``_BLOB_RUN_PX`` lines
       (a lesion at the side of a fan).

    Args:
        lines: (L, n) signal map, line 0 inside the scan, line L-1 outermost.
        dim_counts: (L,) pixels of each line above the background level.
        cover: (L,) pixels of each line covered by the coarse blob.
        coarse_index: index of the coarse box's edge line.
        typical_fill: fraction of signal pixels inside the scan.

    Returns:
        the index, or None if there is no start line.
    """
    num_lines, n = lines.shape
    lines = np.ascontiguousarray(lines)
    counts = _line_counts(lines, 1)
    gap_fill = _GAP_LINE_FILL * n
    gap_count = np.maximum(2.0, np.where(cover > 0, np.minimum(gap_fill, 0.1 * cover), gap_fill))
    # A line without signal at the edge level is background unless it is dark tissue
    # (low gain, fat, a shadow reaching the border), which puts much of it above the
    # background level; JPEG ringing in a gap swings around the background and puts
    # less there (<20% of a line at quality 90, <35% at 75). Speckle makes a dim line's
    # fill noisy, so, as in Canny's hysteresis, a run of dim lines starts on a clearly
    # dim one and goes on through dimmer ones; lines with signal at the edge level
    # (bright specks in the dark tissue) neither start nor stop it.
    is_gap = counts < gap_count
    starts = is_gap & (dim_counts >= _DIM_LINE_FILL * n)
    if starts.any():
        too_dim = dim_counts < _DIM_LINE_FILL_GO_ON * n
        index = np.arange(num_lines)
        last_start = np.maximum.accumulate(np.where(starts, index, -1))
        last_stop = np.maximum.accumulate(np.where(is_gap & too_dim, index, -1))
        is_gap = is_gap & (too_dim | (last_start <= last_stop))

    # run_ok[k]: lines k .. k + _SCAN_RUN_PX - 1 form a scan run.
    run = _SCAN_RUN_PX
    if num_lines < run:
        return None
    scan_count = max(gap_fill, _SCAN_RUN_FILL_RATIO * typical_fill * n)
    # As full as the scan on average, no background line, and most lines at least
    # somewhat full (a frame line next to tick marks is not a scan run).
    sparse = counts < _SCAN_RUN_MIN_LINE_RATIO * scan_count
    run_ok = (
        (np.convolve(counts, np.ones(run), mode="valid") >= run * scan_count)
        & (np.convolve(is_gap, np.ones(run), mode="valid") == 0)
        & (np.convolve(sparse, np.ones(run), mode="valid") <= run // 3)
    )
    chunk = _SCAN_RUN_CHUNK_PX
    num_chunks = n // chunk
    if num_chunks >= 2:
        # A 16-byte chunk is two uint64 words: OR them instead of a slow any(axis=2).
        words = np.ascontiguousarray(lines[:, : num_chunks * chunk]).view(np.uint64)
        words = words.reshape(num_lines, num_chunks, 2)
        occupied = (words[:, :, 0] | words[:, :, 1]) != 0
        per_chunk = np.cumsum(np.vstack([np.zeros((1, num_chunks), np.int32), occupied]), axis=0)
        chunks_hit = np.count_nonzero(per_chunk[run:] - per_chunk[:-run], axis=1)
        run_ok &= chunks_hit >= _SCAN_RUN_CHUNK_COVER * num_chunks

    candidates = np.flatnonzero(run_ok[: max(0, coarse_index - run + 2)])
    if len(candidates):
        inside = int(candidates[-1]) + run - 1
    elif not is_gap[0]:
        inside = 0  # no line spans the box (a fan's upper half): start from the middle
    else:
        return None
    i = inside + 1
    while i < num_lines:
        if not is_gap[i]:
            inside = i
            i += 1
            continue
        gap_end = i
        while gap_end < num_lines and is_gap[gap_end]:
            gap_end += 1
        if gap_end - i <= _MAX_BRIDGED_GAP_PX and gap_end < len(run_ok) and run_ok[gap_end]:
            i = gap_end
            continue
        # A dark lesion or shadow reaching the side of a fan leaves a gap with only
        # part of the fan beyond it: step over if the blob goes on, as full as the
        # scan, for longer than any text line is high.
        beyond = slice(gap_end, gap_end + _BLOB_RUN_PX)
        if (
            gap_end - i <= _MAX_BRIDGED_WIDE_GAP_PX
            and gap_end + _BLOB_RUN_PX <= num_lines
            and not is_gap[beyond].any()
            and (cover[beyond] > 0).all()
            and counts[beyond].sum() >= _SCAN_RUN_FILL_RATIO * typical_fill * cover[beyond].sum()
        ):
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

    def __init__(
        self, logger: Optional[logging.Logger] = None, log_first: int = 10, log_every: int = 100
    ):
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
        return (
            f"ultrasound crop: {self.failures} of {self.total} frames used the full-frame fallback"
        )
