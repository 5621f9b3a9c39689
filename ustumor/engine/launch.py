"""Training on several processes with PyTorch DDP: Detectron2's ``launch`` and ``create_ddp_model``,
on the CPU (gloo) as well as on GPUs (NCCL).

Detectron2 v0.6's ``launch`` asserts CUDA and always uses NCCL, and its ``create_ddp_model``
passes ``device_ids``, which DistributedDataParallel rejects for a CPU model. Here:

- the backend follows ``MODEL.DEVICE``: gloo for ``cpu``, NCCL for ``cuda``; a CPU worker
  takes ``cores / processes`` threads unless ``OMP_NUM_THREADS`` says otherwise;
- collectives time out after ``timeout`` (:data:`DEFAULT_TIMEOUT`), so a worker that hangs
  makes the others fail instead of waiting for ever;
- when a worker fails (exception, killed), the others get :data:`GRACE_SECONDS` to stop on
  their own (with gloo they fail at once: their peer's sockets closed), then SIGTERM, then
  SIGKILL; the launcher raises with the first failure's traceback;
- SIGTERM/SIGINT to the launcher is passed on to every worker once, so that they finish the
  iteration and save one checkpoint (:class:`~ustumor.engine.hooks.InterruptCheckpointer`);
  the launcher then exits with their status, 128 + the signal number. A second signal to
  the launcher kills the workers.
"""
import datetime
import logging
import os
import signal
import threading

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine.defaults import create_ddp_model as _d2_create_ddp_model
from detectron2.engine.launch import _find_free_port
from detectron2.utils import comm

__all__ = ["DEFAULT_TIMEOUT", "GRACE_SECONDS", "backend_for", "create_ddp_model", "launch"]

logger = logging.getLogger(__name__)

# Longer than anything one process does alone between two collectives (rank 0 computing the
# evaluation's metrics, writing a checkpoint); Detectron2's 30 minutes leaves a hung job idle longer.
DEFAULT_TIMEOUT = datetime.timedelta(minutes=10)
GRACE_SECONDS = 10.0
INTERRUPTED = {128 + signal.SIGTERM, 128 + signal.SIGINT}  # InterruptCheckpointer's exit statuses


def backend_for(device):
    """The process-group backend for ``MODEL.DEVICE``: NCCL for CUDA, gloo otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def create_ddp_model(model, **kwargs):
    """Detectron2's ``create_ddp_model`` (the model itself in a single process), without
    ``device_ids`` for a model on the CPU."""
    if next(model.parameters()).device.type != "cuda":
        kwargs.setdefault("device_ids", None)
    return _d2_create_ddp_model(model, **kwargs)


def launch(main_func, num_gpus_per_machine, num_machines=1, machine_rank=0, dist_url=None, args=(),
           timeout=DEFAULT_TIMEOUT, device="cuda"):
    """Run ``main_func(*args)`` in ``num_gpus_per_machine`` processes on each of ``num_machines``
    machines (Detectron2's ``launch``, same arguments), or directly when there is one process.

    Args:
        dist_url: ``tcp://HOST:PORT`` of machine 0, the same on every machine; "auto" picks a
            free local port (one machine only).
        timeout: collective timeout (``datetime.timedelta``).
        device: ``MODEL.DEVICE``; picks the backend (:func:`backend_for`).
    """
    world_size = num_machines * num_gpus_per_machine
    if world_size == 1:
        return main_func(*args)
    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError("--dist-url auto works on one machine only: give machine 0's tcp://HOST:PORT")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    if num_machines > 1 and dist_url.startswith("file://"):
        logger.warning("file:// is not a reliable init_method in multi-machine jobs. Prefer tcp://")
    backend = backend_for(device)
    context = mp.start_processes(
        _distributed_worker, nprocs=num_gpus_per_machine, join=False, start_method="spawn",
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, backend, timeout),
    )
    with _signals_forwarded_to(context.processes):
        try:
            while not context.join(grace_period=GRACE_SECONDS):
                pass
        except mp.ProcessExitedException:
            codes = {process.exitcode for process in context.processes}
            if len(codes) == 1 and codes <= INTERRUPTED:  # every worker stopped cleanly on a signal
                raise SystemExit(codes.pop()) from None
            raise


class _signals_forwarded_to:
    """Context manager: SIGTERM/SIGINT received by the launcher go to the live ``processes``; a
    second one sends SIGKILL."""

    def __init__(self, processes):
        self.processes = processes
        self.received = []
        self.previous = {}

    def _forward(self, signum, frame):
        self.received.append(signum)
        forwarded = signum if len(self.received) == 1 else signal.SIGKILL
        logger.warning("Launcher received %s: sending %s to the workers", signal.Signals(signum).name,
                       signal.Signals(forwarded).name)
        for process in self.processes:
            if process.is_alive():
                try:
                    os.kill(process.pid, forwarded)
                except ProcessLookupError:
                    pass

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self.previous[signum] = signal.signal(signum, self._forward)
        return self

    def __exit__(self, *exc):
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)
        return False


def _distributed_worker(local_rank, main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args,
                        backend, timeout):
    # Detectron2's _distributed_worker, with the backend chosen by the caller
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    if backend == "nccl":
        if num_gpus_per_machine > torch.cuda.device_count():
            raise RuntimeError(f"{num_gpus_per_machine} processes per machine, but {torch.cuda.device_count()} GPUs")
        torch.cuda.set_device(local_rank)
    elif "OMP_NUM_THREADS" not in os.environ:  # the processes share the machine's cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_gpus_per_machine))
    try:
        dist.init_process_group(backend, init_method=dist_url, world_size=world_size, rank=global_rank,
                                timeout=timeout)
    except Exception:
        logger.error("Process group URL: %s", dist_url)
        raise
    # the group of the ranks on this machine (comm.get_local_rank/get_local_size)
    assert comm._LOCAL_PROCESS_GROUP is None
    for machine in range(world_size // num_gpus_per_machine):
        ranks = list(range(machine * num_gpus_per_machine, (machine + 1) * num_gpus_per_machine))
        group = dist.new_group(ranks, timeout=timeout)
        if machine == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    # synchronize is needed here to prevent a possible timeout after calling init_process_group
    # See: https://github.com/facebookresearch/maskrcnn-benchmark/issues/172
    comm.synchronize()
    main_func(*args)
