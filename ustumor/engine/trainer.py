"""The training loop: Detectron2's DefaultTrainer with ustumor's data and evaluation."""
import json
import logging
import os

from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm

from ..data.mapper import UltrasoundDatasetMapper
from ..data.splits import save_splits_of
from .weights import check_weights_reachable

logger = logging.getLogger(__name__)


class UltrasoundTrainer(DefaultTrainer):
    """DefaultTrainer that reads ultrasound through :class:`UltrasoundDatasetMapper`,
    evaluates with COCO metrics, and copies the data splits into ``OUTPUT_DIR``."""

    def __init__(self, cfg):
        super().__init__(cfg)
        save_splits_of(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST), os.path.join(cfg.OUTPUT_DIR, "splits"))

    def resume_or_load(self, resume=True):
        check_weights_reachable(self.checkpointer, self.cfg.MODEL.WEIGHTS, resume)
        super().resume_or_load(resume=resume)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=UltrasoundDatasetMapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=UltrasoundDatasetMapper(cfg, is_train=False))

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """Evaluate on each ``DATASETS.TEST`` set and write ``inference/<name>/results.json``."""
        results = super().test(cfg, model, evaluators)
        if comm.is_main_process():
            by_dataset = results if len(cfg.DATASETS.TEST) > 1 else {cfg.DATASETS.TEST[0]: results}
            for name, metrics in by_dataset.items():
                folder = os.path.join(cfg.OUTPUT_DIR, "inference", name)
                os.makedirs(folder, exist_ok=True)
                with open(os.path.join(folder, "results.json"), "w") as f:
                    json.dump(metrics, f, indent=1)
        return results

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return COCOEvaluator(dataset_name, tasks=("bbox",), distributed=True, output_dir=output_folder)
