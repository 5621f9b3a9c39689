"""Building a run's config: file + overrides, dataset registration, normalisation."""
import os

from detectron2.config import get_cfg
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import UstumorCfgNode, add_ustumor_config
from ..data.datasets.builtin import register_builtin_datasets
from ..data.preprocessing.normalization import apply_normalization


def merged_config(config_file="", opts=()):
    """ustumor's keys, the file and the ``KEY VALUE`` overrides merged; nothing registered or
    read besides the file (the launcher reads MODEL.DEVICE from it before starting processes)."""
    cfg = get_cfg()
    add_ustumor_config(cfg)
    cfg = UstumorCfgNode(cfg)  # also reads old key names
    if config_file:
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    return cfg


def build_config(config_file="", opts=()):
    """A frozen config with ustumor's keys, the file and the ``KEY VALUE`` overrides merged."""
    cfg = merged_config(config_file, opts)
    apply_normalization(cfg)
    register_builtin_datasets(cfg)
    cfg.freeze()
    return cfg


def setup_config(args):
    """``build_config`` plus Detectron2's logging/seed/output-dir setup, for entry points."""
    cfg = build_config(args.config_file, args.opts)
    config_path = os.path.join(cfg.OUTPUT_DIR, "config.yaml")
    training_config = None
    if getattr(args, "eval_only", False) and comm.is_main_process() and os.path.exists(config_path):
        with open(config_path) as f:
            training_config = f.read()
    default_setup(cfg, args)  # also writes OUTPUT_DIR/config.yaml
    if training_config is not None:
        # evaluating into a training run's folder keeps that run's config; the evaluation's goes beside it
        os.replace(config_path, os.path.join(cfg.OUTPUT_DIR, "config_eval.yaml"))
        with open(config_path, "w") as f:
            f.write(training_config)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="ustumor")
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    return cfg
