"""The training loop: Detectron2's DefaultTrainer with ustumor's data, evaluation and exact resume."""
import json
import logging
import os
import weakref
from collections import OrderedDict

from detectron2.data import MetadataCatalog, build_detection_test_loader
from detectron2.data.datasets.coco import convert_to_coco_json
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase
from detectron2.engine import hooks as d2_hooks
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator, DatasetEvaluators, inference_on_dataset
from detectron2.evaluation.testing import flatten_results_dict
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from fvcore.nn.precise_bn import get_bn_modules

from ..data.mapper import UltrasoundDatasetMapper, build_ultrasound_augmentations
from ..data.build import build_resumable_train_loader
from ..data.splits import save_splits_of
from ..evaluation.penalized_iou import PenalizedIoUEvaluator
from ..evaluation.suite import MedicalEvaluationSuite, format_results_table
from ..utils.file_io import atomic_write_text, json_safe
from .checkpoint import AtomicCheckpointer, preserved_rng_state
from .hooks import (BestCheckpointer, BroadcastBuffers, ExactResumeState, InterruptCheckpointer, PeriodicCheckpointer,
                    ValidationLoss)
from .launch import create_ddp_model
from .optimizer import build_optimizer
from .weights import check_initial_weights

logger = logging.getLogger(__name__)

# Result groups too bulky for metrics.json; they stay in inference/<dataset>/results.json.
NOT_LOGGED_DURING_TRAINING = ("penalized_iou_sweep",)


def scalar_results(results):
    """The numeric leaves of nested ``results``, as EvalHook requires (it rejects lists)."""
    kept = {}
    for key, value in flatten_results_dict(results).items():
        if any(part in NOT_LOGGED_DURING_TRAINING for part in key.split("/")):
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            kept[key] = float(value)
    return kept


def check_expected_results(cfg):
    """Detectron2's ``verify_results`` reads ``TEST.EXPECTED_RESULTS`` as ``[task, metric, value,
    tolerance]`` of one test set's results (``task/metric`` as in ``results.json``)."""
    if len(cfg.TEST.EXPECTED_RESULTS) and len(cfg.DATASETS.TEST) != 1:
        raise ValueError(f"TEST.EXPECTED_RESULTS checks the results of one test set, but DATASETS.TEST is "
                         f"{tuple(cfg.DATASETS.TEST)}: give one test set, or no TEST.EXPECTED_RESULTS")


class UltrasoundTrainer(DefaultTrainer):
    """DefaultTrainer that reads ultrasound through :class:`UltrasoundDatasetMapper`, copies the
    data splits into ``OUTPUT_DIR``, and

    - trains from a resumable sampler and checkpoints the data position and random state, so
      ``--resume`` after SIGKILL continues exactly (:mod:`ustumor.data.samplers`);
    - writes every checkpoint atomically, keeps the last ``SOLVER.CHECKPOINT_KEEP_LAST``, and
      saves one on SIGTERM/SIGINT before exiting;
    - evaluates COCO AP and penalised IoU every ``TEST.EVAL_PERIOD`` and keeps ``model_best``
      by ``TEST.BEST_CHECKPOINT.METRIC`` across resumes; optionally logs validation loss;
    - in :meth:`test` (``--eval-only``), runs the medical evaluation suite;
    - trains a DistributedDataParallel model on several processes, GPUs or CPU
      (:mod:`ustumor.engine.launch`), where only the main process writes files.
    """

    def __init__(self, cfg):
        # DefaultTrainer.__init__ (v0.6), with ustumor's create_ddp_model: Detectron2's passes
        # device_ids, which DDP rejects for a model on the CPU
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):  # setup_logger not called for d2
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model, broadcast_buffers=False)
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = AtomicCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        check_expected_results(cfg)
        self.register_hooks(self.build_hooks())
        if comm.is_main_process():
            save_splits_of(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST), os.path.join(cfg.OUTPUT_DIR, "splits"))

    def resume_or_load(self, resume=True):
        check_initial_weights(self.checkpointer, self.cfg, resume)
        super().resume_or_load(resume=resume)

    # Detectron2 v0.6's DefaultTrainer leaves the optimizer (SGD momentum) out of its
    # checkpoints; later versions save it like this.
    def state_dict(self):
        state = super().state_dict()
        state["_trainer"] = self._trainer.state_dict()
        return state

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])
        else:
            logger.warning("The checkpoint has no optimizer state (saved by an older version): "
                           "momentum restarts from zero")

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_resumable_train_loader(cfg, UltrasoundDatasetMapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=UltrasoundDatasetMapper(cfg, is_train=False))

    @classmethod
    def build_validation_loader(cls, cfg, dataset_name):
        """Test-time resizing, but annotations kept: for :class:`ValidationLoss`."""
        mapper = UltrasoundDatasetMapper(
            is_train=True,  # keeps the annotations as instances
            augmentations=build_ultrasound_augmentations(cfg, is_train=False),
            crop_ultrasound=cfg.INPUT.CROP_ULTRASOUND,
        )
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper)

    def build_hooks(self):
        cfg = self.cfg.clone()
        cfg.defrost()
        cfg.DATALOADER.NUM_WORKERS = 0  # save some memory and time for PreciseBN
        main = comm.is_main_process()
        ret = [
            d2_hooks.IterationTimer(),
            d2_hooks.LRScheduler(),
            d2_hooks.PreciseBN(
                cfg.TEST.EVAL_PERIOD, self.model, self.build_train_loader(cfg), cfg.TEST.PRECISE_BN.NUM_ITER
            )
            if cfg.TEST.PRECISE_BN.ENABLED and get_bn_modules(self.model)
            else None,
        ]
        ret.append(BroadcastBuffers(cfg.TEST.EVAL_PERIOD, self.model))  # every process evaluates one model
        if cfg.TEST.VAL_LOSS.ENABLED:
            dataset = cfg.TEST.VAL_LOSS.DATASET or cfg.DATASETS.TEST[0]
            ret.append(ValidationLoss(cfg.TEST.EVAL_PERIOD, self.model, self.build_validation_loader(cfg, dataset)))
        # Evaluation and model_best come before the periodic checkpoint of the same iteration,
        # so that checkpoint's trainer state already holds the best value.
        ret.append(d2_hooks.EvalHook(cfg.TEST.EVAL_PERIOD, self.evaluate_during_training))
        if main and cfg.TEST.BEST_CHECKPOINT.METRIC and cfg.DATASETS.TEST:  # no test set: no metric to select by
            ret.append(BestCheckpointer(cfg.TEST.EVAL_PERIOD, self.checkpointer, cfg.TEST.BEST_CHECKPOINT.METRIC,
                                        cfg.TEST.BEST_CHECKPOINT.MODE))
        # on every process: saving gathers each process's random state (only the main one writes)
        ret.append(PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD,
                                        cfg.SOLVER.CHECKPOINT_KEEP_LAST))
        ret.append(ExactResumeState(self._trainer.data_loader))
        if main:
            ret.append(d2_hooks.PeriodicWriter(self.build_writers(), period=20))
        ret.append(InterruptCheckpointer(self.checkpointer))  # last: the iteration's other hooks run first
        return ret

    def evaluate_during_training(self):
        """EvalHook's function: COCO AP and penalised IoU on each DATASETS.TEST set. Leaves
        the random generators as it found them, so evaluating does not change the training."""
        with preserved_rng_state():
            evaluators = [self.build_evaluator(self.cfg, name, full_suite=False) for name in self.cfg.DATASETS.TEST]
            # DefaultTrainer.train checks the last results against TEST.EXPECTED_RESULTS
            self._last_eval_results = self.test(self.cfg, self.model, evaluators)
            return scalar_results(self._last_eval_results)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """Evaluate on each ``DATASETS.TEST`` set; write ``inference/<name>/results.json`` and
        log a table. Without ``evaluators``, runs the full medical evaluation suite."""
        if isinstance(evaluators, DatasetEvaluator):
            evaluators = [evaluators]
        if evaluators is not None and len(evaluators) != len(cfg.DATASETS.TEST):
            raise ValueError(f"{len(evaluators)} evaluators for {len(cfg.DATASETS.TEST)} test sets")
        results = OrderedDict()
        for index, name in enumerate(cfg.DATASETS.TEST):
            data_loader = cls.build_test_loader(cfg, name)
            evaluator = evaluators[index] if evaluators is not None else cls.build_evaluator(cfg, name)
            results[name] = inference_on_dataset(model, data_loader, evaluator)
            if comm.is_main_process():
                folder = os.path.join(cfg.OUTPUT_DIR, "inference", name)
                path = os.path.join(folder, "results.json")
                atomic_write_text(path, json.dumps(json_safe(results[name]), indent=1))
                logger.info("Evaluation results for %s (written to %s):\n%s", name, path,
                            format_results_table(results[name]))
        if len(results) == 1:
            return list(results.values())[0]
        return results

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None, full_suite=True):
        """COCO AP plus the medical suite (``full_suite``), or plus penalised IoU alone (the
        cheaper set used during training)."""
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        if not hasattr(MetadataCatalog.get(dataset_name), "json_file"):
            # COCOEvaluator caches the set as COCO json, written by whichever process locks the
            # file first; the main process writes it here, the others then read it (call on every process)
            if comm.is_main_process():
                convert_to_coco_json(dataset_name, os.path.join(output_folder, f"{dataset_name}_coco_format.json"))
            comm.synchronize()
        coco = COCOEvaluator(dataset_name, tasks=("bbox",), distributed=True, output_dir=output_folder)
        if full_suite:
            return DatasetEvaluators([coco, MedicalEvaluationSuite.from_config(cfg, dataset_name, output_folder)])
        settings = cfg.TEST.PENALIZED_IOU
        return DatasetEvaluators([coco, PenalizedIoUEvaluator(
            dataset_name, settings.SCORE_THRESH, settings.IOU_THRESH, settings.TOP_K, output_dir=output_folder)])
