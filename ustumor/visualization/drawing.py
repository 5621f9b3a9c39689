"""Drawing shared by ustumor's pictures: box colours, heat-map overlays, captions, contact sheets.

Images are RGB uint8 arrays here (Detectron2's Visualizer's convention); they are
written with :func:`write_rgb`. Small scans (the phantom is ~150 px) are drawn at a
larger scale so that labels stay readable.
"""
import math
import os

import cv2
import numpy as np
from detectron2.utils.visualizer import Visualizer

# Colours (RGB, 0-1 for Visualizer), chosen to stay apart for red-green colour blindness
# as well: truth is green-teal, a hit is blue, a false positive orange-red.
TRUTH_COLOR = (0.0, 0.78, 0.55)
TP_COLOR = (0.15, 0.45, 1.0)
FP_COLOR = (1.0, 0.35, 0.0)
OTHER_COLOR = (0.95, 0.85, 0.2)  # predictions below the operating point: yellow, dashed
OUTCOME_COLORS = {"tp": TP_COLOR, "fp": FP_COLOR}

# Short side, in pixels, below which a picture is drawn enlarged.
MIN_DISPLAY_SIDE = 384


def display_scale(image):
    return max(1.0, MIN_DISPLAY_SIDE / min(image.shape[:2]))


def to_rgb(image):
    """A grey, BGR or RGB uint8 image as RGB; 2-D means grey, 3 channels are taken as BGR (OpenCV)."""
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.shape[2] == 4:
        image = image[:, :, :3]
    return image[:, :, ::-1].copy()


def write_rgb(path, image):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, np.ascontiguousarray(image[:, :, ::-1])):
        raise IOError(f"could not write {path}")
    return path


def draw_boxes(image_rgb, truth_boxes=(), predictions=(), scale=None):
    """Truth boxes and predictions on a copy of ``image_rgb``, with Detectron2's Visualizer.

    Args:
        truth_boxes: XYXY boxes, drawn in :data:`TRUTH_COLOR` and labelled "truth".
        predictions: dicts with ``box``, ``score`` and optionally ``outcome`` ("tp",
            "fp", or anything else for a prediction outside the operating point, drawn
            dotted yellow) and ``label`` (the class name).
    Returns:
        RGB uint8, enlarged by ``scale`` (default :func:`display_scale`).
    """
    scale = scale or display_scale(image_rgb)
    visualizer = Visualizer(image_rgb, metadata=None, scale=scale)
    # labels small enough not to hide a small lesion: ~1/40 of the short side, at least 6 px
    font = max(min(image_rgb.shape[:2]) / 40, 6 / scale)
    for box in truth_boxes:
        visualizer.draw_box(box, alpha=0.95, edge_color=TRUTH_COLOR, line_style="--")
        visualizer.draw_text("truth", (box[0], box[3]), color=TRUTH_COLOR, horizontal_alignment="left",
                             font_size=font)
    for prediction in predictions:
        box = prediction["box"]
        color = OUTCOME_COLORS.get(prediction.get("outcome"), OTHER_COLOR)
        style = "-" if prediction.get("outcome") in OUTCOME_COLORS else ":"
        visualizer.draw_box(box, alpha=0.95, edge_color=color, line_style=style)
        label = prediction.get("label", "")
        text = f"{label} {prediction['score']:.2f}".strip()
        visualizer.draw_text(text, (box[0], box[1]), color=color, horizontal_alignment="left", font_size=font)
    return visualizer.get_output().get_image()


def overlay_heatmap(image_rgb, heatmap, alpha=0.45):
    """``heatmap`` (H, W) in [0, 1] as a jet colour map blended over ``image_rgb``; opacity follows heat,
    so the anatomy stays visible where the map is cold."""
    colors = cv2.applyColorMap(np.uint8(np.clip(heatmap, 0, 1) * 255), cv2.COLORMAP_JET)[:, :, ::-1]
    weight = (alpha * (0.35 + 0.65 * np.clip(heatmap, 0, 1)))[:, :, None]
    return np.uint8(np.clip(image_rgb * (1 - weight) + colors * weight, 0, 255))


def add_caption(image_rgb, lines, color=(255, 255, 255), background=(20, 20, 20)):
    """``image_rgb`` with a dark band of text lines above it (outcome, score, notes)."""
    if isinstance(lines, str):
        lines = [lines]
    font, font_scale, thickness = cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1
    width = image_rgb.shape[1]
    wrapped = []
    for line in lines:  # wrap at the image's width
        words, current = line.split(), ""
        for word in words:
            trial = f"{current} {word}".strip()
            if current and cv2.getTextSize(trial, font, font_scale, thickness)[0][0] > width - 12:
                wrapped.append(current)
                current = word
            else:
                current = trial
        wrapped.append(current)
    line_height = 20
    band = np.full((line_height * len(wrapped) + 8, width, 3), background, np.uint8)
    for row, text in enumerate(wrapped):
        cv2.putText(band, text, (6, 18 + row * line_height), font, font_scale, color, thickness, cv2.LINE_AA)
    return np.concatenate([band, image_rgb], axis=0)


def contact_sheet(images, columns=4, tile_width=320, labels=None, background=(255, 255, 255)):
    """A grid of RGB images, each resized to ``tile_width`` wide (aspect kept), with optional labels."""
    if not images:
        raise ValueError("a contact sheet needs at least one image")
    columns = max(1, min(columns, len(images)))
    tiles = []
    for index, image in enumerate(images):
        height = int(round(image.shape[0] * tile_width / image.shape[1]))
        tile = cv2.resize(image, (tile_width, height), interpolation=cv2.INTER_AREA)
        if labels:
            tile = add_caption(tile, labels[index])
        tiles.append(tile)
    rows = math.ceil(len(tiles) / columns)
    tile_height = max(t.shape[0] for t in tiles)
    gap = 6
    sheet = np.full((rows * (tile_height + gap) + gap, columns * (tile_width + gap) + gap, 3), background, np.uint8)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        y, x = gap + row * (tile_height + gap), gap + column * (tile_width + gap)
        sheet[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
    return sheet
