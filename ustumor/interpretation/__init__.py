"""Interpretation of ustumor's detectors: Grad-CAM for Detectron2's Faster R-CNN."""
from .gradcam import DetectionCAM, DetectionGradCAM, heat_share_in_box, resolve_layer  # noqa: F401
