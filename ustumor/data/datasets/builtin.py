"""Builtin datasets, registered on import from ``$USTUMOR_DATASETS`` (default ``./datasets``).

- ``busi_{train,val,test,all}``    when ``$USTUMOR_DATASETS/BUSI`` exists
- ``phantom_{train,val,test,all}`` when ``$USTUMOR_DATASETS/phantom`` exists
- ``ucla_{train,val,test,all}``    when ``$USTUMOR_DATASETS/UCLA/annotations.csv`` exists

:func:`register_builtin_datasets` re-registers them with a config's options, and
adds the config's own hospital sets (``DATASETS.HOSPITAL.REGISTER``) and COCO-json
sets (``DATASETS.COCO``).
"""
import os

from ..splits import load_split
from .coco import register_coco_datasets
from .hospital import register_hospital_dataset
from .registration import register_busi_layout

BUILTIN_BUSI_LAYOUTS = {"busi": "BUSI", "phantom": "phantom"}
# prefix -> CSV under $USTUMOR_DATASETS; images are relative to the CSV's folder
BUILTIN_HOSPITAL_CSVS = {"ucla": os.path.join("UCLA", "annotations.csv")}


def datasets_root():
    return os.path.expanduser(os.environ.get("USTUMOR_DATASETS", "datasets"))


def register_builtin_datasets(cfg=None):
    """Register the builtin datasets present on disk; ``cfg`` supplies the options."""
    options = {}
    if cfg is not None:
        options = dict(
            class_mode=cfg.DATASETS.CLASS_MODE,
            min_area=cfg.DATASETS.BUSI.MIN_AREA,
            on_bad_item=cfg.DATASETS.ON_BAD_ITEM,
            seed=cfg.DATASETS.SPLIT.SEED,
            ratios=tuple(cfg.DATASETS.SPLIT.RATIOS),
            hash_distance=cfg.DATASETS.SPLIT.HASH_DISTANCE,
            min_correlation=cfg.DATASETS.SPLIT.MIN_CORRELATION,
        )
    split_files = saved_split_files(cfg)
    root = datasets_root()
    registered = []
    for prefix, folder in BUILTIN_BUSI_LAYOUTS.items():
        path = os.path.join(root, folder)
        if os.path.isdir(path):
            register_busi_layout(prefix, path, **options, **_split_file_option(split_files, prefix))
            registered.append(prefix)
    hospital_sets = [(prefix, os.path.join(root, csv), None) for prefix, csv in BUILTIN_HOSPITAL_CSVS.items()
                     if os.path.isfile(os.path.join(root, csv))]
    hospital_sets += [tuple(entry) for entry in (cfg.DATASETS.HOSPITAL.REGISTER if cfg is not None else [])]
    for prefix, csv_file, image_root in hospital_sets:
        register_hospital_dataset(prefix, csv_file, image_root or None, **_hospital_options(cfg),
                                  **_split_file_option(split_files, prefix))
        registered.append(prefix)
    unused = {path: dataset for path, dataset in split_files.items() if dataset not in registered}
    if unused:
        raise ValueError("DATASETS.SPLIT.FILE/FILES: " + "; ".join(
            f"{path} holds a split of {dataset!r}, which is not registered here" for path, dataset in unused.items()))
    if cfg is not None:
        registered += register_coco_datasets(cfg.DATASETS.COCO)
    return registered


def saved_split_files(cfg):
    """``{path: dataset}`` for the split JSONs a config asks to reuse (``DATASETS.SPLIT.FILE``
    and ``FILES``); each file names the dataset it splits, and one file per dataset."""
    if cfg is None:
        return {}
    paths = [cfg.DATASETS.SPLIT.FILE] if cfg.DATASETS.SPLIT.FILE else []
    paths += [p for p in cfg.DATASETS.SPLIT.FILES if p not in paths]
    owners = {path: load_split(path).get("dataset") for path in paths}
    for dataset in set(owners.values()):
        same = [path for path, owner in owners.items() if owner == dataset]
        if len(same) > 1:
            raise ValueError(f"DATASETS.SPLIT.FILE/FILES: {same} all split {dataset!r}; give one")
    return owners


def _split_file_option(split_files, prefix):
    return {"split_file": next((path for path, dataset in split_files.items() if dataset == prefix), "")}


def _hospital_options(cfg):
    if cfg is None:
        return {}
    hospital = cfg.DATASETS.HOSPITAL
    return dict(
        class_mode=cfg.DATASETS.CLASS_MODE,
        on_bad_row=cfg.DATASETS.ON_BAD_ITEM,
        drop_unannotated_in_annotated_clips=hospital.DROP_UNANNOTATED_IN_ANNOTATED_CLIPS,
        dicom_first_frame=hospital.DICOM_FIRST_FRAME,
        csv_encoding=hospital.CSV_ENCODING,
        seed=cfg.DATASETS.SPLIT.SEED,
        ratios=tuple(hospital.SPLIT_RATIOS),
        stratify_by=tuple(hospital.STRATIFY_BY),
    )


register_builtin_datasets()
