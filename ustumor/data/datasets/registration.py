"""Registering ``<prefix>_{train,val,test,all}`` in Detectron2's catalogs over a split:
for any loader's dicts (:func:`register_split_family`) and for BUSI-layout folders (BUSI
itself, the phantom)."""
import functools
import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..splits import SPLIT_NAMES, apply_split, make_image_split
from .busi import busi_class_names, find_busi_root, load_busi_dicts


@functools.lru_cache(maxsize=8)
def _split_busi_layout(prefix, root, class_mode, min_area, on_bad_item, seed, ratios, hash_distance,
                        min_correlation, split_file):
    dicts = load_busi_dicts(root, class_mode=class_mode, min_area=min_area, on_bad_item=on_bad_item)
    split = make_image_split(prefix, dicts, seed, ratios, hash_distance, min_correlation, split_file)
    return tuple(apply_split(dicts, split)), split


def register_busi_layout(prefix, root, class_mode="lesion", min_area=20, on_bad_item="error",
                         seed=0, ratios=(0.7, 0.1, 0.2), hash_distance=10, min_correlation=0.9,
                         split_file=""):
    """Register ``<prefix>_{train,val,test,all}`` for a folder in BUSI's layout.

    Re-registering replaces earlier registrations, so a config can change the
    class mode, speck filter or split after import.
    """
    key = (prefix, os.path.abspath(root), class_mode, int(min_area), on_bad_item, int(seed),
           tuple(float(r) for r in ratios), int(hash_distance),
           float(min_correlation), split_file)
    register_split_family(prefix, lambda: _split_busi_layout(*key)[0], lambda: _split_busi_layout(*key)[1],
                          thing_classes=busi_class_names(class_mode), dataset_root=find_busi_root(root))


def register_split_family(prefix, all_dicts, get_split, **metadata):
    """Register ``<prefix>_{train,val,test,all}`` lazily over ``all_dicts()`` (each dict
    carrying its ``split``), replacing earlier registrations; ``get_split()`` gives the
    split file copied into each run (``split_provider`` in each set's metadata)."""
    for split_name in SPLIT_NAMES + ("all",):
        name = f"{prefix}_{split_name}"
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)

        def load(split_name=split_name):
            return [dict(d) for d in all_dicts() if split_name == "all" or d["split"] == split_name]

        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(evaluator_type="coco", split_prefix=prefix, split_provider=get_split,
                                      **metadata)
