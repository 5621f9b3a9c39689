import os
import re

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from conftest import blob_mask, shared_busi_or_skip
from ustumor.data.bad_input import BadInputError
from ustumor.data.datasets.busi import load_busi_dicts
from ustumor.data.datasets import register_busi_layout


def by_id(dicts):
    return {d["image_id"]: d for d in dicts}


def test_every_mask_and_component_becomes_a_box(tiny_busi):
    dicts = by_id(load_busi_dicts(str(tiny_busi), min_area=20))
    boxes = sorted(a["bbox"] for a in dicts["benign/benign (1).png"]["annotations"])
    # both masks read; the 3-pixel speck in the second mask is dropped
    assert boxes == [[10.0, 10.0, 30.0, 25.0], [50.0, 30.0, 70.0, 50.0]]
    assert all(a["bbox_mode"] == BoxMode.XYXY_ABS for a in dicts["benign/benign (1).png"]["annotations"])


def test_min_area_zero_keeps_specks(tiny_busi):
    dicts = by_id(load_busi_dicts(str(tiny_busi), min_area=0))
    boxes = sorted(a["bbox"] for a in dicts["benign/benign (1).png"]["annotations"])
    assert [2.0, 2.0, 5.0, 3.0] in boxes and len(boxes) == 3


def test_rgb_and_rgba_masks_load(tiny_busi):
    dicts = by_id(load_busi_dicts(str(tiny_busi)))
    assert dicts["benign/benign (2).png"]["annotations"][0]["bbox"] == [5.0, 5.0, 25.0, 20.0]
    assert dicts["malignant/malignant (1).png"]["annotations"][0]["bbox"] == [40.0, 10.0, 60.0, 40.0]
    # a lesion filling the whole image is still a lesion (mask with one value only)
    assert dicts["malignant/malignant (2).png"]["annotations"][0]["bbox"] == [0.0, 0.0, 80.0, 60.0]


def test_normals_are_kept_empty(tiny_busi):
    dicts = load_busi_dicts(str(tiny_busi))
    normals = [d for d in dicts if d["diagnosis"] == "normal"]
    assert len(normals) == 2 and all(d["annotations"] == [] for d in normals)
    for d in dicts:
        assert {"file_name", "height", "width", "image_id", "annotations", "diagnosis"} <= set(d)
        assert (d["height"], d["width"]) == (60, 60 + 20)


@pytest.mark.parametrize("mode,expected", [("lesion", {0}), ("benign_malignant", {0, 1})])
def test_class_modes(tiny_busi, mode, expected):
    dicts = load_busi_dicts(str(tiny_busi), class_mode=mode)
    ids = {a["category_id"] for d in dicts for a in d["annotations"]}
    assert ids == expected
    if mode == "benign_malignant":
        malignant = [a["category_id"] for d in dicts if d["diagnosis"] == "malignant" for a in d["annotations"]]
        assert set(malignant) == {1}


def test_unknown_class_mode_is_an_error(tiny_busi):
    with pytest.raises(ValueError, match="CLASS_MODE"):
        load_busi_dicts(str(tiny_busi), class_mode="birads")


def _corrupt(root):
    path = os.path.join(root, "benign", "benign (2).png")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 3])
    return path


def _mismatched_mask(root):
    path = os.path.join(root, "benign", "benign (2)_mask.png")
    cv2.imwrite(path, np.zeros((10, 10), np.uint8))
    return path


def _missing_mask(root):
    os.remove(os.path.join(root, "benign", "benign (2)_mask.png"))
    return os.path.join(root, "benign", "benign (2).png")


def _three_valued_mask(root):
    path = os.path.join(root, "benign", "benign (2)_mask.png")
    mask = blob_mask(60, 80, [(5, 5, 25, 20)])
    mask[30:40, 30:40] = 128
    cv2.imwrite(path, mask)
    return path


@pytest.mark.parametrize(
    "damage,message",
    [(_corrupt, "cannot decode"), (_mismatched_mask, "does not match"), (_missing_mask, "has no mask"),
     (_three_valued_mask, "more than two distinct values")],
)
def test_bad_input_names_the_file_or_is_skipped_and_counted(tiny_busi, damage, message, caplog):
    bad_path = damage(str(tiny_busi))
    before = {p: open(os.path.join(dp, p), "rb").read() for dp, _, fs in os.walk(tiny_busi) for p in fs}
    with pytest.raises(BadInputError, match=message) as error:
        load_busi_dicts(str(tiny_busi), on_bad_item="error")
    assert bad_path in str(error.value)
    dicts = load_busi_dicts(str(tiny_busi), on_bad_item="skip")
    assert len(dicts) == 5 and "benign/benign (2).png" not in by_id(dicts)
    assert "skipped 1 bad item" in caplog.text
    after = {p: open(os.path.join(dp, p), "rb").read() for dp, _, fs in os.walk(tiny_busi) for p in fs}
    assert before == after  # source data untouched


def test_registration_names_and_splits(tiny_busi):
    register_busi_layout("tinybusi", str(tiny_busi.parent), ratios=(0.5, 0.0, 0.5), seed=1)
    everything = DatasetCatalog.get("tinybusi_all")
    parts = [DatasetCatalog.get(f"tinybusi_{s}") for s in ("train", "val", "test")]
    assert sorted(d["image_id"] for p in parts for d in p) == sorted(d["image_id"] for d in everything)
    assert all("group_id" in d for d in everything)
    assert MetadataCatalog.get("tinybusi_train").thing_classes == ["lesion"]
    register_busi_layout("tinybusi", str(tiny_busi.parent), class_mode="benign_malignant")
    assert MetadataCatalog.get("tinybusi_test").thing_classes == ["benign", "malignant"]


@pytest.mark.slow
def test_real_busi_counts():
    root = shared_busi_or_skip()
    dicts = load_busi_dicts(root, min_area=20)
    counts = {c: sum(d["diagnosis"] == c for d in dicts) for c in ("benign", "malignant", "normal")}
    assert counts == {"benign": 437, "malignant": 210, "normal": 133}
    assert all(d["annotations"] for d in dicts if d["diagnosis"] != "normal")
    # the speck filter removes the tiny components, and only them
    with_specks = load_busi_dicts(root, min_area=0)
    n_all = sum(len(d["annotations"]) for d in with_specks)
    n_kept = sum(len(d["annotations"]) for d in dicts)
    assert 0 < n_all - n_kept <= 30


def test_jpeg_images_are_read_with_png_masks(tiny_busi):
    png = os.path.join(tiny_busi, "benign", "benign (2).png")
    cv2.imwrite(png[:-4] + ".jpg", cv2.imread(png, cv2.IMREAD_GRAYSCALE))
    os.remove(png)
    dicts = by_id(load_busi_dicts(str(tiny_busi)))
    assert "benign/benign (2).jpg" in dicts
    assert dicts["benign/benign (2).jpg"]["annotations"][0]["bbox"] == [5.0, 5.0, 25.0, 20.0]


def _write_mask(root, name, mask):
    path = os.path.join(root, name)
    cv2.imwrite(path, mask)
    return path


@pytest.mark.parametrize("speck,message", [(False, "no lesion: the mask is empty"), (True, "only specks")])
def test_labelled_image_without_a_lesion_is_bad_input_not_a_negative(tiny_busi, speck, message, caplog):
    """A benign/malignant image whose masks hold no component of MIN_AREA pixels must not
    load as a lesion-free image: it is an error naming the image and every mask, or a
    counted skip."""
    root = str(tiny_busi)
    empty = np.zeros((60, 80), np.uint8)
    second = empty.copy()
    if speck:
        second[2:3, 2:5] = 255  # 3 pixels, below MIN_AREA 20
    masks = [_write_mask(root, "benign/benign (1)_mask.png", empty),
             _write_mask(root, "benign/benign (1)_mask_1.png", second)]
    image = os.path.join(root, "benign", "benign (1).png")
    with pytest.raises(BadInputError, match=re.escape(message)) as error:
        load_busi_dicts(root, on_bad_item="error")
    assert image in str(error.value) and all(m in str(error.value) for m in masks)

    dicts = by_id(load_busi_dicts(root, on_bad_item="skip"))
    assert "benign/benign (1).png" not in dicts and len(dicts) == 5
    reason = "only specks" if speck else "no lesion"
    assert "skipped 1 bad item" in caplog.text and f"{reason}: 1" in caplog.text
    if speck:  # with MIN_AREA 0 the speck is the lesion, and the image loads with it
        assert by_id(load_busi_dicts(root, min_area=0))["benign/benign (1).png"]["annotations"][0]["bbox"] == \
            [2.0, 2.0, 5.0, 3.0]


def test_malignant_image_with_an_empty_mask_is_bad_input(tiny_busi):
    path = _write_mask(str(tiny_busi), "malignant/malignant (1)_mask.png", np.zeros((60, 80), np.uint8))
    with pytest.raises(BadInputError, match="filed under malignant/") as error:
        load_busi_dicts(str(tiny_busi))
    assert path in str(error.value)


def test_normal_image_with_an_empty_mask_is_a_negative(tiny_busi, caplog):
    # normals have empty masks by design: no error, no skip, no annotations
    dicts = by_id(load_busi_dicts(str(tiny_busi), on_bad_item="error"))
    assert dicts["normal/normal (1).png"]["annotations"] == [] == dicts["normal/normal (2).png"]["annotations"]
    assert "skipped" not in caplog.text
