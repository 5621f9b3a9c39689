"""Tests of the synthetic BUSI-like phantom (ustumor.synthetic, tools/make_phantom.py)."""
import importlib.util
import json
import os
import re

import cv2
import numpy as np
import pytest

from ustumor import synthetic

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILE_PATTERN = re.compile(r"^(benign|malignant|normal) \((\d+)\)(_mask(?:_(\d+))?)?\.png$")


def _write(out_dir, **kwargs):
    options = dict(num_images=20, seed=3, duplicate_fraction=0.2)
    options.update(kwargs)
    summary = synthetic.write_phantom_dataset(str(out_dir), **options)
    with open(os.path.join(out_dir, synthetic.MANIFEST_NAME)) as f:
        manifest = json.load(f)
    return summary, manifest


@pytest.fixture(scope="module")
def plain_dataset(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("phantom_plain")
    summary, manifest = _write(out_dir)
    return out_dir, summary, manifest


@pytest.fixture(scope="module")
def workspace_dataset(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("phantom_workspace")
    summary, manifest = _write(out_dir, num_images=12, workspace=True, duplicate_fraction=0.25)
    return out_dir, summary, manifest


def _read(out_dir, relative_path):
    image = cv2.imread(os.path.join(out_dir, synthetic.BUSI_ROOT_NAME, relative_path),
                       cv2.IMREAD_UNCHANGED)
    assert image is not None, relative_path
    return image


def _all_files(root):
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


def _solidity(mask):
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=cv2.contourArea)
    return cv2.contourArea(contour) / cv2.contourArea(cv2.convexHull(contour))


def _render_many(kind, count, first_seed=0, size=(256, 320)):
    return [synthetic.render_phantom(np.random.default_rng(first_seed + i), *size, kind)
            for i in range(count)]


# --------------------------------------------------------------------------
# render_phantom
# --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", synthetic.PHANTOM_CLASSES)
def test_render_is_deterministic_and_seed_dependent(kind):
    image_a, masks_a = synthetic.render_phantom(np.random.default_rng(7), 240, 300, kind)
    image_b, masks_b = synthetic.render_phantom(np.random.default_rng(7), 240, 300, kind)
    image_c, _ = synthetic.render_phantom(np.random.default_rng(8), 240, 300, kind)
    assert image_a.dtype == np.uint8 and image_a.shape == (240, 300)
    assert np.array_equal(image_a, image_b)
    assert len(masks_a) == len(masks_b)
    assert all(np.array_equal(a, b) for a, b in zip(masks_a, masks_b))
    assert not np.array_equal(image_a, image_c)


def test_render_rejects_unknown_kind():
    with pytest.raises(ValueError):
        synthetic.render_phantom(np.random.default_rng(0), 64, 64, "cyst")


def test_normal_scans_have_no_lesion_and_lesion_scans_do():
    for image, masks in _render_many("normal", 5):
        assert masks == []
    for kind in ("benign", "malignant"):
        for image, masks in _render_many(kind, 20):
            assert 1 <= len(masks) <= 2
            for mask in masks:
                assert mask.dtype == np.uint8 and mask.shape == image.shape
                assert set(np.unique(mask).tolist()) == {0, 255}


@pytest.mark.parametrize("kind", ["benign", "malignant"])
def test_lesions_are_darker_than_their_surroundings(kind):
    ring_kernel = np.ones((15, 15), np.uint8)
    for image, masks in _render_many(kind, 15, first_seed=100):
        all_lesions = np.bitwise_or.reduce(masks)
        for mask in masks:
            ring = (cv2.dilate(mask, ring_kernel) > 0) & (all_lesions == 0)
            inside_mean = image[mask > 0].mean()
            ring_mean = image[ring].mean()
            assert inside_mean < 0.7 * ring_mean, (inside_mean, ring_mean)


def test_lesion_size_position_and_separation():
    two_lesion_images = 0
    for kind in ("benign", "malignant"):
        for image, masks in _render_many(kind, 40, first_seed=200):
            height, width = image.shape
            short_side = min(height, width)
            two_lesion_images += len(masks) == 2
            for mask in masks:
                ys, xs = np.nonzero(mask)
                long_axis = max(np.ptp(xs), np.ptp(ys)) + 1
                # Nominal range 8-35%; rasterisation adds up to a pixel or two.
                assert 0.07 * short_side <= long_axis <= 0.37 * short_side
                # Fully inside: no lesion pixel on the border.
                assert xs.min() > 0 and ys.min() > 0
                assert xs.max() < width - 1 and ys.max() < height - 1
            if len(masks) == 2:
                assert not np.any((masks[0] > 0) & (masks[1] > 0))
    # ~10% of lesion images have two lesions: expect some, but far from all, of 80.
    assert 1 <= two_lesion_images <= 25


def test_malignant_outlines_are_more_irregular_than_benign():
    benign = [_solidity(m) for _, masks in _render_many("benign", 30, 300) for m in masks]
    malignant = [_solidity(m) for _, masks in _render_many("malignant", 30, 300) for m in masks]
    assert np.mean(benign) > 0.93
    assert np.mean(malignant) < np.mean(benign) - 0.1
    # Benign lesions are wider than tall.
    wider = []
    for _, masks in _render_many("benign", 30, 300):
        for mask in masks:
            ys, xs = np.nonzero(mask)
            wider.append(np.ptp(xs) > np.ptp(ys))
    assert np.mean(wider) > 0.9


# --------------------------------------------------------------------------
# add_calipers, embed_in_workspace, embed_mask
# --------------------------------------------------------------------------
def test_calipers_mark_near_the_lesion_only():
    for seed in range(5):
        image, masks = synthetic.render_phantom(np.random.default_rng(seed), 256, 320, "benign")
        original = image.copy()
        marked = synthetic.add_calipers(np.random.default_rng(seed), image, masks)
        assert np.array_equal(image, original), "input must not be modified"
        assert marked.shape == image.shape and marked.dtype == image.dtype
        changed = marked != image
        assert changed.any()
        # Every change is within a few pixels of a lesion's bounding box.
        near = np.zeros_like(changed)
        for mask in masks:
            ys, xs = np.nonzero(mask)
            near[max(ys.min() - 12, 0):ys.max() + 13, max(xs.min() - 12, 0):xs.max() + 13] = True
        assert not np.any(changed & ~near)
        assert changed.mean() < 0.05


def test_calipers_on_normal_scan():
    image, masks = synthetic.render_phantom(np.random.default_rng(0), 200, 260, "normal")
    marked = synthetic.add_calipers(np.random.default_rng(0), image, masks)
    assert marked.shape == image.shape and (marked != image).any()


@pytest.mark.parametrize("scan_hw", [(256, 320), (300, 360), (700, 900)])
def test_workspace_box_holds_the_scan_exactly(scan_hw):
    for seed in range(3):
        image, masks = synthetic.render_phantom(np.random.default_rng(seed), *scan_hw, "malignant")
        screen_rng = np.random.default_rng(seed)
        workspace, box = synthetic.embed_in_workspace(screen_rng, image, (600, 800))
        x0, y0, x1, y1 = box
        assert workspace.shape == (600, 800, 3) and workspace.dtype == np.uint8
        assert 0 <= x0 < x1 <= 800 and 0 <= y0 < y1 <= 600
        expected = image
        if (y1 - y0, x1 - x0) != image.shape:
            # Shrunk to fit, keeping the aspect ratio; never enlarged.
            assert scan_hw[0] > 600 - 40 or scan_hw[1] > 800 - 40
            assert abs((x1 - x0) / (y1 - y0) - image.shape[1] / image.shape[0]) < 0.02
            expected = cv2.resize(image, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
        for channel in range(3):
            assert np.array_equal(workspace[y0:y1, x0:x1, channel], expected)
        # GUI burned into the margin, roughly centred scan.
        outside = workspace.copy()
        outside[y0:y1, x0:x1] = 0
        assert np.count_nonzero(outside) > 500
        assert abs((x0 + x1) / 2 - 400) < 100
        # The mask lands at the same place, binary.
        pasted = synthetic.embed_mask(masks[0], box, (600, 800))
        assert pasted.shape == (600, 800)
        assert set(np.unique(pasted).tolist()) <= {0, 255}
        assert not pasted[:y0].any() and not pasted[y1:].any()
        assert not pasted[:, :x0].any() and not pasted[:, x1:].any()
        if expected is image:
            assert np.array_equal(pasted[y0:y1, x0:x1], masks[0])


# --------------------------------------------------------------------------
# Dark frames, render_screenshots
# --------------------------------------------------------------------------
def _darkest_border_block(scan, block=8):
    """Mean grey of the darkest block x block square along the scan's border."""
    means = []
    for strip in (scan[:block], scan[-block:], scan[:, :block].T, scan[:, -block:].T):
        count = strip.shape[1] // block
        means.extend(strip[:, : count * block].reshape(block, count, block).mean(axis=(0, 2)))
    return min(means)


def test_dark_screenshots_have_low_gain_and_dark_tissue_at_the_scan_border():
    shots = list(synthetic.render_screenshots(seed=5, num_frames=40, dark_fraction=0.25))
    assert [shot.dark for shot in shots].count(True) == 10
    scans = {True: [], False: []}
    for shot in shots:
        x0, y0, x1, y1 = shot.scan_box
        scan = shot.image[y0:y1, x0:x1, 0].astype(np.float64)
        scans[shot.dark].append(scan)
        # The generator's boxes: the scan is grey (equal channels), lesions lie inside it.
        assert np.array_equal(shot.image[y0:y1, x0:x1, 0], shot.image[y0:y1, x0:x1, 2])
        for lx0, ly0, lx1, ly1 in shot.lesion_boxes:
            assert x0 < lx0 < lx1 < x1 and y0 < ly0 < ly1 < y1
    # Low gain: every dark scan is darker overall than every normal one.
    assert max(scan.mean() for scan in scans[True]) < min(scan.mean() for scan in scans[False])
    # Dark tissue reaching the border: dim 8x8 blocks on the scan's edge, which stay
    # above the screen's black (grey 0-4 around the scan): a noise floor, as on a scanner.
    assert all(4 < _darkest_border_block(scan) < 16 for scan in scans[True])
    assert all(_darkest_border_block(scan) > 32 for scan in scans[False])


def test_screenshots_do_not_depend_on_the_number_of_frames():
    few = list(synthetic.render_screenshots(seed=2, num_frames=3, dark_fraction=0.5))
    more = list(synthetic.render_screenshots(seed=2, num_frames=5, dark_fraction=0.5))
    for a, b in zip(few, more):
        assert np.array_equal(a.image, b.image) and a.scan_box == b.scan_box
        assert a.lesion_boxes == b.lesion_boxes and (a.kind, a.dark) == (b.kind, b.dark)
    with pytest.raises(ValueError):
        next(synthetic.render_screenshots(seed=2, num_frames=1, dark_fraction=1.5))


def test_dark_fraction_in_a_written_dataset(tmp_path):
    _, plain = _write(tmp_path / "plain", num_images=10, duplicate_fraction=0.2)
    _, mixed = _write(tmp_path / "mixed", num_images=10, duplicate_fraction=0.2, dark_fraction=0.5)
    assert not any(record["dark"] for record in plain["images"])
    dark = {record["file"] for record in mixed["images"] if record["dark"]}
    assert 0 < len(dark) < 10
    # Near-duplicates share their scan, dark or not.
    for first, second in mixed["near_duplicates"]:
        assert (first in dark) == (second in dark)
    # The other scans are exactly those written without dark frames.
    for record in mixed["images"]:
        same = np.array_equal(_read(tmp_path / "mixed", record["file"]),
                              _read(tmp_path / "plain", record["file"]))
        assert same == (record["file"] not in dark), record["file"]
    with pytest.raises(ValueError):
        _write(tmp_path / "bad", num_images=4, dark_fraction=-0.1)


# --------------------------------------------------------------------------
# write_phantom_dataset
# --------------------------------------------------------------------------
@pytest.mark.parametrize("workspace", [False, True])
def test_dataset_is_byte_identical_for_a_seed(tmp_path, workspace):
    _write(tmp_path / "a", num_images=8, workspace=workspace)
    _write(tmp_path / "b", num_images=8, workspace=workspace)
    _write(tmp_path / "c", num_images=8, workspace=workspace, seed=4)
    files_a, files_b = _all_files(tmp_path / "a"), _all_files(tmp_path / "b")
    files_c = _all_files(tmp_path / "c")
    assert len(files_a) > 8
    assert files_a == files_b
    assert any(files_a[name] != files_c.get(name) for name in files_a if name.endswith(").png"))


@pytest.mark.parametrize("dataset", ["plain_dataset", "workspace_dataset"])
def test_layout_and_naming(dataset, request):
    out_dir, summary, manifest = request.getfixturevalue(dataset)
    root = os.path.join(out_dir, synthetic.BUSI_ROOT_NAME)
    assert sorted(os.listdir(root)) == sorted(synthetic.PHANTOM_CLASSES)
    assert sum(summary["counts"].values()) == summary["num_images"] == manifest["num_images"]
    records = {record["file"]: record for record in manifest["images"]}
    assert len(records) == summary["num_images"]
    for class_name in synthetic.PHANTOM_CLASSES:
        names = os.listdir(os.path.join(root, class_name))
        numbers, mask_indices = set(), {}
        for name in names:
            match = FILE_PATTERN.match(name)
            assert match, name
            assert match.group(1) == class_name
            number = int(match.group(2))
            if match.group(3) is None:
                numbers.add(number)
            else:
                index = 0 if match.group(4) is None else int(match.group(4))
                mask_indices.setdefault(number, []).append(index)
        # Numbering starts at 1 and has no gaps; every image has masks 0..k-1.
        assert numbers == set(range(1, summary["counts"][class_name] + 1))
        assert set(mask_indices) == numbers
        for number, indices in mask_indices.items():
            assert sorted(indices) == list(range(len(indices)))
            record = records[f"{class_name}/{class_name} ({number}).png"]
            assert record["class"] == class_name
            assert len(indices) == max(1, record["num_lesions"])
            assert len(record["mask_files"]) == len(indices)


def test_class_fractions_are_respected(tmp_path):
    summary, _ = _write(tmp_path, num_images=50, class_fractions=(0.5, 0.3, 0.2))
    assert summary["counts"] == {"benign": 25, "malignant": 15, "normal": 10}


@pytest.mark.parametrize("dataset", ["plain_dataset", "workspace_dataset"])
def test_masks_are_binary_and_match_their_image(dataset, request):
    out_dir, _, manifest = request.getfixturevalue(dataset)
    for record in manifest["images"]:
        image = _read(out_dir, record["file"])
        if manifest["workspace"]:
            assert image.shape == (600, 800, 3)
        else:
            assert image.ndim == 2 and image.shape == tuple(record["scan_size"])
        for mask_file in record["mask_files"]:
            mask = _read(out_dir, mask_file)
            assert mask.shape == image.shape[:2]
            values = set(np.unique(mask).tolist())
            if record["class"] == "normal":
                assert values == {0}
            else:
                assert values == {0, 255}
                if manifest["workspace"]:
                    x0, y0, x1, y1 = record["scan_box"]
                    assert mask[y0:y1, x0:x1].sum() == mask.sum()


def test_workspace_manifest_boxes_hold_the_scan(workspace_dataset):
    out_dir, _, manifest = workspace_dataset
    for record in manifest["images"]:
        image = _read(out_dir, record["file"])
        x0, y0, x1, y1 = record["scan_box"]
        assert (y1 - y0, x1 - x0) == tuple(record["scan_size"])
        scan = image[y0:y1, x0:x1]
        # Grey scan inside the box (all channels equal), coloured / bright GUI around it.
        assert np.array_equal(scan[..., 0], scan[..., 1])
        assert np.array_equal(scan[..., 1], scan[..., 2])
        outside = image.copy()
        outside[y0:y1, x0:x1] = 0
        assert np.count_nonzero(outside) > 500


@pytest.mark.parametrize("dataset", ["plain_dataset", "workspace_dataset"])
def test_near_duplicates_differ_only_slightly(dataset, request):
    out_dir, _, manifest = request.getfixturevalue(dataset)
    pairs = manifest["near_duplicates"]
    assert len(pairs) >= 1
    records = {record["file"]: record for record in manifest["images"]}
    seen = set()
    for first, second in pairs:
        assert first != second and not ({first, second} & seen)
        seen |= {first, second}
        assert records[first]["class"] == records[second]["class"]
        image_a, image_b = _read(out_dir, first), _read(out_dir, second)
        assert image_a.shape == image_b.shape
        assert not np.array_equal(image_a, image_b)
        difference = np.abs(image_a.astype(np.int16) - image_b.astype(np.int16))
        if manifest["workspace"]:
            assert records[first]["scan_box"] == records[second]["scan_box"]
            x0, y0, x1, y1 = records[first]["scan_box"]
            difference = difference[y0:y1, x0:x1]
        # Gain change of a few percent plus calipers: small against the
        # ~50 grey levels between two unrelated speckle scans.
        assert difference.mean() < 12
        masks_a = [_read(out_dir, f) for f in records[first]["mask_files"]]
        masks_b = [_read(out_dir, f) for f in records[second]["mask_files"]]
        assert len(masks_a) == len(masks_b)
        assert all(np.array_equal(a, b) for a, b in zip(masks_a, masks_b))
    # Unrelated images really are much further apart than that.
    other = synthetic.render_phantom(np.random.default_rng(999), *image_a.shape[:2], "normal")[0]
    if image_a.ndim == 2:
        unrelated = np.abs(image_a.astype(np.int16) - other.astype(np.int16)).mean()
        assert unrelated > 25


def test_nonempty_output_needs_overwrite(tmp_path):
    _write(tmp_path, num_images=4)
    with pytest.raises(FileExistsError):
        _write(tmp_path, num_images=4)
    summary, _ = _write(tmp_path, num_images=3, overwrite=True)
    root = os.path.join(tmp_path, synthetic.BUSI_ROOT_NAME)
    images = [n for c in os.listdir(root) for n in os.listdir(os.path.join(root, c))
              if "_mask" not in n]
    assert len(images) == summary["num_images"] == 3  # stale files are gone


# --------------------------------------------------------------------------
# tools/make_phantom.py
# --------------------------------------------------------------------------
def _load_cli():
    path = os.path.join(REPO_ROOT, "tools", "make_phantom.py")
    spec = importlib.util.spec_from_file_location("make_phantom", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_writes_and_refuses_to_overwrite(tmp_path, capsys):
    cli = _load_cli()
    out_dir = str(tmp_path / "phantom")
    args = ["--out", out_dir, "--num-images", "6", "--seed", "1", "--duplicate-fraction", "0.2"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    for class_name in synthetic.PHANTOM_CLASSES:
        assert class_name in printed
    before = _all_files(out_dir)
    assert cli.main(args + ["--seed", "2"]) != 0
    assert "--overwrite" in capsys.readouterr().err
    assert _all_files(out_dir) == before
    assert cli.main(args + ["--seed", "2", "--overwrite"]) == 0
    assert _all_files(out_dir) != before
