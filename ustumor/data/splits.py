"""Leak-free, seeded, stratified train/val/test splits.

Whole groups go to one split. For BUSI a group is a set of near-duplicate images
(the same scan with and without calipers, or filed under two classes), found by
perceptual hashing; for hospital data a group is a patient.
"""
import hashlib
import json
import logging
import os

import cv2
import numpy as np
from tqdm import tqdm

from .fields import DIAGNOSIS, GROUP_ID, SPLIT
from ..utils.file_io import cache_dir
from .image_io import read_dataset_frame

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")


THUMBNAIL_SIDE = 64


def perceptual_hash(grey):
    """64-bit DCT perceptual hash of a grey image (robust to resizing, small marks)."""
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].flatten()
    bits = low[1:] > np.median(low[1:])  # DC term only says how bright the image is
    return int(sum(1 << i for i, bit in enumerate(bits) if bit))


def normalized_thumbnail(grey):
    """Zero-mean, unit-norm 64x64 thumbnail: dot products are correlation coefficients."""
    small = cv2.resize(grey, (THUMBNAIL_SIDE, THUMBNAIL_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    small = small.ravel() - small.mean()
    return small / max(float(np.linalg.norm(small)), 1e-6)


def near_duplicate_pairs(hashes, thumbnails, max_distance, min_correlation, chunk=1024):
    """Index pairs (i < j) whose hashes are within ``max_distance`` bits or whose
    thumbnails correlate at ``min_correlation`` or more.

    The hash catches re-encodings and added calipers; the correlation catches the
    slightly shifted or re-cropped copies that move many hash bits.
    """
    thumbnails = np.asarray(thumbnails, dtype=np.float32)
    values = np.array(hashes, dtype=np.uint64)
    pairs = set()
    for start in range(0, len(values), chunk):
        stop = min(start + chunk, len(values))
        xor = values[start:stop, None] ^ values[None, :]
        bits = np.unpackbits(xor.view(np.uint8).reshape(stop - start, len(values), 8), axis=2).sum(axis=2)
        similar = (bits <= max_distance) | (thumbnails[start:stop] @ thumbnails.T >= min_correlation)
        for i, j in zip(*np.nonzero(similar)):
            i = int(i) + start
            if i < j:
                pairs.add((i, int(j)))
    return sorted(pairs)


def connected_groups(count, pairs):
    """Group ids (0..G-1, in first-seen order) of the graph with ``pairs`` as edges."""
    parent = list(range(count))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        parent[find(i)] = find(j)
    relabel = {}
    return [relabel.setdefault(find(i), len(relabel)) for i in range(count)]


def stratified_group_split(group_ids, labels, ratios, seed):
    """Assign each item a split name so that groups stay whole and labels stay balanced.

    Groups are stratified by their majority label (``mixed`` when tied); within a
    stratum, shuffled groups go one by one to the split furthest below its target.
    """
    if len(ratios) != len(SPLIT_NAMES) or min(ratios) < 0 or not np.isclose(sum(ratios), 1.0):
        raise ValueError(f"split ratios must be three non-negative numbers summing to 1, got {ratios}")
    members = {}
    for index, group in enumerate(group_ids):
        members.setdefault(group, []).append(index)
    strata = {}
    for group, indices in members.items():
        group_labels = [labels[i] for i in indices]
        values, counts = np.unique(group_labels, return_counts=True)
        top = values[counts == counts.max()]
        strata.setdefault(str(top[0]) if len(top) == 1 else "mixed", []).append(group)

    rng = np.random.default_rng(seed)
    assignment = [None] * len(group_ids)
    for stratum in sorted(strata):
        groups = sorted(strata[stratum])
        rng.shuffle(groups)
        total = sum(len(members[g]) for g in groups)
        targets = np.array(ratios, dtype=float) * total
        filled = np.zeros(len(SPLIT_NAMES))
        for group in groups:
            split = int(np.argmax(targets - filled))
            filled[split] += len(members[group])
            for index in members[group]:
                assignment[index] = SPLIT_NAMES[split]
    return assignment


def save_split(path, split):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w") as f:
        json.dump(split, f, indent=1)
    os.replace(temporary, path)


def load_split(path):
    with open(path) as f:
        split = json.load(f)
    if "assignment" not in split:
        raise ValueError(f"{path}: not a ustumor split file (no 'assignment')")
    return split


def fingerprint(paths, extra):
    """Key that changes when a file is added, removed or rewritten, or a setting changes."""
    digest = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    for path in sorted(paths):
        stat = os.stat(path)
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def make_image_split(dataset, dicts, seed, ratios, max_distance, min_correlation, split_file=""):
    """The near-duplicate-grouped split of ``dicts``, keyed by ``image_id``.

    Loaded from ``split_file`` when given, else from the cache, else computed
    and cached. Returns the split dict (``assignment`` and ``group`` per image id).
    """
    if split_file:
        split = load_split(split_file)
        missing = [d["image_id"] for d in dicts if d["image_id"] not in split["assignment"]]
        if missing:
            raise ValueError(f"{split_file}: {len(missing)} images are not in the split, e.g. {missing[:3]}")
        return split
    settings = {"dataset": dataset, "seed": seed, "ratios": list(ratios),
                "hash_distance": max_distance, "min_correlation": min_correlation}
    key = fingerprint([d["file_name"] for d in dicts], settings)
    cached = os.path.join(cache_dir(), "splits", f"{dataset}_{key}.json")
    if os.path.exists(cached):
        return load_split(cached)
    hashes, thumbnails = [], []
    for d in tqdm(dicts, desc=f"{dataset}: near-duplicate hashes", unit="image"):
        grey = read_dataset_frame(d)
        hashes.append(perceptual_hash(grey))
        thumbnails.append(normalized_thumbnail(grey))
    pairs = near_duplicate_pairs(hashes, thumbnails, max_distance, min_correlation)
    groups = connected_groups(len(dicts), pairs)
    assignment = stratified_group_split(groups, [d.get(DIAGNOSIS, "") for d in dicts], ratios, seed)
    split = dict(settings)
    split["method"] = ("near-duplicate groups (DCT hash distance or thumbnail correlation) kept whole, "
                       "stratified by class")
    split["assignment"] = {d["image_id"]: name for d, name in zip(dicts, assignment)}
    split["group"] = {d["image_id"]: int(g) for d, g in zip(dicts, groups)}
    split["near_duplicate_pairs"] = [[dicts[i]["image_id"], dicts[j]["image_id"]] for i, j in pairs]
    split["counts"] = {name: assignment.count(name) for name in SPLIT_NAMES}
    save_split(cached, split)
    logger.info("Computed %s split %s (%d near-duplicate pairs), saved to %s",
                dataset, split["counts"], len(pairs), cached)
    return split


# A split dataset family <prefix>_{train,val,test,all} keeps in MetadataCatalog its
# "split_prefix" and its "split_provider", a callable returning the split dict.


def split_of(prefix):
    """The split dict of the registered family ``prefix`` (e.g. ``busi``), or None."""
    from detectron2.data import MetadataCatalog

    if f"{prefix}_all" not in MetadataCatalog.list():
        return None
    provider = MetadataCatalog.get(f"{prefix}_all").get("split_provider", None)
    return provider() if provider is not None else None


def split_prefixes():
    """The prefixes of the registered split families."""
    from detectron2.data import MetadataCatalog

    return sorted({MetadataCatalog.get(n).get("split_prefix", None) for n in MetadataCatalog.list()
                   if MetadataCatalog.get(n).get("split_provider", None) is not None} - {None})


def save_splits_of(dataset_names, directory):
    """Write the split file of each dataset in ``dataset_names`` into ``directory``."""
    from detectron2.data import MetadataCatalog

    written = []
    for prefix in sorted({MetadataCatalog.get(n).get("split_prefix", None) for n in dataset_names} - {None}):
        split = split_of(prefix)
        if split is not None:
            path = os.path.join(directory, f"{prefix}.json")
            save_split(path, split)
            written.append(path)
    return written


def apply_split(dicts, split, split_name=None):
    """Copy ``group_id`` and ``split`` into each dict; keep only ``split_name`` if given."""
    selected = []
    for d in dicts:
        d = dict(d, **{GROUP_ID: split["group"].get(d["image_id"], -1), SPLIT: split["assignment"][d["image_id"]]})
        if split_name is None or d[SPLIT] == split_name:
            selected.append(d)
    return selected
