"""Faster R-CNN that reports boxes in the original frame when the input was cropped.

The mapper crops the scan window out of the scanner screenshot and records the
crop as ``crop_box`` (x0, y0, x1, y1) in each input dict. Detectron2 rescales
predictions to ``height``/``width`` (the cropped size) but knows nothing of the
offset, so this meta-architecture adds it back. Predictions, ground truth,
evaluation and plots then share the original frame's coordinates.

With ``MODEL.CHANNELS_LAST`` the convolution weights and the padded image batch use the
channels-last layout, which oneDNN and cuDNN convolve faster (``benchmarks/README.md``).
"""
import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.structures import ImageList


@META_ARCH_REGISTRY.register()
class CropAwareRCNN(GeneralizedRCNN):
    @configurable
    def __init__(self, *, channels_last=False, **kwargs):
        super().__init__(**kwargs)
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)  # 4-D parameters only: the conv weights

    @classmethod
    def from_config(cls, cfg):
        arguments = super().from_config(cfg)
        arguments["channels_last"] = cfg.MODEL.CHANNELS_LAST
        return arguments

    def preprocess_image(self, batched_inputs):
        images = super().preprocess_image(batched_inputs)
        if self.channels_last:
            images = ImageList(images.tensor.contiguous(memory_format=torch.channels_last), images.image_sizes)
        return images

    def inference(self, batched_inputs, detected_instances=None, do_postprocess=True):
        results = super().inference(batched_inputs, detected_instances, do_postprocess)
        if not do_postprocess:
            return results
        for result, inputs in zip(results, batched_inputs):
            crop_box = inputs.get("crop_box")
            if crop_box is None:
                continue
            instances = result["instances"]
            x0, y0 = float(crop_box[0]), float(crop_box[1])
            if len(instances) and (x0 or y0):
                instances.pred_boxes.tensor[:, 0::2] += x0
                instances.pred_boxes.tensor[:, 1::2] += y0
            instances._image_size = (int(inputs["original_height"]), int(inputs["original_width"]))
        return results
