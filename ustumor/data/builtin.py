"""Builtin datasets, registered on import from ``$USTUMOR_DATASETS`` (default ``./datasets``).

- ``busi_{train,val,test,all}``    when ``$USTUMOR_DATASETS/BUSI`` exists
- ``phantom_{train,val,test,all}`` when ``$USTUMOR_DATASETS/phantom`` exists

:func:`register_builtin_datasets` re-registers them with a config's options.
"""
import os

from .datasets import register_busi_layout
from .splits import load_split

BUILTIN_BUSI_LAYOUTS = {"busi": "BUSI", "phantom": "phantom"}


def datasets_root():
    return os.path.expanduser(os.environ.get("USTUMOR_DATASETS", "datasets"))


def register_builtin_datasets(cfg=None):
    """Register the builtin datasets present on disk; ``cfg`` supplies the options."""
    options = {}
    if cfg is not None:
        options = dict(
            class_mode=cfg.DATASETS.BUSI.CLASS_MODE,
            min_area=cfg.DATASETS.BUSI.MIN_AREA,
            on_bad_item=cfg.DATASETS.ON_BAD_ITEM,
            seed=cfg.DATASETS.SPLIT.SEED,
            ratios=tuple(cfg.DATASETS.SPLIT.RATIOS),
            hash_distance=cfg.DATASETS.SPLIT.HASH_DISTANCE,
            min_correlation=cfg.DATASETS.SPLIT.MIN_CORRELATION,
            split_file=cfg.DATASETS.SPLIT.FILE,
        )
    root = datasets_root()
    registered = []
    for prefix, folder in BUILTIN_BUSI_LAYOUTS.items():
        path = os.path.join(root, folder)
        if os.path.isdir(path):
            prefix_options = dict(options)
            if options.get("split_file") and load_split(options["split_file"]).get("dataset") != prefix:
                prefix_options["split_file"] = ""  # the file belongs to another dataset
            register_busi_layout(prefix, path, **prefix_options)
            registered.append(prefix)
    return registered


register_builtin_datasets()
