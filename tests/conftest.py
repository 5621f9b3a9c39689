import importlib.util
import os
import subprocess
import sys
import tempfile

import cv2
import numpy as np
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_BUSI = os.path.join(REPO_ROOT, "..", "shared", "datasets", "BUSI")

# Keep split caches out of the user's home; set before ustumor is imported.
os.environ.setdefault("USTUMOR_CACHE", tempfile.mkdtemp(prefix="ustumor_test_cache_"))
os.environ.setdefault("USTUMOR_DATASETS", os.path.join(tempfile.mkdtemp(prefix="ustumor_test_data_")))
sys.path.insert(0, REPO_ROOT)


def train_net_command(config, *args):
    """``python tools/train_net.py --config-file config args``, the command a user types."""
    return [sys.executable, os.path.join(REPO_ROOT, "tools", "train_net.py"), "--config-file", config, *args]


def load_tool(name):
    """A tools/ script as a module, to run its ``main`` in-process (a fresh interpreter costs ~20 s here)."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(REPO_ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_train_net(datasets_root, config, *args):
    """``tools/train_net.py --config-file config args`` as a user runs it, on ``datasets_root``;
    fails the test unless it succeeds, and returns its output."""
    env = dict(os.environ, USTUMOR_DATASETS=str(datasets_root), PYTHONPATH=REPO_ROOT,
               OMP_NUM_THREADS="1")  # 2 threads on shared cores: several times slower
    result = subprocess.run(train_net_command(config, *args), env=env, capture_output=True, text=True, cwd=REPO_ROOT,
                            timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return result.stdout + result.stderr


def write_busi_image(folder, busi_class, number, image, masks):
    """Write ``<class> (N).png`` and its masks the way BUSI names them."""
    os.makedirs(os.path.join(folder, busi_class), exist_ok=True)
    stem = os.path.join(folder, busi_class, f"{busi_class} ({number})")
    cv2.imwrite(stem + ".png", image)
    for k, mask in enumerate(masks):
        suffix = "_mask.png" if k == 0 else f"_mask_{k}.png"
        cv2.imwrite(stem + suffix, mask)
    return stem + ".png"


def blob_mask(height, width, boxes):
    """A 0/255 mask with a filled rectangle per XYXY box (exclusive x1, y1)."""
    mask = np.zeros((height, width), np.uint8)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = 255
    return mask


def speckle(rng, height, width):
    return np.clip(rng.normal(120, 30, (height, width)), 0, 255).astype(np.uint8)


@pytest.fixture
def tiny_busi(tmp_path):
    """A 6-image BUSI-layout folder: multi-mask, a speck, RGB and RGBA masks, normals."""
    rng = np.random.default_rng(0)
    root = tmp_path / "BUSI" / "Dataset_BUSI_with_GT"
    h, w = 60, 80
    # two masks, the second with a 3-pixel speck beside a real lesion
    second = blob_mask(h, w, [(50, 30, 70, 50)])
    second[2:3, 2:5] = 255
    write_busi_image(str(root), "benign", 1, speckle(rng, h, w), [blob_mask(h, w, [(10, 10, 30, 25)]), second])
    rgb_mask = cv2.cvtColor(blob_mask(h, w, [(5, 5, 25, 20)]), cv2.COLOR_GRAY2BGR)
    write_busi_image(str(root), "benign", 2, speckle(rng, h, w), [rgb_mask])
    rgba_mask = cv2.cvtColor(blob_mask(h, w, [(40, 10, 60, 40)]), cv2.COLOR_GRAY2BGRA)
    write_busi_image(str(root), "malignant", 1, speckle(rng, h, w), [rgba_mask])
    write_busi_image(str(root), "malignant", 2, speckle(rng, h, w), [blob_mask(h, w, [(0, 0, 80, 60)])])
    write_busi_image(str(root), "normal", 1, speckle(rng, h, w), [np.zeros((h, w), np.uint8)])
    write_busi_image(str(root), "normal", 2, speckle(rng, h, w), [np.zeros((h, w), np.uint8)])
    return root


def shared_busi_or_skip():
    if not os.path.isdir(os.path.join(SHARED_BUSI, "Dataset_BUSI_with_GT")):
        pytest.skip("real BUSI not found at ../shared/datasets/BUSI")
    return os.path.abspath(SHARED_BUSI)
