"""COCO-json datasets in and out.

In: any COCO instances json, read by Detectron2's ``load_coco_json``, from the config
(``DATASETS.COCO``) or the command line (``DATASETS.COCO '[["name", "file.json",
"image_root"]]'``). The ustumor fields an image entry carries (:mod:`ustumor.data.fields`:
patient, clip, frame, DICOM frame, ...) are copied into its dataset dict, which
Detectron2's loader alone would drop, so patient- and clip-level evaluation work on COCO
sets too.

Out: :func:`export_coco_json` writes any registered dataset (BUSI, phantom,
hospital splits, ...) as COCO json through Detectron2's ``convert_to_coco_dict``,
with integer image ids and 1-based category ids as COCO tools expect, and each
image's ustumor fields (patient, clip, frame, split) kept beside the COCO ones.
"""
import json
import logging
import os
import re

import cv2
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.data.datasets.coco import convert_to_coco_dict

from ..fields import ALL_FIELDS, DICOM_FRAME, with_current_names
from ..image_io import read_dataset_frame
from .hospital import DIAGNOSIS_FIELDS

logger = logging.getLogger(__name__)

__all__ = ["register_coco_dataset", "register_coco_datasets", "load_coco_dicts", "export_coco_json"]

# Dataset-dict fields copied into each exported COCO image (Detectron2's loader ignores them).
EXTRA_IMAGE_KEYS = ALL_FIELDS + tuple(DIAGNOSIS_FIELDS.values())


def register_coco_dataset(name, json_file, image_root):
    """Register a COCO instances json as ``name``: Detectron2's ``load_coco_json``, plus
    the image entries' ustumor fields.

    Registering the same name again replaces it; a name taken by another dataset
    (e.g. ``busi_train``) is refused.
    """
    json_file, image_root = os.path.abspath(json_file), os.path.abspath(image_root)
    if name in DatasetCatalog.list():
        if MetadataCatalog.get(name).get("registered_by", None) != "register_coco_dataset":
            raise ValueError(f"DATASETS.COCO: {name!r} is already registered by another dataset; choose another name")
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"DATASETS.COCO: {name!r}: json file {json_file} not found")
    DatasetCatalog.register(name, lambda: load_coco_dicts(json_file, image_root, name))
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco",
                                  registered_by="register_coco_dataset")  # may be registered again


def load_coco_dicts(json_file, image_root, dataset_name=None):
    """Detectron2's dicts of a COCO json, each with its image entry's ustumor fields."""
    dicts = load_coco_json(json_file, image_root, dataset_name)
    with open(json_file) as f:
        images = {image["id"]: with_current_names(image) for image in json.load(f)["images"]}
    for record in dicts:
        image = images[record["image_id"]]
        record.update({key: image[key] for key in EXTRA_IMAGE_KEYS if key in image})
    return dicts


def register_coco_datasets(entries):
    """Register each ``[name, json_file, image_root]`` of ``DATASETS.COCO``; returns the names."""
    names = []
    for entry in entries:
        if isinstance(entry, str) or len(entry) != 3:
            raise ValueError(f"DATASETS.COCO entries are [name, json_file, image_root], got {entry!r}")
        register_coco_dataset(*(str(v) for v in entry))
        names.append(str(entry[0]))
    return names


def _frame_png_name(image_id):
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(image_id)).strip("_") + ".png"


def export_coco_json(dataset_name, output_file, relative_to=None, frames_dir=None):
    """Write ``dataset_name`` as a COCO instances json; returns a summary dict.

    Args:
        relative_to: write ``file_name`` relative to this folder (the ``image_root``
            to register the json with); absolute paths otherwise.
        frames_dir: write DICOM frames there as PNG and point at those, so that tools
            without DICOM support can read the export. Otherwise DICOM images keep the
            DICOM path and carry ``dicom_frame``.
    """
    coco = convert_to_coco_dict(dataset_name)
    dicts = DatasetCatalog.get(dataset_name)  # the same order convert_to_coco_dict used
    metadata = MetadataCatalog.get(dataset_name)
    if len(dicts) != len(coco["images"]):
        raise RuntimeError(f"{dataset_name}: dataset changed while exporting")

    # COCO tools expect integer image ids; keep the original as source_image_id.
    ids = [image["id"] for image in coco["images"]]
    if not all(isinstance(i, int) for i in ids) or len(set(ids)) != len(ids):
        new_id = {}
        for number, image in enumerate(coco["images"], start=1):
            image["source_image_id"] = image["id"]
            new_id[id(image)] = number
        old_to_new = {image["source_image_id"]: new_id[id(image)] for image in coco["images"]}
        for image in coco["images"]:
            image["id"] = new_id[id(image)]
        for annotation in coco["annotations"]:
            annotation["image_id"] = old_to_new[annotation["image_id"]]
    # Contiguous 0-based ids (no json behind the dataset) become COCO's 1-based ones.
    if not hasattr(metadata, "thing_dataset_id_to_contiguous_id"):
        for category in coco["categories"]:
            category["id"] += 1
        for annotation in coco["annotations"]:
            annotation["category_id"] += 1

    written_frames = 0
    for image, record in zip(coco["images"], dicts):
        for key in EXTRA_IMAGE_KEYS:
            if key in record:
                image[key] = record[key]
        if frames_dir and DICOM_FRAME in record:
            png = os.path.join(frames_dir, _frame_png_name(image.get("source_image_id", image["id"])))
            os.makedirs(frames_dir, exist_ok=True)
            if not cv2.imwrite(png, read_dataset_frame(record)):
                raise IOError(f"could not write {png}")
            image["source_file_name"] = image["file_name"]
            image["file_name"] = png
            del image[DICOM_FRAME]
            written_frames += 1
        if relative_to:
            image["file_name"] = os.path.relpath(os.path.abspath(image["file_name"]), os.path.abspath(relative_to))

    os.makedirs(os.path.dirname(os.path.abspath(output_file)), exist_ok=True)
    temporary = f"{output_file}.tmp{os.getpid()}"
    with open(temporary, "w") as f:
        json.dump(coco, f)
    os.replace(temporary, output_file)
    summary = {"dataset": dataset_name, "file": output_file, "images": len(coco["images"]),
               "annotations": len(coco["annotations"]), "categories": [c["name"] for c in coco["categories"]],
               "dicom_frames_written": written_frames}
    logger.info("Exported %s", summary)
    return summary
