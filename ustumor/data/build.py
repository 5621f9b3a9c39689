"""The training data loader over :class:`~ustumor.data.samplers.ResumableTrainingSampler`
(Detectron2's ``build_detection_train_loader``, resumable): mapped batches in the sampler's
order whatever the number of workers, and a position saved in the trainer's checkpoint."""
import logging
import random

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from detectron2.utils import comm

from .samplers import ResumableTrainingSampler, aspect_ratio_groups, seeded_random_state

logger = logging.getLogger(__name__)

__all__ = ["ResumableTrainLoader", "build_resumable_train_loader"]


class _MappedBatches(IterableDataset):
    """This process's batches, mapped; data-loader workers take whole batches in turn, so the
    loader yields them in the sampler's order whatever the number of workers."""

    def __init__(self, dataset, mapper, sampler, max_retries=10):
        self.dataset = dataset
        self.mapper = mapper
        self.sampler = sampler
        self.max_retries = max_retries

    def map_one(self, position, index):
        for attempt in range(self.max_retries + 1):
            with seeded_random_state(self.sampler.seed, position, attempt):
                if attempt:  # as Detectron2's MapDataset: replace an unusable item with another
                    index = random.randrange(len(self.dataset))
                mapped = self.mapper(self.dataset[index])
            if mapped is not None:
                return mapped
        raise RuntimeError(f"the mapper returned None for {self.max_retries + 1} items in a row")

    def __iter__(self):
        worker = get_worker_info()
        worker_id, num_workers = (worker.id, worker.num_workers) if worker else (0, 1)
        for number, batch in enumerate(self.sampler):
            if number % num_workers == worker_id:
                yield [self.map_one(position, index) for position, index in batch]


def _identity(batch):
    return batch


class ResumableTrainLoader:
    """The training data loader: an iterable of batches (lists of mapped dicts) whose position
    is saved and restored through :meth:`state_dict` / :meth:`load_state_dict`.

    Iteration starts lazily, at the first ``next()``: Detectron2's trainer calls ``iter()``
    on construction, before ``--resume`` has loaded the position.
    """

    def __init__(self, dataset, mapper, sampler, num_workers=0):
        self.dataset = dataset
        self.mapper = mapper
        self.sampler = sampler
        self.num_workers = num_workers
        self.steps_taken = 0
        self._started = False

    @property
    def next_step(self):
        return self.sampler.start_step + self.steps_taken

    def __iter__(self):
        self._started = True
        loader = DataLoader(
            _MappedBatches(self.dataset, self.mapper, self.sampler),
            batch_size=None,  # items are whole batches already
            num_workers=self.num_workers,
            collate_fn=_identity,
            # its own generator: creating the loader must not draw from the global one
            generator=torch.Generator().manual_seed(self.sampler.seed),
        )
        for batch in loader:
            self.steps_taken += 1
            yield batch

    def state_dict(self):
        return {"next_step": self.next_step, "seed": self.sampler.seed, "size": self.sampler.size,
                "batch_size": self.sampler.batch_size, "world_size": self.sampler.world_size,
                "total_batch_size": self.sampler.total_batch_size}

    def load_state_dict(self, state):
        if self._started:
            raise RuntimeError("load_state_dict must come before the first batch is drawn")
        # the sequence depends on the total batch, so a resume with another number of processes continues it
        state.setdefault("total_batch_size", state["batch_size"] * state.get("world_size", 1))
        for key in ("size", "total_batch_size"):
            if state.get(key) != getattr(self.sampler, key):
                logger.warning(
                    "The checkpoint's training data had %s=%s, this run has %s: the data sequence "
                    "cannot continue exactly.", key, state.get(key), getattr(self.sampler, key))
        if state["seed"] != self.sampler.seed:
            logger.info("Continuing the checkpoint's data sequence (seed %d, not %d)", state["seed"], self.sampler.seed)
            self.sampler.seed = int(state["seed"])
        self.sampler.start_step = int(state["next_step"])
        self.steps_taken = 0
        logger.info("Training data resumes at step %d", self.sampler.start_step)


def build_resumable_train_loader(cfg, mapper):
    """The training loader for ``cfg.DATASETS.TRAIN`` (Detectron2's ``build_detection_train_loader``
    with :class:`ResumableTrainingSampler` in place of ``TrainingSampler``)."""
    from detectron2.data import DatasetFromList, get_detection_dataset_dicts

    if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
        raise ValueError(f"DATALOADER.SAMPLER_TRAIN={cfg.DATALOADER.SAMPLER_TRAIN!r} is not supported: ustumor "
                         "trains with its resumable equivalent of TrainingSampler")
    dataset_dicts = get_detection_dataset_dicts(
        cfg.DATASETS.TRAIN,
        filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
        min_keypoints=0,
        proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
    )
    world_size = comm.get_world_size()
    if cfg.SOLVER.IMS_PER_BATCH % world_size:
        raise ValueError(f"SOLVER.IMS_PER_BATCH={cfg.SOLVER.IMS_PER_BATCH} is not divisible by {world_size} processes")
    # a negative SEED means "random": draw one shared by all processes; the checkpoint keeps it
    seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
    sampler = ResumableTrainingSampler(
        len(dataset_dicts),
        cfg.SOLVER.IMS_PER_BATCH // world_size,
        seed=seed,
        group_ids=aspect_ratio_groups(dataset_dicts) if cfg.DATALOADER.ASPECT_RATIO_GROUPING else None,
    )
    logger.info("Resumable training sampler: %d images, seed %d, %d per process per step",
                len(dataset_dicts), seed, sampler.batch_size)
    return ResumableTrainLoader(DatasetFromList(dataset_dicts, copy=False), mapper, sampler, cfg.DATALOADER.NUM_WORKERS)
