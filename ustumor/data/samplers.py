"""A training data stream that a resumed run continues exactly where the killed one stopped.

Detectron2's ``TrainingSampler`` restarts its sequence on ``--resume`` (so early samples
are seen again and late ones never), its aspect-ratio grouping keeps half-filled batches
in memory, and the augmentations draw from whatever state the global NumPy generator is
in. Here instead:

- :class:`ResumableTrainingSampler` defines one infinite sequence of batches of
  ``SOLVER.IMS_PER_BATCH`` from a seed alone: epoch ``e`` is a permutation seeded by
  ``(seed, e)``, batches are cut from it (grouped by aspect ratio, if asked, at the index
  level), and each process takes its slice of every batch. The sequence depends on the
  total batch only, not on the number of processes, and starts at any training step.
- Every sample's augmentations draw from generators seeded by ``(seed, its position in
  the sequence)``, so a sample is augmented the same way whichever worker maps it and
  however often the run was resumed.
- :class:`ustumor.data.build.ResumableTrainLoader` counts the batches the trainer has taken
  (prefetched ones do not count); that count is its ``state_dict``, saved in the trainer's
  checkpoint.
"""
import contextlib
import random

import numpy as np
import torch
from torch.utils.data import Sampler

from detectron2.utils import comm

from ..utils.deprecation import moved_names

__all__ = ["ResumableTrainingSampler", "seeded_random_state", "aspect_ratio_groups"]

# moved to .build; served here for one release
__getattr__ = moved_names(__name__, {"ResumableTrainLoader": "ustumor.data.build",
                                     "build_resumable_train_loader": "ustumor.data.build"})


def _seed_from(*keys):
    """A 32-bit seed derived from integers (NumPy's SeedSequence mixes them properly)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


@contextlib.contextmanager
def seeded_random_state(*keys):
    """Seed Python's, NumPy's and torch's (CPU) global generators from ``keys`` for a block,
    then put their previous states back: the block's randomness depends on ``keys`` only,
    and the caller's streams do not move."""
    seed = _seed_from(*keys)
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed)
        torch.default_generator.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def aspect_ratio_groups(dataset_dicts):
    """0 for landscape (w > h), 1 otherwise, as Detectron2's AspectRatioGroupedDataset."""
    return [0 if d.get("width", 1) > d.get("height", 0) else 1 for d in dataset_dicts]


class ResumableTrainingSampler(Sampler):
    """Infinite, seeded sequence of this process's batches of ``(position, dataset index)``.

    ``position`` numbers the samples of the global sequence (0, 1, 2, ...). Training step
    ``s`` uses global batch ``s`` of ``batch_size * world_size`` samples, and the process of
    rank ``r`` takes its ``r``-th slice of ``batch_size``: the processes' shards are disjoint,
    and together they are the batch one process would take with the same total batch.
    """

    def __init__(self, size, batch_size, *, seed=0, shuffle=True, group_ids=None, start_step=0,
                 rank=None, world_size=None):
        """
        Args:
            size: number of dataset items.
            batch_size: images per process per step.
            seed: the whole sequence follows from it.
            group_ids: optional per-item group (e.g. :func:`aspect_ratio_groups`); a batch
                then holds one group only, cut from that group's next items in sequence.
            start_step: first training step to produce batches for.
        """
        if size <= 0:
            raise ValueError("the training set is empty")
        self.size = int(size)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.group_ids = None if group_ids is None else np.asarray(group_ids, dtype=np.int64)
        if self.group_ids is not None and len(self.group_ids) != self.size:
            raise ValueError(f"{len(self.group_ids)} group ids for {self.size} items")
        self.start_step = int(start_step)
        self.rank = comm.get_rank() if rank is None else rank
        self.world_size = comm.get_world_size() if world_size is None else world_size

    @property
    def total_batch_size(self):
        return self.batch_size * self.world_size

    def epoch_order(self, epoch):
        """Dataset indices in the order epoch ``epoch`` visits them."""
        if not self.shuffle:
            return np.arange(self.size)
        return np.random.default_rng([self.seed, epoch]).permutation(self.size)

    def positions(self, start=0):
        """``(position, index)`` pairs of the global sequence from ``position`` ``start``."""
        epoch, offset = divmod(start, self.size)
        while True:
            order = self.epoch_order(epoch)
            for k in range(offset, self.size):
                yield epoch * self.size + k, int(order[k])
            epoch, offset = epoch + 1, 0

    def global_batches(self, start_batch=0):
        """Global batches (all processes' samples of a step) from batch number ``start_batch`` on."""
        size = self.total_batch_size
        if self.group_ids is None or len(set(self.group_ids.tolist())) == 1:
            # ungrouped batches are contiguous stretches of the sequence: seek directly
            samples = self.positions(start_batch * size)
            while True:
                yield [next(samples) for _ in range(size)]
        buckets, batch_number = {}, 0
        for position, index in self.positions(0):  # a grouped sequence must be replayed to seek
            bucket = buckets.setdefault(int(self.group_ids[index]), [])
            bucket.append((position, index))
            if len(bucket) == size:
                if batch_number >= start_batch:
                    yield list(bucket)
                bucket.clear()
                batch_number += 1

    def __iter__(self):
        first = self.rank * self.batch_size
        for batch in self.global_batches(self.start_step):
            yield batch[first:first + self.batch_size]
