"""Scan-window crop on synthetic scanner screenshots (ustumor.data.preprocessing.scan_window).

Most screenshots are built here, independent of ustumor.synthetic: a
speckle scan in a 600x800 black workspace with GUI text on every side, a
body-marker pictogram, a grey-scale bar, depth ticks and sometimes a thin
frame; plus a dark (low-gain) scan, a curvilinear fan, JPEG-compressed
screenshots, an already-cropped image and an all-black frame. One test uses
the phantom's screenshot sets with dark frames (dark tissue reaching the
scan's border), scored against the generator's own scan and lesion boxes.
"""
import logging

import cv2
import numpy as np
import pytest

from ustumor.data.preprocessing.scan_window import (
    CropFailureCounter,
    CropResult,
    _to_grey,
    crop_ultrasound_window,
    crop_ultrasound_window_or_full,
)
from ustumor.synthetic import render_screenshots

SCREEN_H, SCREEN_W = 600, 800
FONT = cv2.FONT_HERSHEY_SIMPLEX
# GUI pixels may lie this close to the scan inside the found box (tick marks and
# frame lines 2 px from the scan edge, box edges off by a pixel or two).
GUI_TOLERANCE_PX = 3


def three_channels(grey):
    """A screenshot stored as three equal channels."""
    return np.repeat(grey[:, :, None], 3, axis=2)


# --------------------------------------------------------------------------
# Synthetic scans and workspaces
# --------------------------------------------------------------------------
def _smooth_field(rng, height, width, cells, low, high):
    coarse = rng.uniform(low, high, size=cells).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def make_scan(rng, height, width, dark=False, dark_band=False):
    """Speckle scan with layers and hypoechoic lesions, uint8 (height, width).

    ``dark``: low gain, mean grey about 10-20 and most pixels exactly black (the
    frames a 250-non-zero-pixels rule cuts). ``dark_band``: an almost
    empty band of rows under the skin line, as a dark fat layer in a low-gain frame.
    """
    noise = rng.standard_normal((2, height, width)).astype(np.float32)
    noise = [cv2.GaussianBlur(n, (0, 0), sigmaX=2.0, sigmaY=1.0) for n in noise]
    speckle = np.hypot(noise[0], noise[1])
    speckle /= speckle.mean()
    tissue = _smooth_field(rng, height, width, (4, 5), 0.3 if dark else 0.5, 1.4)
    tissue[: max(3, height // 60)] *= 2.0  # bright skin line
    for _ in range(int(rng.integers(1, 4))):  # hypoechoic lesions
        center = (int(rng.integers(width // 5, 4 * width // 5)),
                  int(rng.integers(height // 4, 4 * height // 5)))
        axes = (int(rng.integers(15, width // 6)), int(rng.integers(10, height // 7)))
        lesion = np.zeros((height, width), np.uint8)
        cv2.ellipse(lesion, center, axes, float(rng.uniform(0, 30)), 0, 360, 1, -1)
        tissue[lesion > 0] *= 0.05
    if dark:
        # Low gain with a reject level: about 60% of the pixels are exactly 0.
        image = speckle ** 2 * tissue * 30.0 - 28.0
    else:
        image = speckle * tissue * 90.0
    if dark_band:
        band_top = max(3, height // 60) + 4
        band = image[band_top: band_top + 10]
        band[rng.random(band.shape) > 0.01] = 0.0
    return np.clip(image, 0, 255).astype(np.uint8)


def make_fan_mask(height, width, inner_radius=90.0, half_angle_deg=32.0):
    """Curvilinear (convex probe) fan filling a (height, width) box; apex above the box."""
    half_angle = np.deg2rad(half_angle_deg)
    outer_radius = (width / 2) / np.sin(half_angle)
    apex_y = -inner_radius * np.cos(half_angle)
    outer_radius = min(outer_radius, height - apex_y)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    dx, dy = xs + 0.5 - width / 2, ys + 0.5 - apex_y
    radius = np.hypot(dx, dy)
    angle = np.abs(np.arctan2(dx, dy))
    return (radius >= inner_radius) & (radius <= outer_radius) & (angle <= half_angle)


def _text(canvas, text, origin, scale, color, thickness=1):
    cv2.putText(canvas, text, origin, FONT, scale, color, thickness, cv2.LINE_AA)


def make_workspace(rng, dark=False, dark_band=False, fan=False, colour=False):
    """A 600x800 scanner screenshot.

    Returns:
        image: uint8 (600, 800) grey, or (600, 800, 3) BGR if ``colour``.
        true_box: exact (x0, y0, x1, y1) of the scan (of the fan for ``fan``).
        gui: bool (600, 800), the pixels drawn by the GUI.
    """
    scan_w = int(rng.integers(300, 521))
    scan_h = int(rng.integers(260, 421))
    x0 = int(rng.integers(110, SCREEN_W - 90 - scan_w + 1))
    y0 = int(rng.integers(50, SCREEN_H - 45 - scan_h + 1))
    x1, y1 = x0 + scan_w, y0 + scan_h

    canvas = np.zeros((SCREEN_H, SCREEN_W, 3), np.uint8)
    white, grey = (230, 230, 230), (160, 160, 160)
    accent = (60, 220, 230) if colour else white  # yellow in BGR
    _text(canvas, "PHILIPS  iU22   Breast Lt   L12-5   2019/03/14 10:22", (10, 22), 0.55, white)
    # Text just above the scan (a few px gap), probe-orientation marker at its top-left.
    gap_above = int(rng.integers(5, 13))
    _text(canvas, "Superficial  Breast  Gen", (x0 + 10, y0 - gap_above), 0.45, accent)
    _text(canvas, "P", (x0 - 16, y0 + 12), 0.45, white, 2)
    # Parameter panel on the left.
    for i, line in enumerate(("2D", "Gn 52", "C 55", "Res/Spd", "Pwr 0dB", "FR 14Hz")):
        _text(canvas, line, (12, y0 + 14 + 18 * i), 0.45, grey)
    # Depth ticks and labels on the right, 2-4 px from the scan, then the grey bar.
    tick_x = x1 + int(rng.integers(2, 5))
    for cm in range(6):
        tick_y = y0 + int(round(cm * (scan_h - 1) / 5))
        cv2.line(canvas, (tick_x, tick_y), (tick_x + 6, tick_y), white, 1)
        _text(canvas, str(cm), (tick_x + 9, tick_y + 5), 0.4, white)
    bar_x = x1 + 34
    ramp = np.linspace(255, 8, 128).astype(np.uint8)[:, None, None]
    canvas[y0 + 20: y0 + 148, bar_x: bar_x + 12] = ramp
    cv2.rectangle(canvas, (bar_x - 2, y0 + 18), (bar_x + 13, y0 + 149), grey, 1)
    # Text below the scan.
    footer_y = y1 + int(rng.integers(16, 24))
    _text(canvas, "MI 0.7   TIS 0.1   Frz   5.0cm", (x0 + 20, footer_y), 0.45, grey)
    # Body marker: breast outline, nipple, probe position, side letter.
    marker = (x0 - 55, y1 - 45)
    cv2.ellipse(canvas, marker, (28, 22), 0, 0, 360, grey, 1, cv2.LINE_AA)
    cv2.circle(canvas, marker, 3, grey, -1)
    cv2.line(canvas, (marker[0] - 12, marker[1] - 14), (marker[0] + 10, marker[1] - 2), accent, 3)
    _text(canvas, "LT", (marker[0] - 10, marker[1] + 38), 0.4, grey)
    if rng.random() < 0.5:  # thin frame around the scan window, 2 px out
        cv2.rectangle(canvas, (x0 - 2, y0 - 2), (x1 + 1, y1 + 1), (90, 90, 90), 1)

    scan = make_scan(rng, scan_h, scan_w, dark=dark, dark_band=dark_band)
    if fan:
        inside = make_fan_mask(scan_h, scan_w)
        window = canvas[y0:y1, x0:x1]
        window[inside] = scan[inside][:, None]
        window[~inside] = 0  # GUI never overlaps the scan window's box here
        ys, xs = np.nonzero(inside)
        true_box = (x0 + int(xs.min()), y0 + int(ys.min()),
                    x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1)
    else:
        canvas[y0:y1, x0:x1] = scan[:, :, None]
        true_box = (x0, y0, x1, y1)
    gui = canvas.any(axis=2)
    gui[true_box[1]: true_box[3], true_box[0]: true_box[2]] = False
    image = canvas if colour else canvas[:, :, 0].copy()
    return image, true_box, gui


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------
def iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda box: (box[2] - box[0]) * (box[3] - box[1])  # noqa: E731
    return inter / float(area(a) + area(b) - inter)


def gui_pixels_inside(gui, found, true_box, tolerance=GUI_TOLERANCE_PX):
    """GUI pixels inside the found box that are farther than `tolerance` from the scan."""
    allowed = np.zeros_like(gui)
    x0, y0, x1, y1 = true_box
    allowed[max(0, y0 - tolerance): y1 + tolerance, max(0, x0 - tolerance): x1 + tolerance] = True
    fx0, fy0, fx1, fy1 = found
    return int(np.count_nonzero(gui[fy0:fy1, fx0:fx1] & ~allowed[fy0:fy1, fx0:fx1]))


def count_rule_crop(grey, min_count=250):
    """A simple count rule, for reference only: walk out from the centre
    while a row / column has at least `min_count` non-zero pixels."""
    nonzero = grey > 0
    rows, cols = nonzero.sum(axis=1), nonzero.sum(axis=0)
    height, width = grey.shape
    y0 = y1 = height // 2
    while y0 > 0 and rows[y0 - 1] >= min_count:
        y0 -= 1
    while y1 < height and rows[y1] >= min_count:
        y1 += 1
    x0 = x1 = width // 2
    while x0 > 0 and cols[x0 - 1] >= min_count:
        x0 -= 1
    while x1 < width and cols[x1] >= min_count:
        x1 += 1
    return x0, y0, x1, y1


def assert_found(image, true_box, gui, max_edge_error):
    before = image.copy()
    box, ok = crop_ultrasound_window_or_full(image)
    assert np.array_equal(image, before), "the crop must not modify its input"
    assert ok
    assert all(isinstance(v, int) for v in box)
    error = max(abs(a - b) for a, b in zip(box, true_box))
    assert iou(box, true_box) >= 0.97, (box, true_box)
    assert error <= max_edge_error, (box, true_box)
    assert gui_pixels_inside(gui, box, true_box) == 0, (box, true_box)
    return box


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(12))
def test_workspace_scan_found_without_gui(seed):
    rng = np.random.default_rng(seed)
    image, true_box, gui = make_workspace(rng, colour=seed % 3 == 0)
    assert_found(image, true_box, gui, max_edge_error=2)


@pytest.mark.parametrize("seed", range(6))
def test_dark_scan_found(seed):
    rng = np.random.default_rng(100 + seed)
    image, true_box, gui = make_workspace(rng, dark=True, dark_band=seed % 2 == 1)
    x0, y0, x1, y1 = true_box
    scan = image[y0:y1, x0:x1]
    assert 8 <= scan.mean() <= 22 and np.mean(scan == 0) > 0.5  # the intended hard case
    assert_found(image, true_box, gui, max_edge_error=2)


def test_count_rule_fails_on_dark_scan():
    """Why the crop does more than count pixels: the count rule cuts a low-gain frame."""
    rng = np.random.default_rng(7)
    bright, bright_box, _ = make_workspace(rng)
    rng = np.random.default_rng(7)
    dark, dark_box, _ = make_workspace(rng, dark=True)
    assert bright_box == dark_box
    assert iou(count_rule_crop(bright), bright_box) >= 0.9  # fine on a normal frame ...
    assert iou(count_rule_crop(dark), dark_box) < 0.5  # ... but not on a dark one
    assert iou(crop_ultrasound_window(dark), dark_box) >= 0.97


def test_phantom_screenshots_with_dark_borders_recovered_without_cutting_lesions():
    """Dark tissue reaching the scan's border (far field, fat, a shadow) sits below the
    edge level; the crop must keep it, and with it any lesion near that border."""
    shots = list(render_screenshots(seed=9, num_frames=200, dark_fraction=0.25))
    assert sum(shot.dark for shot in shots) == 50
    recovered, lesions_cut, lesions = {True: 0, False: 0}, 0, 0
    for shot in shots:
        box, ok = crop_ultrasound_window_or_full(cv2.cvtColor(shot.image, cv2.COLOR_RGB2GRAY))
        recovered[shot.dark] += ok and iou(box, shot.scan_box) >= 0.95
        for x0, y0, x1, y1 in shot.lesion_boxes:
            lesions += 1
            lesions_cut += not (x0 >= box[0] and y0 >= box[1] and x1 <= box[2] and y1 <= box[3])
    assert lesions > 100
    assert lesions_cut == 0
    assert recovered[False] == 150
    assert recovered[True] >= 49  # at most one dark frame of 50 missed


@pytest.mark.parametrize("seed", range(4))
def test_curvilinear_fan_found(seed):
    rng = np.random.default_rng(200 + seed)
    image, true_box, gui = make_workspace(rng, fan=True, colour=seed == 0)
    assert_found(image, true_box, gui, max_edge_error=3)


@pytest.mark.parametrize("seed", range(3))
def test_dark_curvilinear_fan_keeps_the_visible_scan(seed):
    """Best effort: in a low-gain fan the thin lateral corners hold ~1% signal
    pixels, so the fan's outline is not visible there; ask for most of the
    visible scan and no GUI."""
    rng = np.random.default_rng(200 + seed)
    image, true_box, gui = make_workspace(rng, fan=True, dark=True)
    box, ok = crop_ultrasound_window_or_full(image)
    assert ok
    x0, y0, x1, y1 = true_box
    visible = np.zeros(image.shape, bool)
    visible[y0:y1, x0:x1] = image[y0:y1, x0:x1] > 4
    kept = np.count_nonzero(visible[box[1]: box[3], box[0]: box[2]]) / np.count_nonzero(visible)
    assert kept >= 0.95, (box, true_box)
    assert gui_pixels_inside(gui, box, true_box) == 0, (box, true_box)


@pytest.mark.parametrize("dark", [False, True])
def test_jpeg_compressed_workspace(dark):
    """JPEG ringing puts faint grey into the 1-3 px gaps between scan and GUI."""
    for seed in range(4):
        image, true_box, gui = make_workspace(np.random.default_rng(300 + seed), dark=dark)
        encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1]
        assert_found(cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED), true_box, gui, max_edge_error=3)


def test_already_cropped_image_is_full_frame():
    rng = np.random.default_rng(3)
    for height, width, dark in ((450, 560, False), (300, 300, True)):
        scan = make_scan(rng, height, width, dark=dark)
        assert crop_ultrasound_window_or_full(scan) == ((0, 0, width, height), True)
        full = ((0, 0, width, height), True)
        assert crop_ultrasound_window_or_full(three_channels(scan)) == full


@pytest.mark.parametrize("kind", ["black", "gui_only", "tiny"])
def test_no_scan_falls_back_to_full_frame(kind):
    if kind == "tiny":
        image = np.zeros((5, 7), np.uint8)
    else:
        image = np.zeros((SCREEN_H, SCREEN_W), np.uint8)
    if kind == "gui_only":
        image, true_box, _ = make_workspace(np.random.default_rng(5))
        x0, y0, x1, y1 = true_box
        image[y0:y1, x0:x1] = 0
    result = crop_ultrasound_window_or_full(image)
    assert isinstance(result, CropResult)
    height, width = image.shape
    assert result == ((0, 0, width, height), False)
    assert crop_ultrasound_window(image) == (0, 0, width, height)


def test_crop_is_deterministic_and_accepts_grey_and_colour():
    image, true_box, _ = make_workspace(np.random.default_rng(11))
    first = crop_ultrasound_window(image)
    assert crop_ultrasound_window(image) == first
    assert crop_ultrasound_window(three_channels(image)) == first
    assert crop_ultrasound_window(image[:, :, None]) == first
    with pytest.raises(TypeError):
        crop_ultrasound_window(image.astype(np.uint16))


def test_grey_conversion():
    grey = np.random.default_rng(0).integers(0, 256, (40, 60), dtype=np.uint8)
    three = three_channels(grey)
    assert np.array_equal(_to_grey(three), grey)  # equal channels: exactly one of them
    every_level = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert np.array_equal(_to_grey(three_channels(every_level)), every_level)
    assert _to_grey(grey) is grey
    colour = three.copy()
    colour[:, :, 2] = 255 - grey  # a real colour image: weighted conversion
    assert np.array_equal(_to_grey(colour), cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY))
    assert _to_grey(colour[:, ::2]).shape == (40, 30)  # non-contiguous input
    with pytest.raises(ValueError):
        _to_grey(np.zeros((4, 4, 2), np.uint8))


def test_failure_counter_logs_counted_warnings(caplog):
    counter = CropFailureCounter(logger=logging.getLogger("test_crop"), log_first=2, log_every=3)
    with caplog.at_level(logging.WARNING, logger="test_crop"):
        for i, ok in enumerate([True, False, False, True, False, False, False]):
            counter.record(ok, f"frame{i}.png")
    assert (counter.total, counter.failures) == (7, 5)
    messages = [r.getMessage() for r in caplog.records]
    # failures 1 and 2 (first two), then failure 3 (every third)
    assert len(messages) == 3
    assert "frame1.png" in messages[0] and "(1 of 2 frames" in messages[0]
    assert "(3 of 5 frames" in messages[2]
    assert "5 of 7" in counter.summary()
