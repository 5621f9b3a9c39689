"""Loading a trained detector and running it over a dataset (Detectron2 keeps its
``DefaultPredictor`` in ``engine`` too), for the visualisation and Grad-CAM tools.

Predictions go through the trainer's test loader and the same :class:`DetectionCollector`
as the evaluation, so the pictures show exactly what the numbers were computed from.
"""
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.evaluation import inference_on_dataset
from detectron2.modeling import build_model

from ..evaluation.records import DetectionCollector
from .trainer import UltrasoundTrainer

__all__ = ["with_available_device", "load_model", "predict_records"]


def with_available_device(opts):
    """``opts`` plus ``MODEL.DEVICE cpu`` when no GPU is present and the user chose no device:
    the BUSI configs leave Detectron2's default ("cuda"), and these tools must run on a laptop."""
    opts = list(opts)
    if "MODEL.DEVICE" not in opts[::2] and not torch.cuda.is_available():
        opts += ["MODEL.DEVICE", "cpu"]
    return opts


def load_model(cfg, weights=None):
    """The config's model with ``weights`` (default ``MODEL.WEIGHTS``) loaded, in eval mode."""
    model = build_model(cfg)
    weights = cfg.MODEL.WEIGHTS if weights is None else weights
    if not weights:
        raise ValueError("no weights given: pass --weights (or MODEL.WEIGHTS) pointing to a trained checkpoint")
    DetectionCheckpointer(model).load(weights)
    return model.eval()


def predict_records(cfg, model, dataset_name):
    """One :class:`ImageRecord` per image of ``dataset_name``: predictions joined with truth."""
    loader = UltrasoundTrainer.build_test_loader(cfg, dataset_name)
    collector = DetectionCollector(dataset_name, distributed=False)
    with torch.no_grad():
        inference_on_dataset(model, loader, collector)
    return collector.collect()
