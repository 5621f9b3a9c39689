"""MODEL.MEMORY_FORMAT changes the memory layout only: same features, RPN losses and
gradients, same detections, and checkpoints move between the two layouts. The model
switches layout between training and inference, and "auto" follows oneDNN's ISA."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from conftest import REPO_ROOT
from phantom_model import trained_phantom_model
from ustumor.data.mapper import UltrasoundDatasetMapper
from ustumor.synthetic import render_phantom
from ustumor.engine.defaults import build_config

CONFIG = os.path.join(REPO_ROOT, "configs", "phantom", "faster_rcnn_R_50_FPN_cpu_300it.yaml")


def layout(channels_last):
    return "channels_last" if channels_last else "contiguous"


def random_model(channels_last, test_channels_last=None):
    test_channels_last = channels_last if test_channels_last is None else test_channels_last
    cfg = build_config(CONFIG, ["MODEL.MEMORY_FORMAT.TRAIN", layout(channels_last),
                                "MODEL.MEMORY_FORMAT.TEST", layout(test_channels_last), "MODEL.WEIGHTS", ""])
    torch.manual_seed(0)
    return build_model(cfg)


def conv_weights(model):
    return [p for p in model.parameters() if p.dim() == 4 and p.shape[-1] > 1]


def is_channels_last(model):
    layouts = {p.is_contiguous(memory_format=torch.channels_last) for p in conv_weights(model)}
    assert len(layouts) == 1, "mixed layouts"
    return layouts.pop()


def scan_inputs(count=2):
    rng = np.random.default_rng(3)
    inputs = []
    for _ in range(count):
        grey, masks = render_phantom(rng, 96, 128, "malignant")
        boxes = []
        for mask in masks:
            ys, xs = np.nonzero(mask)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        instances = Instances((96, 128), gt_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32)),
                              gt_classes=torch.zeros(len(boxes), dtype=torch.int64))
        image = torch.from_numpy(np.repeat(grey[None], 3, axis=0).copy())
        inputs.append({"image": image, "height": 96, "width": 128, "instances": instances})
    return inputs


@pytest.fixture(scope="module")
def random_models():
    return random_model(False), random_model(True)


def test_only_the_layout_differs(random_models):
    contiguous, channels_last = random_models
    convs = [p for p in channels_last.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert not any(p.is_contiguous(memory_format=torch.channels_last) for p in contiguous.parameters()
                   if p.dim() == 4 and p.shape[-1] > 1)
    assert channels_last.preprocess_image(scan_inputs(1)).tensor.is_contiguous(memory_format=torch.channels_last)
    for (name, a), (_, b) in zip(contiguous.state_dict().items(), channels_last.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.slow
def test_same_features_rpn_losses_and_gradients(random_models):
    # The ROI head's losses are left out: float rounding differs between layouts and can
    # reorder a random model's near-tied proposal scores, and with them the sampled RoIs.
    inputs = scan_inputs()
    features, losses, gradients = [], [], []
    for model in random_models:
        model.train()
        model.zero_grad()
        with torch.no_grad():
            features.append(model.backbone(model.preprocess_image(inputs).tensor))
        torch.manual_seed(1)  # the same anchor sampling in both
        with EventStorage(0):
            loss_dict = model(inputs)
        rpn = {k: v for k, v in loss_dict.items() if k.startswith("loss_rpn")}
        sum(rpn.values()).backward()
        losses.append({k: v.item() for k, v in rpn.items()})
        gradients.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    for level, feature in features[0].items():
        assert torch.allclose(features[1][level], feature, rtol=1e-3, atol=1e-3 * feature.abs().max().item()), level
    assert len(losses[0]) == 2
    for key, value in losses[0].items():
        assert losses[1][key] == pytest.approx(value, rel=1e-3), key
    assert gradients[0].keys() == gradients[1].keys() and len(gradients[0]) > 100
    # Randomly initialised BN networks amplify float32 rounding: torchvision's own ResNet-50
    # differs from its float64 gradients by 2-4% per parameter in either layout. A layout
    # error would leave the gradients unrelated (relative error ~100%).
    flat = [torch.cat([g.flatten() for g in grads.values()]) for grads in gradients]
    assert torch.nn.functional.cosine_similarity(flat[0], flat[1], dim=0) > 0.999
    for name, grad in gradients[0].items():
        relative_error = (gradients[1][name] - grad).norm() / grad.norm().clamp(min=1e-12)
        assert relative_error < 0.1, (name, float(relative_error))


@pytest.mark.slow
def test_same_detections_and_checkpoints_load_across_layouts(tmp_path):
    phantom = trained_phantom_model()
    models = {}
    for channels_last in (False, True):
        cfg = phantom.cfg.clone()
        cfg.defrost()
        cfg.MODEL.MEMORY_FORMAT.TRAIN = cfg.MODEL.MEMORY_FORMAT.TEST = layout(channels_last)
        models[channels_last] = build_model(cfg).eval()
        # the checkpoint was written by a model of the configured (channels-last) layout
        DetectionCheckpointer(models[channels_last]).load(phantom.weights)
    mapper = UltrasoundDatasetMapper(phantom.cfg, is_train=False)
    top = {False: [], True: []}
    with torch.no_grad():
        for record in phantom.held_out[:8]:
            inputs = [mapper(record)]
            for channels_last, model in models.items():
                instances = model(inputs)[0]["instances"]
                top[channels_last].append((instances.pred_boxes.tensor[:1], instances.scores[:1]))
    assert sum(len(scores) for _, scores in top[False]) >= 4  # the trained model detects
    for (boxes, scores), (cl_boxes, cl_scores) in zip(top[False], top[True]):
        assert torch.allclose(cl_boxes, boxes, atol=1e-2) and torch.allclose(cl_scores, scores, atol=1e-4)


def test_layout_switches_between_training_and_inference():
    model = random_model(False, test_channels_last=True)
    parameters = list(model.parameters())
    optimizer = torch.optim.SGD(parameters, lr=0.01, momentum=0.9)
    assert model.training and not is_channels_last(model)
    inputs = scan_inputs()
    with EventStorage(0):
        for _ in range(2):
            model.eval()
            assert is_channels_last(model)
            with torch.no_grad():
                assert model.preprocess_image(inputs).tensor.is_contiguous(memory_format=torch.channels_last)
                model(inputs)
            model.train()
            assert not is_channels_last(model)
            assert not model.preprocess_image(inputs).tensor.is_contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad()
            sum(model(inputs).values()).backward()
            optimizer.step()
    # the same Parameter objects throughout, so the optimizer and DDP keep tracking them
    assert all(a is b for a, b in zip(parameters, model.parameters()))
    assert all(p.grad is not None for p in conv_weights(model)[-5:])


def test_old_channels_last_key_still_reads():
    cfg = build_config(CONFIG, ["MODEL.CHANNELS_LAST", "False"])
    assert (cfg.MODEL.MEMORY_FORMAT.TRAIN, cfg.MODEL.MEMORY_FORMAT.TEST) == ("contiguous", "contiguous")
    with pytest.raises(ValueError, match="MODEL.CHANNELS_LAST and MODEL.MEMORY_FORMAT.TRAIN"):
        build_config(CONFIG, ["MODEL.CHANNELS_LAST", "True", "MODEL.MEMORY_FORMAT.TRAIN", "contiguous"])
    with pytest.raises(ValueError, match="'nhwc'"):
        build_model(build_config(CONFIG, ["MODEL.MEMORY_FORMAT.TEST", "nhwc", "MODEL.WEIGHTS", ""]))


AUTO_PROBE = """
import json, torch
import ustumor
from detectron2.modeling import build_model
from ustumor.engine.defaults import build_config
from ustumor.utils.cpu import onednn_isa
model = build_model(build_config({config!r}, ["MODEL.WEIGHTS", ""]))
layouts = {{}}
for phase, training in (("train", True), ("test", False)):
    model.train(training)
    conv = model.backbone.bottom_up.stem.conv1.weight
    layouts[phase] = conv.is_contiguous(memory_format=torch.channels_last)
print(json.dumps({{"isa": onednn_isa(), "layouts": layouts}}))
"""


def auto_layouts(**limits):
    env = dict(os.environ, **limits)
    output = subprocess.run([sys.executable, "-c", AUTO_PROBE.format(config=CONFIG)], env=env, cwd=REPO_ROOT,
                            check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


@pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64", reason="x86-64 ISAs")
def test_auto_follows_onednn_isa():
    # oneDNN limited to AVX2, as on an AVX2-only CPU: NCHW training, channels-last inference
    avx2 = auto_layouts(ONEDNN_MAX_CPU_ISA="AVX2", ATEN_CPU_CAPABILITY="avx2")
    assert "AVX2" in avx2["isa"] and "AVX-512" not in avx2["isa"]
    assert avx2["layouts"] == {"train": False, "test": True}
    native = auto_layouts()
    if "AVX-512" in native["isa"]:
        assert native["layouts"] == {"train": True, "test": True}
