"""Checkpoints that survive being killed mid-write, and the random state an exact resume needs.

- :class:`AtomicCheckpointer`: every file is written to a temporary name beside it and
  moved into place with ``os.replace``, so a reader (or a resume after SIGKILL) sees the
  old file or the new one, never half of one; ``last_checkpoint`` is written the same way
  and is re-tagged only when asked (fvcore's ``save`` always re-tags it).
- :func:`capture_rng_state` / :func:`restore_rng_state`: Python, NumPy and torch generators
  as tensors and plain scalars, which ``torch.load(weights_only=True)`` (the default since
  torch 2.6, used by fvcore) accepts.
"""
import contextlib
import logging
import os
import random
import re

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..utils.file_io import atomic_write

logger = logging.getLogger(__name__)

PERIODIC_NAME = re.compile(r"^model_(\d{7})\.pth$")  # PeriodicCheckpointer's model_<iter>.pth


def atomic_torch_save(data, path):
    atomic_write(path, lambda f: torch.save(data, f))


class AtomicCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer whose writes are atomic and whose re-tagging is optional.

    Only the main process writes (``save_to_disk``). In a multi-process run, a save with the
    trainer state must be called on every process at once: the trainer state gathers each
    process's random state (:class:`~ustumor.engine.hooks.ExactResumeState`).
    """

    last_saved = None  # basename of this run's latest save with the trainer state, on every process

    def save(self, name, tag_last_checkpoint=True, include_checkpointables=True, **kwargs):
        """Save ``<save_dir>/<name>.pth``.

        Args:
            tag_last_checkpoint: point ``last_checkpoint`` at this file (what ``--resume``
                loads); False for side files such as ``model_best``.
            include_checkpointables: also save the trainer state (optimizer, scheduler,
                hooks); False writes the model weights and ``kwargs`` only.
            kwargs: extra data, e.g. ``iteration``.
        """
        if not self.save_dir:
            return
        basename = f"{name}.pth"
        data = {}
        if include_checkpointables:
            self.last_saved = basename
            for key, obj in self.checkpointables.items():
                data[key] = obj.state_dict()  # on every process: may gather
        if not self.save_to_disk:
            return
        data = {"model": self.model.state_dict(), **data}
        data.update(kwargs)
        path = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {path}")
        atomic_torch_save(data, path)
        if tag_last_checkpoint:
            self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename):
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(path, lambda f: f.write(last_filename_basename), mode="w")

    def last_checkpoint_name(self):
        """Basename ``last_checkpoint`` points at, or ""."""
        return os.path.basename(self.get_checkpoint_file()) if self.has_checkpoint() else ""

    def prune_periodic(self, keep_last):
        """Delete all but the ``keep_last`` newest ``model_<iter>.pth`` (0 keeps all).

        Works from the folder's contents, so checkpoints written before a resume are
        counted too (fvcore's ``max_to_keep`` only remembers this process's saves);
        the file ``last_checkpoint`` names is never deleted.
        """
        if keep_last <= 0 or not self.save_to_disk or not os.path.isdir(self.save_dir):
            return []
        periodic = sorted(
            (int(match.group(1)), name)
            for name in os.listdir(self.save_dir)
            for match in [PERIODIC_NAME.match(name)]
            if match
        )
        protected = self.last_checkpoint_name()
        removed = []
        for _, name in periodic[:-keep_last]:
            if name != protected:
                os.remove(os.path.join(self.save_dir, name))
                removed.append(name)
        if removed:
            self.logger.info(f"Removed old checkpoints {removed} (SOLVER.CHECKPOINT_KEEP_LAST={keep_last})")
        return removed


def capture_rng_state():
    """The global random generators' states, in ``weights_only``-loadable types."""
    numpy_state = np.random.get_state()
    python_version, python_internal, python_gauss = random.getstate()
    state = {
        "python": {"version": python_version, "internal": torch.tensor(python_internal, dtype=torch.int64),
                   "gauss_next": python_gauss},
        "numpy": {"name": numpy_state[0], "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
                  "pos": int(numpy_state[2]), "has_gauss": int(numpy_state[3]),
                  "cached_gaussian": float(numpy_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state):
    python = state["python"]
    random.setstate((python["version"], tuple(int(v) for v in python["internal"].tolist()), python["gauss_next"]))
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["name"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def preserved_rng_state():
    """Run a block (evaluation, validation loss) without moving the training's random streams,
    so that turning it on or off, or resuming around it, does not change the training."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)
