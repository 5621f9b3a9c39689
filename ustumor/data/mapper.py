"""Dataset mapper for ultrasound: grey read, scan-window crop, 3 channels, augmentation."""
import copy
import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .fields import DICOM_FRAME
from .image_io import read_dataset_frame
from .preprocessing.crop_cache import CropCache

logger = logging.getLogger(__name__)


def build_ultrasound_augmentations(cfg, is_train):
    """Resize (and, for training, flip and intensity jitter) from the config."""
    if not is_train:
        return [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]
    augmentations = [
        T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)
    ]
    if cfg.INPUT.RANDOM_FLIP == "horizontal":
        augmentations.append(T.RandomFlip(horizontal=True, vertical=False))
    elif cfg.INPUT.RANDOM_FLIP == "vertical":  # depth order matters in ultrasound; allowed only if asked
        augmentations.append(T.RandomFlip(horizontal=False, vertical=True))
    brightness, contrast = cfg.INPUT.BRIGHTNESS_RANGE, cfg.INPUT.CONTRAST_RANGE
    if tuple(brightness) != (1.0, 1.0):
        augmentations.append(T.RandomBrightness(*brightness))
    if tuple(contrast) != (1.0, 1.0):
        augmentations.append(T.RandomContrast(*contrast))
    return augmentations


def stretch_to_full_range(grey):
    """The image's own grey range mapped linearly onto 0-255 (float32); a flat image stays flat."""
    grey = grey.astype(np.float32)
    low, high = float(grey.min()), float(grey.max())
    return (grey - low) * (255.0 / max(high - low, 1.0))


class UltrasoundDatasetMapper:
    """Map a dataset dict to the model's input.

    Reads the image in grey, crops the scan window when ``INPUT.CROP_ULTRASOUND``,
    applies the augmentations, and replicates grey to 3 channels. Boxes stay in
    the dataset's (original frame) coordinates in the dict; the crop is composed
    with the augmentations so instances are moved exactly as the pixels are.
    Images without annotations are kept as negatives.
    """

    @configurable
    def __init__(self, is_train, augmentations, crop_ultrasound=False, min_max_stretch=False):
        self.is_train = is_train
        self.min_max_stretch = min_max_stretch
        self.augmentations = T.AugmentationList(augmentations)
        self.crop_ultrasound = crop_ultrasound
        self.crop_cache = CropCache()
        mode = "training" if is_train else "inference"
        logger.info(f"[UltrasoundDatasetMapper] {mode} augmentations: {augmentations}, crop={crop_ultrasound}, "
                    f"min-max stretch={min_max_stretch}")

    @classmethod
    def from_config(cls, cfg, is_train=True):
        return {
            "is_train": is_train,
            "augmentations": build_ultrasound_augmentations(cfg, is_train),
            "crop_ultrasound": cfg.INPUT.CROP_ULTRASOUND,
            "min_max_stretch": cfg.INPUT.MIN_MAX_STRETCH,
        }

    def load_grey(self, dataset_dict):
        """The (possibly cropped) grey image and the crop as a Detectron2 transform."""
        grey = read_dataset_frame(dataset_dict)
        height, width = grey.shape
        if (dataset_dict.get("height"), dataset_dict.get("width")) not in ((height, width), (None, None)):
            utils.check_image_size(dataset_dict, grey)  # raises with the file name
        box = (0, 0, width, height)
        if self.crop_ultrasound:
            box = self.crop_cache.crop_box(dataset_dict["file_name"], grey, dataset_dict.get(DICOM_FRAME))
        x0, y0, x1, y1 = box
        crop = T.CropTransform(x0, y0, x1 - x0, y1 - y0, orig_w=width, orig_h=height)
        return grey[y0:y1, x0:x1], crop, box

    def __call__(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)
        grey, crop, box = self.load_grey(dataset_dict)
        dataset_dict["original_height"], dataset_dict["original_width"] = crop.orig_h, crop.orig_w
        dataset_dict["crop_box"] = box
        # predictions are rescaled to this size, then moved back by crop_box
        dataset_dict["height"], dataset_dict["width"] = grey.shape

        if self.min_max_stretch:
            grey = stretch_to_full_range(grey)
        aug_input = T.AugInput(grey)
        transforms = self.augmentations(aug_input)
        grey = aug_input.image
        image = np.repeat(grey[:, :, None], 3, axis=2)
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))

        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        all_transforms = T.TransformList([crop]) + transforms
        annotations = [
            utils.transform_instance_annotations(obj, all_transforms, grey.shape[:2])
            for obj in dataset_dict.pop("annotations", [])
            if obj.get("iscrowd", 0) == 0
        ]
        instances = utils.annotations_to_instances(annotations, grey.shape[:2])
        dataset_dict["instances"] = utils.filter_empty_instances(instances)
        return dataset_dict
