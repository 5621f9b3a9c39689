import json

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.structures import BoxMode

from ustumor.config import add_ustumor_config
from ustumor.data.mapper import UltrasoundDatasetMapper
from ustumor.data.preprocessing.normalization import apply_normalization, compute_pixel_stats
from ustumor.synthetic import embed_in_workspace, embed_mask, render_phantom
from ustumor.data.datasets.busi import mask_to_boxes
import cv2


def make_cfg(**overrides):
    cfg = get_cfg()
    add_ustumor_config(cfg)
    cfg.INPUT.MIN_SIZE_TRAIN = (256,)
    cfg.INPUT.MAX_SIZE_TRAIN = 1000
    cfg.INPUT.MIN_SIZE_TEST = 256
    cfg.INPUT.MAX_SIZE_TEST = 1000
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.INPUT.BRIGHTNESS_RANGE = [1.0, 1.0]
    cfg.INPUT.CONTRAST_RANGE = [1.0, 1.0]
    for key, value in overrides.items():
        cfg.merge_from_list([key, value])
    return cfg


@pytest.fixture
def workspace_frame(tmp_path):
    """A 600x800 scanner screenshot with one lesion; its true scan box and lesion box."""
    rng = np.random.default_rng(5)
    scan, masks = render_phantom(rng, 300, 400, "benign")
    workspace, scan_box = embed_in_workspace(rng, scan, (600, 800))
    lesion_box = mask_to_boxes(embed_mask(masks[0], scan_box, (600, 800)) > 0, 1)[0]
    path = str(tmp_path / "frame.png")
    cv2.imwrite(path, cv2.cvtColor(workspace, cv2.COLOR_RGB2BGR))
    record = {"file_name": path, "height": 600, "width": 800, "image_id": "frame",
              "annotations": [{"bbox": lesion_box, "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0, "iscrowd": 0}]}
    return record, scan_box, lesion_box


def test_boxes_shift_with_the_crop_and_resize(workspace_frame):
    record, scan_box, lesion_box = workspace_frame
    mapper = UltrasoundDatasetMapper(make_cfg(**{"INPUT.CROP_ULTRASOUND": True}), is_train=True)
    out = mapper(record)
    x0, y0, x1, y1 = out["crop_box"]
    assert abs(x0 - scan_box[0]) <= 3 and abs(y0 - scan_box[1]) <= 3
    assert abs(x1 - scan_box[2]) <= 3 and abs(y1 - scan_box[3]) <= 3
    scale = 256 / min(y1 - y0, x1 - x0)
    expected = (np.array(lesion_box) - [x0, y0, x0, y0]) * scale
    got = out["instances"].gt_boxes.tensor.numpy()[0]
    assert np.allclose(got, expected, atol=1.0)
    assert out["image"].shape[1] == 256 and out["image"].shape[0] == 3
    # the dataset dict itself is untouched (original frame coordinates)
    assert record["annotations"][0]["bbox"] == lesion_box


def test_boxes_partly_outside_the_crop_are_clipped_and_boxes_outside_it_dropped(tmp_path):
    image = (np.arange(600 * 800).reshape(600, 800) % 251).astype(np.uint8)
    path = str(tmp_path / "frame.png")
    cv2.imwrite(path, image)
    crop_box = (100, 50, 400, 350)  # 300 x 300
    boxes = [[150, 100, 200, 180],  # inside
             [80, 40, 120, 70],  # over the top-left corner
             [380, 300, 450, 400],  # over the bottom-right corner
             [10, 10, 60, 40]]  # entirely outside
    record = {"file_name": path, "height": 600, "width": 800, "image_id": "frame",
              "annotations": [{"bbox": b, "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0, "iscrowd": 0}
                              for b in boxes]}
    mapper = UltrasoundDatasetMapper(is_train=True, augmentations=[], crop_ultrasound=True)
    mapper.crop_cache.crop_box = lambda path, grey=None, frame=None: crop_box
    out = mapper(record)
    assert out["crop_box"] == crop_box
    assert np.array_equal(out["image"][0].numpy(), image[50:350, 100:400])
    expected = [[50, 50, 100, 130], [0, 0, 20, 20], [280, 250, 300, 300]]  # moved by (100, 50), clipped
    np.testing.assert_allclose(out["instances"].gt_boxes.tensor.numpy(), expected)


def test_without_crop_boxes_only_scale(workspace_frame):
    record, _, lesion_box = workspace_frame
    out = UltrasoundDatasetMapper(make_cfg(), is_train=True)(record)
    assert out["crop_box"] == (0, 0, 800, 600)
    assert np.allclose(out["instances"].gt_boxes.tensor.numpy()[0], np.array(lesion_box) * 256 / 600, atol=1.0)


def test_grey_is_replicated_to_three_equal_channels(workspace_frame):
    record, _, _ = workspace_frame
    image = UltrasoundDatasetMapper(make_cfg(), is_train=False)(record)["image"]
    assert image.dtype == torch.uint8 and image.shape[0] == 3
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_flip_moves_boxes_with_pixels(workspace_frame):
    record, _, lesion_box = workspace_frame
    cfg = make_cfg(**{"INPUT.RANDOM_FLIP": "horizontal", "INPUT.CROP_ULTRASOUND": True})
    mapper = UltrasoundDatasetMapper(cfg, is_train=True)
    lefts = set()
    for _ in range(12):
        out = mapper(record)
        x0, y0, x1, y1 = out["crop_box"]
        scale = out["image"].shape[1] / (y1 - y0)
        box = out["instances"].gt_boxes.tensor.numpy()[0]
        lefts.add(round(float(box[0]) / scale))
        # pixels inside the box are the dark lesion in either orientation
        bx0, by0, bx1, by1 = box.astype(int)
        assert out["image"][0, by0:by1, bx0:bx1].float().mean() < 0.8 * out["image"][0].float().mean()
    assert lefts == {round(lesion_box[0] - x0), round(x1 - lesion_box[2])}


def test_empty_images_are_kept_as_negatives(workspace_frame):
    record, _, _ = workspace_frame
    record = dict(record, annotations=[])
    out = UltrasoundDatasetMapper(make_cfg(), is_train=True)(record)
    assert len(out["instances"]) == 0


def test_ultrasound_normalization_uses_pixel_stats(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 200, (20, 30)).astype(np.uint8) for _ in range(3)]
    stats = compute_pixel_stats(iter(images))
    stacked = np.concatenate([i.ravel() for i in images]).astype(np.float64)
    assert np.isclose(stats["mean"], stacked.mean()) and np.isclose(stats["std"], stacked.std())
    path = tmp_path / "stats.json"
    path.write_text(json.dumps(stats))
    cfg = make_cfg(**{"INPUT.NORMALIZATION": "ultrasound", "INPUT.PIXEL_STATS_FILE": str(path)})
    apply_normalization(cfg)
    assert cfg.MODEL.PIXEL_MEAN == [stats["mean"]] * 3 and cfg.MODEL.PIXEL_STD == [stats["std"]] * 3


def test_imagenet_normalization_keeps_the_weights_stats():
    cfg = make_cfg()
    before = list(cfg.MODEL.PIXEL_MEAN)
    apply_normalization(cfg)
    assert cfg.MODEL.PIXEL_MEAN == before


def test_missing_pixel_stats_file_says_how_to_make_it():
    cfg = make_cfg(**{"INPUT.NORMALIZATION": "ultrasound", "INPUT.PIXEL_STATS_FILE": "/nonexistent.json"})
    with pytest.raises(FileNotFoundError, match="compute_pixel_stats"):
        apply_normalization(cfg)


def _low_contrast_record(tmp_path, grey):
    path = str(tmp_path / "low_contrast.png")
    cv2.imwrite(path, grey)
    return {"file_name": path, "height": grey.shape[0], "width": grey.shape[1], "image_id": "low", "annotations": []}


def test_min_max_stretch_maps_each_images_range_onto_0_255(tmp_path):
    grey = np.random.default_rng(0).integers(40, 91, size=(64, 80)).astype(np.uint8)
    grey[0, 0], grey[0, 1] = 40, 90
    record = _low_contrast_record(tmp_path, grey)
    cfg = make_cfg(**{"INPUT.MIN_SIZE_TEST": 64, "INPUT.MAX_SIZE_TEST": 80})  # no resampling
    kept = UltrasoundDatasetMapper(cfg, is_train=False)(record)["image"]
    assert torch.equal(kept[0], torch.from_numpy(grey))  # off by default: grey levels as read
    cfg.INPUT.MIN_MAX_STRETCH = True
    stretched = UltrasoundDatasetMapper(cfg, is_train=False)(record)["image"]
    expected = (grey.astype(np.float64) - 40) * 255 / 50
    assert np.allclose(stretched[0].numpy(), expected, atol=1e-3)
    assert torch.equal(stretched[0], stretched[2])


def test_min_max_stretch_leaves_a_flat_image_flat(tmp_path):
    record = _low_contrast_record(tmp_path, np.full((64, 80), 7, np.uint8))
    cfg = make_cfg(**{"INPUT.MIN_SIZE_TEST": 64, "INPUT.MAX_SIZE_TEST": 80, "INPUT.MIN_MAX_STRETCH": True})
    image = UltrasoundDatasetMapper(cfg, is_train=False)(record)["image"]
    assert torch.isfinite(image).all() and image.max() == image.min() == 0
