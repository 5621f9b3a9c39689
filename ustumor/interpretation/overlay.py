"""Grad-CAM pictures: the map over the image, the explained detection, the truth, a caption."""
from ..visualization.drawing import add_caption, display_scale, draw_boxes, overlay_heatmap, to_rgb
from .gradcam import box_area_share, heat_share_in_box

__all__ = ["cam_statistics", "render_cam", "render_no_detection"]


def cam_statistics(cam):
    """Share of heat in the detection's box, the box's share of the image, and their ratio
    (1 is what a uniform map gives; above 1, the map concentrates on the detection)."""
    if cam.heatmap is None:
        return {"heat_in_box": None, "box_area_share": None, "heat_ratio": None}
    in_box = heat_share_in_box(cam.heatmap, cam.box)
    area = box_area_share(cam.box, cam.heatmap.shape)
    return {"heat_in_box": in_box, "box_area_share": area, "heat_ratio": in_box / area if area > 0 else None}


def render_cam(image, cam, truth_boxes=(), class_names=None):
    """``image`` (grey or BGR) with ``cam``'s map overlaid, its box and score, the truth (dashed); RGB."""
    rgb = to_rgb(image)
    shown = overlay_heatmap(rgb, cam.heatmap) if cam.heatmap is not None else rgb
    label = class_names[cam.label] if class_names is not None and len(class_names) > 1 else ""
    drawn = draw_boxes(shown, truth_boxes, [{"box": cam.box, "score": cam.score, "outcome": "tp", "label": label}],
                       scale=display_scale(rgb))
    caption = [f"{cam.method} at {cam.layer}   detection {cam.index}   score {cam.score:.2f}"]
    if cam.heatmap is None:
        caption.append(f"no map: {cam.note}")
    else:
        stats = cam_statistics(cam)
        caption.append(f"heat in box {100 * stats['heat_in_box']:.0f}%   box area {100 * stats['box_area_share']:.1f}%")
    return add_caption(drawn, caption)


def render_no_detection(image, score_thresh, truth_boxes=()):
    """The image with a note that nothing was detected (and the truth, if known); RGB."""
    rgb = to_rgb(image)
    drawn = draw_boxes(rgb, truth_boxes, [], scale=display_scale(rgb))
    return add_caption(drawn, [f"no detection with score >= {score_thresh:.2f}: nothing to explain"])

