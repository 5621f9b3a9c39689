"""Grad-CAM for Detectron2's Faster R-CNN, through pytorch-grad-cam.

pytorch-grad-cam does the maths (tensor hooks on the target layer, HiResCAM, Grad-CAM and
Grad-CAM++ weights, ReLU, rescaling). :class:`DetectionModelAdapter` lets it call a
Detectron2 model: it takes a ``(1, 3, H, W)`` tensor and returns torchvision-style
``{"boxes", "labels", "scores"}`` dicts, which :class:`DetectionScoreTarget` (or the
library's ``FasterRCNNBoxScoreTarget``) scores.

The target is one detection's class score. The proposals are fixed (computed under
``no_grad``), so the gradient reaches the backbone only through ROI pooling of that box.
HiResCAM (the default) keeps the gradient's location, so it paints only what can change
that score; Grad-CAM averages the gradient over the map and paints wherever the same
channels fire (measurements: benchmarks/README.md, "Grad-CAM: which method"). The input
requires grad, so a frozen layer still gets a gradient; the image is padded to the
backbone's size divisibility before the library sees it (the padding is cut off after);
an all-zero or non-finite map is reported empty, with the reason, never stretched.
"""
import math
import warnings
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np
import torch
from torch import nn

from detectron2.modeling.poolers import assign_boxes_to_levels
from detectron2.structures import Boxes
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM
from torchvision.ops import box_iou as pairwise_box_iou

from ..evaluation.penalized_iou import keep_top_predictions

__all__ = [
    "CAM_METHODS",
    "DEFAULT_METHOD",
    "LAYER_CHOICES",
    "resolve_layer",
    "DetectionModelAdapter",
    "DetectionScoreTarget",
    "DetectionCAM",
    "DetectionGradCAM",
    "heat_share_in_box",
    "box_area_share",
]

# "hirescam" (the default) is Grad-CAM without the spatial averaging of the gradient:
# heat = ReLU(sum_k dS/dA_k * A_k), location by location. See the module docstring for why
# it, and not plain Grad-CAM, is the default for a detector.
CAM_METHODS = {"hirescam": HiResCAM, "gradcam": GradCAM, "gradcam++": GradCAMPlusPlus}
DEFAULT_METHOD = "hirescam"

# Readable names for the layers worth explaining. "res5" (the last bottleneck block of
# the backbone's last stage) is the classic Grad-CAM layer; "p2".."p5" are FPN outputs.
LAYER_CHOICES = ("res5", "res4", "res3", "res2", "p2", "p3", "p4", "p5")


def resolve_layer(model, name):
    """The module behind a readable layer name.

    ``res2``..``res5``: the last block of that ResNet stage; ``p2``..``p5``: the FPN
    output convolution of that level; anything else: a dotted module path as in
    ``model.named_modules()`` (e.g. ``backbone.bottom_up.res5.1``).
    """
    backbone = model.backbone
    bottom_up = getattr(backbone, "bottom_up", backbone)  # FPN wraps the ResNet
    if name in ("res2", "res3", "res4", "res5") and hasattr(bottom_up, name):
        return getattr(bottom_up, name)[-1]
    if name in ("p2", "p3", "p4", "p5"):
        module = getattr(backbone, f"fpn_output{name[1]}", None)
        if module is None:
            raise ValueError(f"layer {name!r}: the backbone has no FPN level {name}")
        return module
    modules = dict(model.named_modules())
    if name in modules:
        return modules[name]
    raise ValueError(f"unknown layer {name!r}: choose one of {LAYER_CHOICES} or a module path of the model")


def box_iou(box, boxes):
    """Deprecated (goes in the next release): ``torchvision.ops.box_iou(box[None], boxes)[0]``."""
    warnings.warn("ustumor.interpretation.gradcam.box_iou is deprecated: use torchvision.ops.box_iou",
                  DeprecationWarning, stacklevel=2)
    return pairwise_box_iou(box[None], boxes)[0]


class DetectionModelAdapter(nn.Module):
    """A Detectron2 detector as pytorch-grad-cam expects a model: tensor in, one output per image.

    Args:
        model: a Detectron2 meta-architecture (GeneralizedRCNN or a subclass).
        inputs: the mapper's dict for the image (``height``, ``width``, ``crop_box``, ...)
            without needing its ``image``; the adapter supplies the image.
        image_size: (h, w) of the mapper's image tensor, before padding.
    """

    def __init__(self, model, inputs, image_size):
        super().__init__()
        self.model = model
        self.inputs = {k: v for k, v in inputs.items() if k not in ("image", "instances")}
        self.image_size = tuple(int(v) for v in image_size)

    def forward(self, images):
        height, width = self.image_size
        # The library's CAM covers the whole (padded) tensor it was given; the model gets
        # the unpadded image and pads it again itself, to the same size.
        batched = [dict(self.inputs, image=image[:, :height, :width]) for image in images]
        outputs = []
        for result in self.model.inference(batched, do_postprocess=True):
            instances = result["instances"]
            outputs.append({
                "boxes": instances.pred_boxes.tensor,
                "labels": instances.pred_classes,
                "scores": instances.scores,
            })
        return outputs


class DetectionScoreTarget:
    """The class score of the detection that matches a reference detection.

    The CAM's forward pass is a fresh one, so the reference detection is found again by
    its class and box (highest IoU, at least ``iou_threshold``). If it is not found, the
    target is a zero that keeps the graph, the gradient is zero, and ``matched`` says so.
    """

    def __init__(self, box, label, iou_threshold=0.5):
        self.box = torch.as_tensor(np.asarray(box, dtype=np.float32))
        self.label = int(label)
        self.iou_threshold = float(iou_threshold)
        self.matched = None  # (index, IoU) after a call

    def __call__(self, output):
        boxes, labels, scores = output["boxes"], output["labels"], output["scores"]
        zero = scores.sum() * 0.0
        same_class = torch.nonzero(labels == self.label).flatten()
        if len(same_class) == 0:
            self.matched = None
            return zero
        ious = pairwise_box_iou(self.box.to(boxes.device, boxes.dtype)[None], boxes[same_class].detach())[0]
        best = int(torch.argmax(ious))
        if float(ious[best]) < self.iou_threshold:
            self.matched = None
            return zero
        self.matched = (int(same_class[best]), float(ious[best]))
        return scores[same_class[best]]


@dataclass
class DetectionCAM:
    """One detection and its class-activation map over the original image.

    ``heatmap`` is float32 (H, W) in [0, 1] on the original frame (zero outside a scan-window
    crop), or None when the map was empty; ``note`` then says why.
    """

    index: int  # position among the image's detections (highest score first)
    box: np.ndarray  # XYXY, original-image pixels
    score: float
    label: int
    layer: str
    method: str
    heatmap: Optional[np.ndarray] = None
    note: str = ""


def heat_share_in_box(heatmap, box):
    """Fraction of the map's total heat that lies inside the XYXY ``box`` (pixel centres)."""
    heatmap = np.asarray(heatmap, dtype=np.float64)
    total = heatmap.sum()
    if not np.isfinite(total) or total <= 0:
        return float("nan")
    x0, y0, x1, y1 = box
    height, width = heatmap.shape
    columns = (np.arange(width) + 0.5 >= x0) & (np.arange(width) + 0.5 <= x1)
    rows = (np.arange(height) + 0.5 >= y0) & (np.arange(height) + 0.5 <= y1)
    return float(heatmap[np.ix_(rows, columns)].sum() / total)


def box_area_share(box, image_shape):
    """Fraction of the image's pixels (centres) inside the XYXY ``box``; the share a uniform map would give."""
    return heat_share_in_box(np.ones(image_shape[:2]), box)


class DetectionGradCAM:
    """Class-activation maps (HiResCAM, Grad-CAM, Grad-CAM++) of a Detectron2 detector's detections.

    Args:
        model: a Detectron2 meta-architecture; it is put in eval mode.
        layer: a readable layer name (:data:`LAYER_CHOICES`) or a module path.
        method: ``"hirescam"`` (default), ``"gradcam"`` or ``"gradcam++"``.
        score_thresh, top_k: the detections explained are the ``top_k`` highest-scoring ones
            with score >= ``score_thresh`` (``top_k`` None or <= 0: all of them), as the
            penalised-IoU operating point keeps them.

    ``explain(inputs)`` takes the dict the ustumor mapper makes for an image (``image``,
    ``height``, ``width``, optional ``crop_box``/``original_height``/``original_width``).
    """

    def __init__(self, model, layer="res5", method=DEFAULT_METHOD, score_thresh=0.5, top_k=None):
        if method not in CAM_METHODS:
            raise ValueError(f"method must be one of {sorted(CAM_METHODS)}, got {method!r}")
        self.model = model.eval()
        self.layer = layer
        self.target_layer = resolve_layer(model, layer)
        self.method = method
        self.score_thresh = float(score_thresh)
        self.top_k = top_k

    def _padded_input(self, image):
        """The image as float (1, 3, Hp, Wp), padded to the backbone's size divisibility, requiring grad."""
        image = image.to(self.model.device).float()
        divisor = max(int(self.model.backbone.size_divisibility), 1)
        height, width = image.shape[-2:]
        padded_h, padded_w = (int(math.ceil(s / divisor) * divisor) for s in (height, width))
        padded = image.new_zeros((1, image.shape[0], padded_h, padded_w))
        padded[0, :, :height, :width] = image
        # Even a layer with frozen weights then sits on a path that carries a gradient.
        return padded.requires_grad_(True)

    def detect(self, inputs):
        """The image's kept detections, highest score first, as a dict of numpy arrays."""
        image = inputs["image"]
        adapter = DetectionModelAdapter(self.model, inputs, image.shape[-2:])
        with torch.no_grad():
            output = adapter(self._padded_input(image).detach())[0]
        scores = output["scores"].detach().cpu().numpy()
        order = keep_top_predictions(scores, self.score_thresh, self.top_k)
        return {k: v.detach().cpu().numpy()[order] for k, v in output.items()}

    def explain(self, inputs, instance=None):
        """Detections and one :class:`DetectionCAM` per explained detection.

        ``instance``: explain only the detection with this index (highest score first);
        None explains each kept detection in turn.
        Returns ``(detections, cams)``; both are empty when nothing was detected.
        """
        detections = self.detect(inputs)
        indices = range(len(detections["scores"]))
        if instance is not None:
            if not 0 <= instance < len(detections["scores"]):
                return detections, []
            indices = [instance]
        image = inputs["image"]
        adapter = DetectionModelAdapter(self.model, inputs, image.shape[-2:])
        cams = []
        with torch.enable_grad():
            engine = CAM_METHODS[self.method](model=adapter, target_layers=[self.target_layer])
            try:
                for index in indices:
                    cams.append(self._explain_one(engine, adapter, inputs, detections, index))
            finally:
                engine.activations_and_grads.release()  # remove the hooks from the model
                self.model.zero_grad(set_to_none=True)
        return detections, cams

    def _explain_one(self, engine, adapter, inputs, detections, index):
        box, score, label = detections["boxes"][index], detections["scores"][index], detections["labels"][index]
        result = DetectionCAM(index=index, box=box, score=float(score), label=int(label), layer=self.layer,
                              method=self.method)
        target = DetectionScoreTarget(box, label)
        grayscale = engine(input_tensor=self._padded_input(inputs["image"]), targets=[target])[0]
        gradients = engine.activations_and_grads.gradients
        if target.matched is None:
            result.note = "the detection was not reproduced in the gradient pass"
        elif not gradients or not all(torch.isfinite(g).all() for g in gradients):
            result.note = "no finite gradient reached the layer"
        elif all(float(g.abs().max()) == 0 for g in gradients):
            result.note = self._why_no_gradient(inputs, box)
        elif not np.isfinite(grayscale).all() or float(grayscale.max()) <= 0:
            result.note = "the map is all zero: no positive evidence for this detection at this layer"
        else:
            result.heatmap = self._to_original_frame(grayscale, inputs)
        return result

    def _why_no_gradient(self, inputs, box):
        """Explain an all-zero gradient; at an FPN level it is usually ROI pooling's level choice."""
        if not self.layer.startswith("p"):
            return "the gradient at this layer is zero"
        pooler = self.model.roi_heads.box_pooler
        # the detection box in the model input's pixels (ROI pooling saw about this box)
        height, width = inputs["image"].shape[-2:]
        x0, y0 = inputs.get("crop_box", (0, 0, 0, 0))[:2]
        scale_x, scale_y = width / inputs["width"], height / inputs["height"]
        scaled = torch.tensor([[(box[0] - x0) * scale_x, (box[1] - y0) * scale_y,
                                (box[2] - x0) * scale_x, (box[3] - y0) * scale_y]], dtype=torch.float32)
        level = int(assign_boxes_to_levels([Boxes(scaled)], pooler.min_level, pooler.max_level,
                                           pooler.canonical_box_size, pooler.canonical_level)[0])
        pooled = f"p{pooler.min_level + level}"
        return (f"no gradient reaches {self.layer}: ROI pooling takes a box of this size from {pooled}; "
                f"explain it at --layer {pooled} or res5")

    @staticmethod
    def _to_original_frame(grayscale, inputs):
        """The CAM (over the padded model input) cut to the image, resized, placed in the original frame."""
        height, width = inputs["image"].shape[-2:]
        cam = grayscale[:height, :width]
        crop_h, crop_w = int(inputs["height"]), int(inputs["width"])
        cam = cv2.resize(cam, (crop_w, crop_h), interpolation=cv2.INTER_LINEAR)
        original_h = int(inputs.get("original_height", crop_h))
        original_w = int(inputs.get("original_width", crop_w))
        x0, y0 = (int(v) for v in inputs.get("crop_box", (0, 0, crop_w, crop_h))[:2])
        heatmap = np.zeros((original_h, original_w), np.float32)
        heatmap[y0:y0 + crop_h, x0:x0 + crop_w] = cam
        peak = heatmap.max()
        return np.clip(heatmap / peak, 0, 1) if peak > 0 else heatmap
