"""Faster R-CNN that reports boxes in the original frame when the input was cropped.

The mapper crops the scan window out of the scanner screenshot and records the
crop as ``crop_box`` (x0, y0, x1, y1) in each input dict. Detectron2 rescales
predictions to ``height``/``width`` (the cropped size) but knows nothing of the
offset, so this meta-architecture adds it back. Predictions, ground truth,
evaluation and plots then share the original frame's coordinates.

It also keeps the convolution weights and the padded image batch in the memory layout
that ``MODEL.MEMORY_FORMAT`` chooses for training and for inference
(``ustumor.modeling.memory_format``), switching layout with ``train()``/``eval()``, and with
``MODEL.FOLD_NORMS`` folds each convolution's batch norm into it in inference
(``ustumor.modeling.norm_folding``).
"""
import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.structures import ImageList

from .memory_format import resolve_memory_format
from .norm_folding import fold_norms_in_inference


@META_ARCH_REGISTRY.register()
class CropAwareRCNN(GeneralizedRCNN):
    @configurable
    def __init__(self, *, train_memory_format=torch.contiguous_format, test_memory_format=torch.contiguous_format,
                 fold_norms=False, **kwargs):
        super().__init__(**kwargs)
        if fold_norms:
            fold_norms_in_inference(self)
        self.memory_formats = {True: train_memory_format, False: test_memory_format}
        self.memory_format = torch.contiguous_format
        self._use_memory_format(self.memory_formats[self.training])

    @classmethod
    def from_config(cls, cfg):
        arguments = super().from_config(cfg)
        arguments["train_memory_format"] = resolve_memory_format(cfg.MODEL.MEMORY_FORMAT.TRAIN, "train",
                                                                 cfg.MODEL.DEVICE)
        arguments["test_memory_format"] = resolve_memory_format(cfg.MODEL.MEMORY_FORMAT.TEST, "test",
                                                                cfg.MODEL.DEVICE)
        arguments["fold_norms"] = cfg.MODEL.FOLD_NORMS
        return arguments

    def _use_memory_format(self, memory_format):
        if memory_format != self.memory_format:
            # converts the 4-D tensors only (conv weights, their gradients), in place: the
            # Parameter objects the optimizer and DDP hold stay the same
            self.to(memory_format=memory_format)
            self.memory_format = memory_format

    def train(self, mode=True):
        super().train(mode)
        self._use_memory_format(self.memory_formats[mode])
        return self

    def preprocess_image(self, batched_inputs):
        images = super().preprocess_image(batched_inputs)
        if self.memory_format == torch.channels_last:
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
