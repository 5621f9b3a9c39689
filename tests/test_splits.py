import cv2
import numpy as np
import pytest

from conftest import shared_busi_or_skip
from ustumor.data.datasets.busi import load_busi_dicts
from ustumor.data.image_io import read_grey
from ustumor.data.splits import (
    connected_groups,
    make_image_split,
    near_duplicate_pairs,
    normalized_thumbnail,
    perceptual_hash,
    stratified_group_split,
)


def test_groups_never_cross_splits_and_classes_are_balanced():
    rng = np.random.default_rng(0)
    group_ids, labels = [], []
    for group in range(300):
        size = int(rng.integers(1, 5))
        label = ["benign", "malignant", "normal"][group % 3]
        group_ids += [group] * size
        labels += [label] * size
    assignment = stratified_group_split(group_ids, labels, (0.7, 0.1, 0.2), seed=3)
    for group in set(group_ids):
        assert len({assignment[i] for i, g in enumerate(group_ids) if g == group}) == 1
    for label in ("benign", "malignant", "normal"):
        items = [a for a, lab in zip(assignment, labels) if lab == label]
        share = {s: items.count(s) / len(items) for s in ("train", "val", "test")}
        assert abs(share["train"] - 0.7) < 0.05 and abs(share["test"] - 0.2) < 0.05


def test_split_is_deterministic_and_seeded():
    group_ids = [i // 2 for i in range(200)]
    labels = ["a" if i % 3 else "b" for i in range(200)]
    first = stratified_group_split(group_ids, labels, (0.6, 0.2, 0.2), seed=7)
    assert first == stratified_group_split(group_ids, labels, (0.6, 0.2, 0.2), seed=7)
    assert first != stratified_group_split(group_ids, labels, (0.6, 0.2, 0.2), seed=8)


def test_bad_ratios_are_rejected():
    with pytest.raises(ValueError, match="ratios"):
        stratified_group_split([0, 1], ["a", "b"], (0.7, 0.7, 0.2), seed=0)


def test_near_duplicates_with_calipers_or_shift_are_grouped():
    rng = np.random.default_rng(1)
    base = cv2.GaussianBlur(rng.integers(0, 255, (200, 240)).astype(np.uint8), (0, 0), 10)
    base = cv2.normalize(base, None, 0, 255, cv2.NORM_MINMAX)
    with_calipers = base.copy()
    cv2.drawMarker(with_calipers, (60, 80), 255, cv2.MARKER_CROSS, 12, 2)
    cv2.drawMarker(with_calipers, (150, 90), 255, cv2.MARKER_CROSS, 12, 2)
    shifted = np.roll(base, 3, axis=1)
    other = cv2.normalize(cv2.GaussianBlur(rng.integers(0, 255, (200, 240)).astype(np.uint8), (0, 0), 10), None, 0, 255, cv2.NORM_MINMAX)
    images = [base, with_calipers, shifted, other]
    pairs = near_duplicate_pairs([perceptual_hash(i) for i in images],
                                 [normalized_thumbnail(i) for i in images], 10, 0.9)
    groups = connected_groups(len(images), pairs)
    assert groups[0] == groups[1] == groups[2] != groups[3]


def _independent_duplicate_pairs(dicts):
    """Near-duplicates by a different measure than the split's: 16x16 difference hash."""
    def dhash(path):
        small = cv2.resize(read_grey(path), (17, 16), interpolation=cv2.INTER_AREA).astype(np.int16)
        return np.packbits((small[:, 1:] > small[:, :-1]).ravel())

    hashes = np.stack([dhash(d["file_name"]) for d in dicts])
    bits = np.unpackbits(hashes[:, None, :] ^ hashes[None, :, :], axis=2).sum(axis=2)
    i, j = np.nonzero(np.triu(bits <= 20, k=1))  # out of 256 bits
    return list(zip(i.tolist(), j.tolist()))


@pytest.mark.slow
def test_real_busi_no_near_duplicate_crosses_splits(tmp_path):
    root = shared_busi_or_skip()
    dicts = load_busi_dicts(root)
    split = make_image_split("busi_test_split", dicts, 0, (0.7, 0.1, 0.2), 10, 0.9)
    assert len(split["near_duplicate_pairs"]) > 200  # BUSI is known to hold ~235 duplicates
    assignment = split["assignment"]
    pairs = _independent_duplicate_pairs(dicts)
    assert len(pairs) > 100
    crossing = [(dicts[i]["image_id"], dicts[j]["image_id"]) for i, j in pairs
                if assignment[dicts[i]["image_id"]] != assignment[dicts[j]["image_id"]]]
    assert crossing == []
    counts = split["counts"]
    assert abs(counts["train"] / len(dicts) - 0.7) < 0.03 and abs(counts["test"] / len(dicts) - 0.2) < 0.03
    # the same inputs give the same split, also when recomputed without the cache
    again = make_image_split("busi_test_split_again", dicts, 0, (0.7, 0.1, 0.2), 10, 0.9)
    assert again["assignment"] == assignment
