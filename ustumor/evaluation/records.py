"""Per-image predictions joined with ground truth: what every ustumor metric is computed from.

Predictions come from the model's outputs (already in original-image coordinates, see
``CropAwareRCNN``); ground truth and per-image metadata (:mod:`ustumor.data.fields`: ``patient_id``,
``clip_id``, ``diagnosis``, ...) come from the dataset's dicts in Detectron2's ``DatasetCatalog``,
because the test-time mapper drops annotations.
"""
import collections
import itertools
import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BoxMode
from detectron2.utils import comm

from ..data.fields import ALL_FIELDS

logger = logging.getLogger(__name__)

# Dataset-dict fields copied into ImageRecord.meta: the file, identity, grouping and labels.
META_FIELDS = ("file_name",) + ALL_FIELDS


@dataclass
class ImageRecord:
    image_id: str
    gt_boxes: np.ndarray  # (M, 4) XYXY_ABS
    gt_classes: np.ndarray  # (M,) contiguous class ids
    pred_boxes: np.ndarray  # (N, 4) XYXY_ABS, original image coordinates
    pred_scores: np.ndarray  # (N,)
    pred_classes: np.ndarray  # (N,)
    meta: Dict = field(default_factory=dict)

    @property
    def has_lesion(self):
        return len(self.gt_boxes) > 0

    def unit(self, keys):
        """The first of ``keys`` (comma-separated ``meta`` fields, e.g. ``"patient_id,group_id"``)
        that this image has, as ``"<key>:<value>"``; else the image itself."""
        for key in (keys or "").split(","):
            value = self.meta.get(key.strip())
            if value not in (None, ""):
                return f"{key.strip()}:{value}"
        return f"image:{self.image_id}"


def ground_truth_of(dataset_dict):
    """(boxes (M, 4) XYXY_ABS, classes (M,)) of a dataset dict, crowd boxes excluded."""
    boxes, classes = [], []
    for annotation in dataset_dict.get("annotations", []):
        if annotation.get("iscrowd", 0):
            continue
        boxes.append(BoxMode.convert(list(annotation["bbox"]), annotation["bbox_mode"], BoxMode.XYXY_ABS))
        classes.append(int(annotation["category_id"]))
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(classes, dtype=np.int64)


def make_records(dataset_dicts, predictions):
    """Join ``predictions`` (image_id -> (boxes, scores, classes)) with ``dataset_dicts``.

    Records follow the dataset's order; an image without predictions gets none (every
    image must have been run: a missing one is logged, not silently counted as negative).
    """
    records, missing = [], []
    for d in dataset_dicts:
        image_id = d["image_id"]
        if image_id not in predictions:
            missing.append(image_id)
            continue
        boxes, scores, classes = predictions[image_id]
        gt_boxes, gt_classes = ground_truth_of(d)
        records.append(ImageRecord(
            image_id=image_id, gt_boxes=gt_boxes, gt_classes=gt_classes,
            pred_boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
            pred_scores=np.asarray(scores, dtype=np.float64).reshape(-1),
            pred_classes=np.asarray(classes, dtype=np.int64).reshape(-1),
            meta={k: d[k] for k in META_FIELDS if k in d},
        ))
    if missing:
        logger.warning("%d images of the dataset have no predictions and are left out, e.g. %s",
                       len(missing), missing[:3])
    return records


def load_saved_predictions(path, dataset_name):
    """The records of ``dataset_name`` from the predictions an evaluation saved
    (Detectron2's COCOEvaluator writes ``OUTPUT_DIR/inference/<dataset>/instances_predictions.pth``
    under ``--eval-only``), so pictures can be drawn without running the model again.
    A file that lacks images of the dataset is an error naming it."""
    saved = torch.load(path, map_location="cpu", weights_only=False)
    by_image = {}
    for entry in saved:
        detections = entry.get("instances", [])
        boxes = [BoxMode.convert(list(d["bbox"]), BoxMode.XYWH_ABS, BoxMode.XYXY_ABS) for d in detections]
        by_image[entry["image_id"]] = (boxes, [d["score"] for d in detections],
                                       [d["category_id"] for d in detections])
    dataset_dicts = DatasetCatalog.get(dataset_name)
    missing = [d["image_id"] for d in dataset_dicts if d["image_id"] not in by_image]
    if missing:
        raise ValueError(f"{path}: no predictions for {len(missing)} of the {len(dataset_dicts)} images of "
                         f"{dataset_name} (e.g. {missing[:3]}); were they saved for another dataset or split?")
    return make_records(dataset_dicts, by_image)


class DetectionCollector(DatasetEvaluator):
    """Base DatasetEvaluator: collects each image's boxes, scores and classes and, in
    :meth:`collect`, joins them with the dataset's ground truth on the main process."""

    def __init__(self, dataset_name, distributed=True):
        self.dataset_name = dataset_name
        self.distributed = distributed
        self._predictions = []

    def reset(self):
        self._predictions = []

    def process(self, inputs, outputs):
        for inputs_one, output in zip(inputs, outputs):
            instances = output["instances"].to("cpu")
            self._predictions.append((
                inputs_one["image_id"],
                instances.pred_boxes.tensor.numpy().astype(np.float64),
                instances.scores.numpy().astype(np.float64),
                instances.pred_classes.numpy().astype(np.int64),
            ))

    def collect(self) -> Optional[List[ImageRecord]]:
        """The records of every processed image; None on processes other than the main one."""
        predictions = self._predictions
        if self.distributed and comm.get_world_size() > 1:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(predictions, dst=0)))
            if not comm.is_main_process():
                return None
        by_image = {image_id: (boxes, scores, classes) for image_id, boxes, scores, classes in predictions}
        if len(by_image) != len(predictions):  # each process must have run its own shard of the test set
            counts = collections.Counter(image_id for image_id, *_ in predictions)
            twice = sorted(i for i, n in counts.items() if n > 1)
            raise RuntimeError(f"{self.dataset_name}: {len(twice)} images were predicted more than once, e.g. "
                               f"{twice[:3]}: the test loader is not split between the processes")
        return make_records(DatasetCatalog.get(self.dataset_name), by_image)
