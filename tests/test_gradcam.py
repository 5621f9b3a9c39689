"""Grad-CAM for Detectron2's Faster R-CNN: mechanics, guards, the tool, and sanity checks on a trained model."""
import os

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from pytorch_grad_cam import HiResCAM
from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget
from scipy.stats import spearmanr

from phantom_model import run_tool_on, trained_phantom_model, truth_boxes
from ustumor.data.mapper import UltrasoundDatasetMapper
from ustumor.evaluation.penalized_iou import pairwise_iou
from ustumor.interpretation.gradcam import (DEFAULT_METHOD, DetectionGradCAM, DetectionModelAdapter, box_area_share,
                                            heat_share_in_box, resolve_layer)
from ustumor.interpretation.overlay import render_cam, render_no_detection

pytestmark = pytest.mark.slow  # the module's fixtures train a phantom model

SCORE_THRESH = 0.45  # TEST.PENALIZED_IOU.SCORE_THRESH's default: the detections the numbers count
CORRECT_IOU = 0.5  # a "correct detection" overlaps its lesion by IoU >= 0.5 (PASCAL/COCO AP50)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """On this machine's two shared cores, one torch thread runs these small models ~5x faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def phantom():
    return trained_phantom_model()


@pytest.fixture(scope="module")
def mapper(phantom):
    return UltrasoundDatasetMapper(phantom.cfg, is_train=False)


@pytest.fixture(scope="module")
def lesion_images(phantom, mapper):
    """(dataset dict, mapper inputs, truth boxes) of every held-out image with a lesion."""
    return [(d, mapper(d), truth_boxes(d)) for d in phantom.held_out if len(truth_boxes(d))]


def explain_correct_detections(model, lesion_images, method):
    """(dataset dict, inputs, CAM) of each image whose top kept detection is correct, at res5."""
    explainer = DetectionGradCAM(model, layer="res5", method=method, score_thresh=SCORE_THRESH)
    found = []
    for dataset_dict, inputs, truth in lesion_images:
        _, cams = explainer.explain(inputs, instance=0)
        if cams and pairwise_iou(cams[0].box[None], truth).max() >= CORRECT_IOU:
            found.append((dataset_dict, inputs, cams[0]))
    return found


@pytest.fixture(scope="module")
def correct_detections(phantom, lesion_images):
    """Correct top detections with their default CAM (HiResCAM at res5)."""
    return explain_correct_detections(phantom.model, lesion_images, DEFAULT_METHOD)


@pytest.fixture(scope="module")
def with_map(correct_detections):
    """A correct detection whose map is not empty, for the mechanics tests."""
    return next((d, i, c) for d, i, c in correct_detections if c.heatmap is not None)


@pytest.fixture(scope="module")
def randomised_model(phantom):
    """The same architecture with fresh random weights (Adebayo et al.'s full model randomisation)."""
    torch.manual_seed(1)
    return build_model(phantom.cfg).eval()


# ------------------------------------------------------------------ the trained model itself

def test_the_briefly_trained_model_detects_most_lesions(lesion_images, correct_detections):
    # the sanity checks below mean nothing on a model that does not detect
    assert len(lesion_images) >= 10
    assert len(correct_detections) >= 0.7 * len(lesion_images)


# ------------------------------------------------------------------ mechanics

def test_maps_cover_the_original_image_and_are_normalised(correct_detections):
    explained = [(d, i, c) for d, i, c in correct_detections if c.heatmap is not None]
    assert len(explained) >= 0.8 * len(correct_detections)
    for dataset_dict, inputs, cam in explained:
        assert cam.heatmap.shape == (dataset_dict["height"], dataset_dict["width"])
        assert cam.heatmap.dtype == np.float32 and np.isfinite(cam.heatmap).all()
        assert cam.heatmap.min() >= 0 and cam.heatmap.max() == pytest.approx(1.0)
    # phantom widths are not multiples of 32: the backbone's padding must have been cut off
    assert any(inputs["image"].shape[-1] % 32 for _, inputs, _ in correct_detections)


def test_crop_offset_places_the_map_in_the_original_frame():
    grayscale = np.zeros((64, 96), np.float32)  # padded model input, image 60x90
    grayscale[10:20, 30:40] = 1.0
    inputs = {"image": torch.zeros(3, 60, 90), "height": 60, "width": 90, "crop_box": (50, 20, 140, 80),
              "original_height": 100, "original_width": 200}
    heatmap = DetectionGradCAM._to_original_frame(grayscale, inputs)
    assert heatmap.shape == (100, 200)
    assert heatmap[:20].max() == 0 and heatmap[:, :50].max() == 0 and heatmap[80:].max() == 0
    y, x = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    assert 20 + 10 <= y < 20 + 20 and 50 + 30 <= x < 50 + 40


def test_a_cropped_scan_window_maps_back_to_the_screenshot(phantom, with_map):
    """With INPUT.CROP_ULTRASOUND the mapper records the crop; CropAwareRCNN shifts the boxes in
    place (under autograd here) and the map must land on the same pixels of the screenshot."""
    _, inputs, plain = with_map
    x0, y0 = 30, 20
    cropped = dict(inputs, crop_box=(x0, y0, x0 + inputs["width"], y0 + inputs["height"]),
                   original_height=inputs["height"] + 50, original_width=inputs["width"] + 60)
    _, cams = DetectionGradCAM(phantom.model).explain(cropped, instance=0)
    np.testing.assert_allclose(cams[0].box, plain.box + [x0, y0, x0, y0], atol=1e-3)
    heatmap = cams[0].heatmap
    assert heatmap.shape == (inputs["height"] + 50, inputs["width"] + 60)
    assert heatmap[:y0].max() == 0 and heatmap[:, :x0].max() == 0
    np.testing.assert_allclose(heatmap[y0:y0 + inputs["height"], x0:x0 + inputs["width"]], plain.heatmap, atol=1e-4)


def test_each_kept_detection_is_explained_in_turn_and_instance_picks_one(phantom, with_map):
    _, inputs, _ = with_map
    explainer = DetectionGradCAM(phantom.model, score_thresh=0.05)
    detections, cams = explainer.explain(inputs)
    assert len(detections["scores"]) >= 2  # at 0.05 a trained model still proposes a few boxes
    assert [c.index for c in cams] == list(range(len(detections["scores"])))
    assert np.all(np.diff(detections["scores"]) <= 0)
    _, only = explainer.explain(inputs, instance=1)
    assert len(only) == 1 and only[0].index == 1
    np.testing.assert_allclose(only[0].box, detections["boxes"][1])
    # different detections, different explanations
    first, second = cams[0].heatmap, cams[1].heatmap
    if first is not None and second is not None:
        assert not np.allclose(first, second)


def test_no_detection_gives_no_map(phantom, with_map):
    _, inputs, _ = with_map
    detections, cams = DetectionGradCAM(phantom.model, score_thresh=1.01).explain(inputs)
    assert len(detections["scores"]) == 0 and cams == []
    picture = render_no_detection(np.zeros((128, 160), np.uint8), 1.01)
    assert picture.shape[0] > 128 and picture.std() > 0  # the note is drawn


def test_frozen_weights_still_get_a_map(phantom, with_map):
    """The input requires grad, so a layer whose weights are all frozen still sees a gradient."""
    _, inputs, reference = with_map
    frozen = [p for p in phantom.model.parameters() if p.requires_grad]
    for parameter in frozen:
        parameter.requires_grad_(False)
    try:
        _, cams = DetectionGradCAM(phantom.model).explain(inputs, instance=0)
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)
    assert cams[0].heatmap is not None, cams[0].note
    np.testing.assert_allclose(cams[0].heatmap, reference.heatmap, atol=1e-4)


def test_hooks_are_removed_and_gradients_cleared(phantom, with_map):
    _, inputs, _ = with_map
    layer = resolve_layer(phantom.model, "res5")
    hooks_before = len(layer._forward_hooks)
    DetectionGradCAM(phantom.model).explain(inputs, instance=0)
    assert len(layer._forward_hooks) == hooks_before
    assert all(p.grad is None for p in phantom.model.parameters())


def test_an_fpn_level_the_box_is_not_pooled_from_gets_a_reason_not_noise(phantom, with_map):
    """Boxes of phantom size are ROI-pooled from p2; no gradient reaches p5 for them."""
    _, inputs, _ = with_map
    _, cams = DetectionGradCAM(phantom.model, layer="p5").explain(inputs, instance=0)
    assert cams[0].heatmap is None
    assert "p2" in cams[0].note and "ROI pooling" in cams[0].note
    _, cams = DetectionGradCAM(phantom.model, layer="p2").explain(inputs, instance=0)
    assert cams[0].heatmap is not None or "all zero" in cams[0].note


def test_non_finite_gradients_are_reported(phantom, with_map):
    _, inputs, _ = with_map
    poison = phantom.model.roi_heads.box_head.register_full_backward_hook(
        lambda module, grad_input, grad_output: tuple(g * float("nan") if g is not None else None for g in grad_input))
    try:
        _, cams = DetectionGradCAM(phantom.model).explain(inputs, instance=0)
    finally:
        poison.remove()
    assert cams[0].heatmap is None and "finite" in cams[0].note


def test_readable_layer_names(phantom):
    model = phantom.model
    assert resolve_layer(model, "res5") is model.backbone.bottom_up.res5[-1]
    assert resolve_layer(model, "res4") is model.backbone.bottom_up.res4[-1]
    assert resolve_layer(model, "p3") is model.backbone.fpn_output3
    assert resolve_layer(model, "backbone.bottom_up.res5.0") is model.backbone.bottom_up.res5[0]
    with pytest.raises(ValueError, match="unknown layer"):
        resolve_layer(model, "res9")


def test_the_adapter_serves_pytorch_grad_cams_own_detection_target(phantom, with_map):
    """The adapter's outputs fit the library's FasterRCNNBoxScoreTarget, written for torchvision."""
    _, inputs, cam = with_map
    explainer = DetectionGradCAM(phantom.model)
    adapter = DetectionModelAdapter(phantom.model, inputs, inputs["image"].shape[-2:])
    try:
        with HiResCAM(model=adapter, target_layers=[resolve_layer(phantom.model, "res5")]) as engine:
            target = FasterRCNNBoxScoreTarget(labels=[cam.label], bounding_boxes=[cam.box])
            grayscale = engine(input_tensor=explainer._padded_input(inputs["image"]), targets=[target])[0]
            gradients = [g.clone() for g in engine.activations_and_grads.gradients]
    finally:
        phantom.model.zero_grad(set_to_none=True)
    assert gradients and float(gradients[0].abs().max()) > 0
    assert np.isfinite(grayscale).all() and grayscale.max() > 0


def test_overlay_picture(with_map):
    dataset_dict, _, cam = with_map
    grey = np.full((dataset_dict["height"], dataset_dict["width"]), 100, np.uint8)
    picture = render_cam(grey, cam, truth_boxes(dataset_dict))
    assert picture.shape[0] > grey.shape[0] and picture.shape[1] >= grey.shape[1]
    # the heat map's colours are there: a flat grey image would stay grey without it
    assert np.abs(picture[..., 0].astype(int) - picture[..., 2]).max() > 100


# ------------------------------------------------------------------ sanity checks
#
# Measured with this fixture's recipe over random seeds 0-3 (tests/phantom_model.py), HiResCAM at
# res5: 64-100% of correct detections at a heat ratio >= 2, median ratio 3.0-4.5 (with
# randomised weights 0.4-1.7), median Spearman over the heat <= 0. Grad-CAM: 0-15% at
# ratio >= 2, so it is not held to the localisation check (see benchmarks/README.md).

def heat_ratio(cam):
    """Share of the map's heat inside the detection's box over the box's share of the image.
    1 is what a map blind to the detection gives on average; an empty map counts as 0."""
    if cam.heatmap is None:
        return 0.0
    return heat_share_in_box(cam.heatmap, cam.box) / box_area_share(cam.box, cam.heatmap.shape)


def randomised_cam(randomised_model, inputs, box, method):
    """The randomised model's map for its detection that overlaps ``box`` most."""
    explainer = DetectionGradCAM(randomised_model, method=method, score_thresh=0.0)
    detections = explainer.detect(inputs)
    assert len(detections["scores"]), "a randomised Faster R-CNN still outputs boxes (scores near 0.5)"
    _, cams = explainer.explain(inputs, instance=int(np.argmax(pairwise_iou(box[None], detections["boxes"])[0])))
    return cams[0]


def test_localisation_heat_concentrates_in_the_detection(correct_detections):
    """Sanity check 1: at least twice the box's area share of heat in the box (ratio >= 2),
    for most correct detections (>= 60%: the worst seed measured gave 64%), and for the
    typical one (median ratio >= 2.5; measured 3.0-4.5)."""
    ratios = np.array([heat_ratio(cam) for _, _, cam in correct_detections])
    assert (ratios >= 2).mean() >= 0.6, ratios.round(2)
    assert np.median(ratios) >= 2.5, ratios.round(2)


def test_localisation_comes_from_training_not_from_the_architecture(correct_detections, randomised_model):
    """ROI pooling alone pulls a gradient-based map towards the box it explains: the randomised
    model's map of its detection nearest each trained one, scored in its own box, is that pull
    (median ratio 1.6 measured). The trained model's median must be clearly above it. Scoring
    the randomised map in the trained box instead measures a box it does not explain (the
    nearest randomised detection overlapped it by IoU 0.11-0.60)."""
    trained, randomised = [], []
    for _, inputs, cam in correct_detections:
        trained.append(heat_ratio(cam))
        randomised.append(heat_ratio(randomised_cam(randomised_model, inputs, cam.box, DEFAULT_METHOD)))
    assert np.median(trained) >= 1.5 * np.median(randomised), (np.round(trained, 2), np.round(randomised, 2))


@pytest.mark.parametrize("method", [DEFAULT_METHOD, "gradcam"])
def test_model_randomisation_changes_the_map(phantom, lesion_images, randomised_model, method):
    """Sanity check 2 (Adebayo et al. 2018): maps of the trained and the randomised model differ.

    Spearman rank correlation over the pixels where either map has heat (> 5% of its peak):
    pixels cold in both say nothing about the weights; an empty map against a non-empty one
    counts as 0. Median below 0.3 (measured <= 0 for HiResCAM, 0 for Grad-CAM)."""
    correlations = []
    for _, inputs, cam in explain_correct_detections(phantom.model, lesion_images, method):
        if cam.heatmap is None:
            continue
        other = randomised_cam(randomised_model, inputs, cam.box, method).heatmap
        if other is None:
            correlations.append(0.0)
            continue
        heat = (cam.heatmap > 0.05) | (other > 0.05)
        correlations.append(spearmanr(cam.heatmap[heat], other[heat]).correlation)
    assert len(correlations) >= 5
    assert np.median(correlations) < 0.3, np.round(correlations, 2)



def run_gradcam_tool(phantom, output, *args):
    return run_tool_on(phantom, "gradcam.py", output, "gradcam.json", *args)


def test_tool_explains_a_dataset(phantom, tmp_path):
    output = str(tmp_path / "cams")
    index = run_gradcam_tool(phantom, output, "--dataset", "phantom_test", "--max-images", "4",
                             "--method", "gradcam++", "--layer", "res4")
    assert index["layer"] == "res4" and index["method"] == "gradcam++" and index["score_thresh"] == SCORE_THRESH
    assert len({e["image"] for e in index["images"]}) == 4
    for entry in index["images"]:
        assert os.path.isfile(os.path.join(output, entry["file"]))
        if entry["detection"] is None:
            assert entry["file"].endswith("_no_detection.png")
        else:
            assert entry["file"].endswith("_det%d_res4_gradcam++.png" % entry["detection"])
            assert entry["score"] >= SCORE_THRESH


def test_tool_explains_plain_files_and_says_when_nothing_was_detected(phantom, tmp_path):
    image = next(d["file_name"] for d in phantom.held_out if len(truth_boxes(d)))
    output = str(tmp_path / "none")
    index = run_gradcam_tool(phantom, output, "--input", image, "TEST.PENALIZED_IOU.SCORE_THRESH", "1.01")
    assert [e["detection"] for e in index["images"]] == [None]
    assert sorted(os.listdir(output)) == sorted(["gradcam.json", index["images"][0]["file"]])
    assert index["images"][0]["file"].endswith("_no_detection.png")
