"""Training hooks for model selection that survives ``--resume``, exact resume, and validation loss.

Order matters; :meth:`UltrasoundTrainer.build_hooks` registers them as
``BroadcastBuffers -> ValidationLoss -> EvalHook -> BestCheckpointer -> PeriodicCheckpointer -> ...
-> InterruptCheckpointer``: evaluation and the best-model update happen *before* the
periodic checkpoint of the same iteration, so that checkpoint's trainer state already
holds the best value (Detectron2 saves first and evaluates after).
"""
import json
import logging
import math
import operator
import os
import signal
import threading
import uuid

import torch
import torch.distributed as dist
from detectron2.engine.hooks import HookBase
from detectron2.utils import comm
from torch import nn

from ..utils.file_io import atomic_write
from .checkpoint import capture_rng_state, preserved_rng_state, restore_rng_state

logger = logging.getLogger(__name__)

__all__ = [
    "BroadcastBuffers",
    "BestCheckpointer",
    "PeriodicCheckpointer",
    "InterruptCheckpointer",
    "ExactResumeState",
    "ValidationLoss",
]


def _is_eval_iteration(trainer, period):
    """EvalHook's schedule: every ``period`` iterations except the last, which after_train covers."""
    next_iter = trainer.iter + 1
    return period > 0 and next_iter % period == 0 and next_iter != trainer.max_iter


def _finished(trainer):
    # after_train also runs after a failure or interruption; only a completed run evaluates
    return trainer.iter + 1 >= trainer.max_iter


class BestCheckpointer(HookBase):
    """Keep ``model_best.pth`` (weights only) and ``model_best.json`` for the best value of
    an EvalHook metric. Put it after the EvalHook.

    Unlike Detectron2's, the best value and its iteration are part of the checkpointed
    trainer state (:meth:`state_dict`), so ``--resume`` never replaces a better best with a
    worse one; ``model_best.pth`` is written atomically and never re-tags
    ``last_checkpoint``. NaN and infinite values are never best.

    ``model_best.json``: ``{"metric", "mode", "value", "iteration", "checkpoint"}``, where
    ``iteration`` is the last completed training iteration of the saved weights.
    """

    def __init__(self, eval_period, checkpointer, metric="penalized_iou/piou", mode="max", file_prefix="model_best"):
        if mode not in ("max", "min"):
            raise ValueError(f"TEST.BEST_CHECKPOINT.MODE must be 'max' or 'min', got {mode!r}")
        self._period = eval_period
        self._checkpointer = checkpointer
        self.metric = metric
        self.mode = mode
        self._better = operator.gt if mode == "max" else operator.lt
        self.file_prefix = file_prefix
        self.best_value = None
        self.best_iter = None
        # Identifies this training run across resumes: a model_best.pth left by another run
        # in the same folder is never taken for this run's.
        self.run_id = uuid.uuid4().hex  # os.urandom: leaves the seeded generators alone
        self._resumed = False

    @property
    def json_path(self):
        return os.path.join(self._checkpointer.save_dir, f"{self.file_prefix}.json")

    @property
    def checkpoint_path(self):
        return os.path.join(self._checkpointer.save_dir, f"{self.file_prefix}.pth")

    def state_dict(self):
        return {"metric": self.metric, "mode": self.mode, "run_id": self.run_id,
                "best_value": float("nan") if self.best_value is None else float(self.best_value),
                "best_iter": -1 if self.best_iter is None else int(self.best_iter)}

    def load_state_dict(self, state):
        self._resumed = True
        self.run_id = state.get("run_id", self.run_id)
        if (state.get("metric"), state.get("mode")) != (self.metric, self.mode):
            logger.warning("The checkpoint tracked %s (%s); now tracking %s (%s): starting a new best.",
                           state.get("metric"), state.get("mode"), self.metric, self.mode)
            return
        if state.get("best_iter", -1) >= 0:
            self.best_value, self.best_iter = float(state["best_value"]), int(state["best_iter"])

    def before_train(self):
        if self._resumed or self.trainer.start_iter > 0:
            self._adopt_saved_best()
        if self.best_value is not None:
            logger.info("Best %s so far: %.5f at iteration %d", self.metric, self.best_value, self.best_iter)
            # a kill between writing model_best.pth and model_best.json leaves the summary stale
            if comm.is_main_process() and os.path.isfile(self.checkpoint_path) and self._read_summary() != self._summary():
                self._write_summary()

    def _adopt_saved_best(self):
        """A run killed after writing model_best but before its next checkpoint resumes with an
        older best in its state; take the newer file's value when it is this run's and better."""
        if not os.path.isfile(self.checkpoint_path):
            return
        try:  # mmap: reads the few bytes of metadata, not the weights
            saved = torch.load(self.checkpoint_path, map_location="cpu", mmap=True, weights_only=True).get("best", {})
        except Exception as error:  # an unreadable file is ignored: it will be overwritten
            logger.warning("Cannot read %s (%s); ignoring it", self.checkpoint_path, error)
            return
        if saved.get("run_id") != self.run_id or (saved.get("metric"), saved.get("mode")) != (self.metric, self.mode):
            return
        value, iteration = float(saved["value"]), int(saved["iteration"])
        if self.best_value is None or self._better(value, self.best_value):
            logger.info("Taking the best %s %.5f (iteration %d) from %s", self.metric, value, iteration,
                        self.checkpoint_path)
            self.best_value, self.best_iter = value, iteration

    def after_step(self):
        if _is_eval_iteration(self.trainer, self._period):
            self._check(self.trainer.iter)

    def after_train(self):
        if _finished(self.trainer):
            self._check(self.trainer.max_iter - 1)

    def _check(self, iteration):
        storage = self.trainer.storage
        latest = storage.latest().get(self.metric)
        if latest is None or latest[1] != storage.iter:  # not computed by this evaluation
            logger.warning("Metric %s was not computed at iteration %d; model_best not updated. Metrics: %s",
                           self.metric, iteration, sorted(storage.latest()))
            return
        value = float(latest[0])
        if not math.isfinite(value):
            logger.warning("%s is %s at iteration %d; never taken as best", self.metric, value, iteration)
            return
        if self.best_value is not None and not self._better(value, self.best_value):
            logger.info("%s = %.5f at iteration %d, not better than %.5f at iteration %d", self.metric, value,
                        iteration, self.best_value, self.best_iter)
            return
        self.best_value, self.best_iter = value, iteration
        self._save()

    def _summary(self):
        return {"metric": self.metric, "mode": self.mode, "value": self.best_value, "iteration": self.best_iter,
                "checkpoint": os.path.basename(self.checkpoint_path)}

    def _read_summary(self):
        try:
            with open(self.json_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def _write_summary(self):
        summary = self._summary()
        atomic_write(self.json_path, lambda f: json.dump(summary, f, indent=1), mode="w")

    def _save(self):
        best = {"metric": self.metric, "mode": self.mode, "value": self.best_value, "iteration": self.best_iter}
        self._checkpointer.save(self.file_prefix, tag_last_checkpoint=False, include_checkpointables=False,
                                iteration=self.best_iter, best=dict(best, run_id=self.run_id))
        self._write_summary()
        logger.info("New best %s = %.5f at iteration %d: saved %s", self.metric, self.best_value, self.best_iter,
                    self.checkpoint_path)


class PeriodicCheckpointer(HookBase):
    """Save ``model_<iter>.pth`` every ``period`` iterations and ``model_final.pth`` at the end,
    keeping only the newest ``keep_last`` periodic files (0: all), counted on disk so that
    files from before a resume are pruned too."""

    def __init__(self, checkpointer, period, keep_last=0, file_prefix="model"):
        self.checkpointer = checkpointer
        self.period = int(period)
        self.keep_last = int(keep_last)
        self.file_prefix = file_prefix
        self._final_saved = False

    def after_step(self):
        iteration = self.trainer.iter
        if self.period > 0 and (iteration + 1) % self.period == 0:
            self.checkpointer.save(f"{self.file_prefix}_{iteration:07d}", iteration=iteration)
            self.checkpointer.prune_periodic(self.keep_last)
        if iteration >= self.trainer.max_iter - 1:
            self.checkpointer.save(f"{self.file_prefix}_final", iteration=iteration)
            self._final_saved = True

    def after_train(self):
        # A run killed while writing model_final resumes from the last iteration's periodic
        # checkpoint and runs no step: write model_final from that state. Decided without
        # looking at the disk, so every process of a distributed run agrees.
        if self.trainer.iter >= self.trainer.max_iter and not self._final_saved:
            self.checkpointer.save(f"{self.file_prefix}_final", iteration=self.trainer.max_iter - 1)


class InterruptCheckpointer(HookBase):
    """On SIGTERM or SIGINT, finish the current iteration, save ``model_<iter>.pth`` (unless
    that iteration was just saved), and exit with status 128 + signal number.

    Cloud notebooks and batch schedulers send SIGTERM some seconds before they kill. A
    second signal of the same kind acts as it normally would (e.g. Ctrl-C twice stops at
    once). Put it last, after every hook that should still run for the iteration.

    With several processes, a signal to any of them stops all at the same iteration; the
    checkpoint is saved once, and every process exits with 128 + signal number. There a
    second signal is deferred too: Ctrl-C and schedulers signal every process, and the
    launcher forwards its own (:func:`ustumor.engine.launch.launch`, which escalates).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, checkpointer, file_prefix="model"):
        self.checkpointer = checkpointer
        self.file_prefix = file_prefix
        self.received = None
        self._previous = {}

    def _handle(self, signum, frame):
        self.received = signum
        if comm.get_world_size() == 1:
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))  # the next one is not deferred
        logger.warning("Received %s: saving a checkpoint after this iteration, then stopping",
                       signal.Signals(signum).name)

    def before_train(self):
        if threading.current_thread() is not threading.main_thread():
            logger.warning("Not in the main thread: SIGTERM/SIGINT will not save a checkpoint")
            return
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def after_train(self):
        for signum, previous in self._previous.items():
            if signal.getsignal(signum) == self._handle:
                signal.signal(signum, previous)
        self._previous.clear()

    def _any_process_received(self):
        if comm.get_world_size() == 1:
            return self.received
        # every process must stop at the same iteration
        received = [s for s in comm.all_gather(self.received) if s is not None]
        return received[0] if received else None

    def after_step(self):
        signum = self._any_process_received()
        if signum is None:
            return
        iteration = self.trainer.iter
        if iteration >= self.trainer.max_iter - 1:
            logger.warning("%s during the last iteration: finishing normally", signal.Signals(signum).name)
            return
        name = f"{self.file_prefix}_{iteration:07d}"
        # decided alike on every process (saving is collective), from what this run saved
        if self.checkpointer.last_saved not in (f"{name}.pth", f"{self.file_prefix}_final.pth"):
            self.checkpointer.save(name, iteration=iteration)
        comm.synchronize()
        name = signal.Signals(signum).name
        logger.warning("Stopped by %s after iteration %d; continue with --resume", name, iteration)
        raise SystemExit(128 + signum)


class ExactResumeState(HookBase):
    """Puts the training data position and the random generators' states into the trainer's
    checkpoint, and restores them on ``--resume``.

    With the model, optimizer and scheduler (which Detectron2 saves) this makes a resumed
    run continue exactly as the uninterrupted one would have: same batches, same
    augmentations, same RPN/ROI sampling. With several processes, every process's generator
    states are saved (``rng_by_rank``; :meth:`state_dict` then gathers, so it runs on every
    process at once) and each is restored on a resume with as many processes.
    """

    def __init__(self, data_loader):
        self.data_loader = data_loader

    def state_dict(self):
        state = {"rng": capture_rng_state()}
        if comm.get_world_size() > 1:
            state["rng_by_rank"] = comm.all_gather(state["rng"])
        if hasattr(self.data_loader, "state_dict"):
            state["data"] = self.data_loader.state_dict()
        return state

    def load_state_dict(self, state):
        if "data" in state and hasattr(self.data_loader, "load_state_dict"):
            self.data_loader.load_state_dict(state["data"])
        world_size = comm.get_world_size()
        by_rank = state.get("rng_by_rank", [state["rng"]] if "rng" in state else [])
        if len(by_rank) == world_size:
            restore_rng_state(by_rank[comm.get_rank()])
        elif by_rank:
            logger.warning("The checkpoint holds the random states of %d processes, this run has %d: the "
                           "generators keep their per-process seeds", len(by_rank), world_size)


class BroadcastBuffers(HookBase):
    """Before each evaluation (every ``period`` iterations and at the end of training), give every
    process the main process's buffers (BatchNorm running statistics). Put it before the
    evaluation hooks.

    DDP runs with ``broadcast_buffers=False`` (Detectron2's choice: a broadcast at every forward
    needs every process to run as many forwards, which evaluation shards do not), so each
    process's BN statistics follow its own images. Evaluated as they are, each share of the test
    images would see another model than the one checkpointed (the main process's), and a resumed
    run, whose processes all load the main one's, would evaluate differently.
    """

    def __init__(self, period, model):
        self._period = period
        self._model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model

    def _broadcast(self):
        if comm.get_world_size() > 1:
            for buffer in self._model.buffers():
                dist.broadcast(buffer, src=0)

    def after_step(self):
        if _is_eval_iteration(self.trainer, self._period):
            self._broadcast()

    def after_train(self):
        if _finished(self.trainer):
            self._broadcast()


def _batch_norm_modules(model):
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class ValidationLoss(HookBase):
    """Log the training losses on a held-out set as ``validation/<loss>`` (and
    ``validation/total_loss``), every ``period`` iterations and at the end.

    A Detectron2 model returns losses only in training mode, so the model runs in training
    mode under ``torch.no_grad()`` with BatchNorm layers switched to eval mode (their running
    statistics must not learn from validation data); the random generators are restored
    afterwards, so logging validation loss does not change the training. The data loader
    must keep annotations and should not augment.
    """

    def __init__(self, period, model, data_loader, prefix="validation"):
        self._period = period
        self._model = model
        self._data_loader = data_loader
        self._prefix = prefix

    def compute(self):
        model = self._model
        batch_norms = [m for m in _batch_norm_modules(model) if m.training]
        was_training = model.training
        totals, images = {}, 0
        with preserved_rng_state(), torch.no_grad():
            model.train()
            for m in batch_norms:
                m.eval()
            try:
                for batch in self._data_loader:
                    losses = model(batch)
                    for name, value in losses.items():
                        totals[name] = totals.get(name, 0.0) + float(value) * len(batch)
                    images += len(batch)
            finally:
                for m in batch_norms:
                    m.train()
                model.train(was_training)
        if comm.get_world_size() > 1:
            gathered = comm.all_gather((totals, images))
            totals = {k: sum(t.get(k, 0.0) for t, _ in gathered) for k in totals}
            images = sum(n for _, n in gathered)
        means = {f"{self._prefix}/{k}": v / max(images, 1) for k, v in totals.items()}
        means[f"{self._prefix}/total_loss"] = sum(totals.values()) / max(images, 1)
        return means

    def _log(self):
        means = self.compute()
        if comm.is_main_process():
            self.trainer.storage.put_scalars(**means, smoothing_hint=False)
            logger.info("Validation loss at iteration %d: %s", self.trainer.iter,
                        ", ".join(f"{k.split('/')[-1]} {v:.4f}" for k, v in sorted(means.items())))

    def after_step(self):
        if _is_eval_iteration(self.trainer, self._period):
            self._log()

    def after_train(self):
        if _finished(self.trainer):
            self._log()
