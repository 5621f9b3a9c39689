"""Training on several processes: PyTorch DDP over gloo, 2 CPU processes, the phantom at 1/8 width.

- the launcher: gloo for MODEL.DEVICE cpu; a worker that raises, is killed or hangs ends the job;
- the sampler: disjoint shards whose union is one process's batch of the same total size;
- one step of 2 processes x 1 image equals one step of 1 process x 2 images (FrozenBN);
- evaluation: every test image once, the same numbers as one process;
- tools/train_net.py with 2 processes: run as two launches (``--num-machines 2``), only the main
  process writes, SIGTERM to the launcher and to one worker, and ``--resume`` ending exactly as
  the uninterrupted run.
"""
import datetime
import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest
import torch
import torch.distributed as dist
from detectron2.modeling import build_model
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from torch.multiprocessing import ProcessRaisedException

from conftest import REPO_ROOT, run_train_net, train_net_command
from phantom_model import CONFIG, SMALL_MODEL, trained_phantom_model
from ustumor.data.samplers import ResumableTrainingSampler
from ustumor.synthetic import write_phantom_dataset
from ustumor.engine import UltrasoundTrainer
from ustumor.engine.defaults import build_config
from ustumor.engine.launch import GRACE_SECONDS, launch

pytestmark = pytest.mark.slow  # every test starts several processes (10-55 s each on 2 cores)


def take(iterable, count):
    iterator = iter(iterable)
    return [next(iterator) for _ in range(count)]


def launch_two(function, *args, timeout=datetime.timedelta(minutes=2)):
    """``function(*args)`` in 2 CPU processes, from this (pytest) process."""
    launch(function, 2, dist_url="auto", args=args, timeout=timeout, device="cpu")


# ---------------------------------------------------------------------------------------
# The launcher and the sampler
# ---------------------------------------------------------------------------------------
GROUPS = [0, 1, 0, 0, 1, 1, 0, 1, 1]


def record_sampler_shards(folder):
    shards = {"backend": dist.get_backend(), "world_size": comm.get_world_size()}
    for name, groups in (("ungrouped", None), ("grouped", GROUPS)):
        shards[name] = take(ResumableTrainingSampler(9, 2, seed=3, group_ids=groups), 8)
        shards[f"{name}_from_step_5"] = take(ResumableTrainingSampler(9, 2, seed=3, group_ids=groups, start_step=5), 3)
    with open(os.path.join(folder, f"rank{comm.get_rank()}.json"), "w") as f:
        json.dump(shards, f)


def test_two_processes_take_disjoint_shards_of_one_process_batches(tmp_path):
    launch_two(record_sampler_shards, str(tmp_path))
    ranks = [json.load(open(tmp_path / f"rank{r}.json")) for r in range(2)]
    assert all(r["backend"] == "gloo" and r["world_size"] == 2 for r in ranks)
    for name, groups in (("ungrouped", None), ("grouped", GROUPS)):
        one_process = take(ResumableTrainingSampler(9, 4, seed=3, group_ids=groups, rank=0, world_size=1), 8)
        for step, batch in enumerate(one_process):
            shards = [[tuple(s) for s in r[name][step]] for r in ranks]
            assert len(shards[0]) == len(shards[1]) == 2
            assert not set(shards[0]) & set(shards[1])  # disjoint
            assert shards[0] + shards[1] == [tuple(s) for s in batch]  # together: one process's batch
            if groups is not None:
                assert len({groups[i] for _, i in batch}) == 1
        for r in ranks:  # started at a step: the same shards as the uninterrupted sequence
            assert r[f"{name}_from_step_5"] == r[name][5:8]


def fail_on_rank_one():
    if comm.get_rank() == 1:
        raise ValueError("rank 1 fails on purpose")
    comm.synchronize()  # rank 0 waits for a peer that is gone


def hang_on_rank_one():
    if comm.get_rank() == 1:
        time.sleep(600)  # alive, never joins the collective
    comm.synchronize()


def test_a_worker_that_raises_ends_the_job_with_its_traceback():
    start = time.time()
    with pytest.raises(ProcessRaisedException, match="rank 1 fails on purpose"):
        launch_two(fail_on_rank_one)
    assert time.time() - start < 60


def test_a_hung_worker_ends_the_job_at_the_collective_timeout():
    timeout = 5
    start = time.time()
    with pytest.raises(ProcessRaisedException, match="(?i)timed out|timeout"):
        launch_two(hang_on_rank_one, timeout=datetime.timedelta(seconds=timeout))
    # rank 0 times out, rank 1 gets GRACE_SECONDS to stop, then SIGTERM (+ process start-up)
    assert time.time() - start < timeout + 2 * GRACE_SECONDS + 60


# ---------------------------------------------------------------------------------------
# One step of 2 processes x 1 image = one step of 1 process x 2 images
# ---------------------------------------------------------------------------------------
# No random subsampling: every anchor and every proposal counts, and the same number of
# proposals per image, so the losses are per-image means that DDP's gradient average combines
# exactly as one process's batch mean does. Images are padded to 128x128 either way.
ONE_STEP = SMALL_MODEL + [
    "INPUT.MAX_SIZE_TRAIN", "128", "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "8192", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "512", "MODEL.ROI_HEADS.PROPOSAL_APPEND_GT", "False",
    "SOLVER.MAX_ITER", "1", "SOLVER.WARMUP_ITERS", "0", "SOLVER.BASE_LR", "0.02", "SOLVER.CHECKPOINT_PERIOD", "100",
    "DATASETS.TEST", "()", "SEED", "7", "MODEL.DEVICE", "cpu",
]


@pytest.fixture(scope="module")
def phantom_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    write_phantom_dataset(str(root / "phantom"), num_images=30, seed=0, image_size=(128, 160))
    return root


def train(opts):
    cfg = build_config(CONFIG, opts)
    seed_all_rng(cfg.SEED + comm.get_rank())  # as default_setup
    UltrasoundTrainer(cfg).train()


def test_one_step_on_two_processes_equals_one_step_on_one(phantom_root, tmp_path, monkeypatch):
    monkeypatch.setenv("USTUMOR_DATASETS", str(phantom_root))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    opts = ONE_STEP + ["MODEL.RESNETS.NORM", "FrozenBN"]  # BN's statistics would be per process
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(opts + ["OUTPUT_DIR", str(tmp_path / "one")])
        cfg = build_config(CONFIG, opts)
        seed_all_rng(cfg.SEED)
        initial = build_model(cfg).state_dict()
    finally:
        torch.set_num_threads(threads)
    launch_two(train, opts + ["OUTPUT_DIR", str(tmp_path / "two")])

    one = torch.load(tmp_path / "one" / "model_final.pth", weights_only=True)["model"]
    two = torch.load(tmp_path / "two" / "model_final.pth", weights_only=True)["model"]
    parameters = [n for n, p in build_model(cfg).named_parameters() if p.requires_grad]
    moved = max(float((one[n] - initial[n]).abs().max()) for n in parameters)
    differ = max(float((one[n] - two[n]).abs().max()) for n in parameters)
    assert moved > 1e-3  # the step did change the weights
    assert differ < 1e-6, (differ, moved)


# ---------------------------------------------------------------------------------------
# tools/train_net.py on 2 processes
# ---------------------------------------------------------------------------------------
SCHEDULE = SMALL_MODEL + [
    "SEED", "42", "SOLVER.MAX_ITER", "12", "SOLVER.WARMUP_ITERS", "2", "SOLVER.STEPS", "(8,)",
    "SOLVER.CHECKPOINT_PERIOD", "2", "SOLVER.CHECKPOINT_KEEP_LAST", "2", "TEST.EVAL_PERIOD", "4",
    "TEST.VAL_LOSS.ENABLED", "True",
    # validation loss changes at every evaluation, so model_best moves during the run
    "TEST.BEST_CHECKPOINT.METRIC", "validation/total_loss", "TEST.BEST_CHECKPOINT.MODE", "min",
]

# Installed through PYTHONPATH in every process of a run: logs which process opens which file
# of OUTPUT_DIR for writing (and renames into it), to find files written by the wrong process.
WRITE_AUDIT = r'''
import json, os, sys
_folder, _watched, _busy = os.environ["WRITE_AUDIT_DIR"], os.environ["WRITE_AUDIT_WATCH"], [False]
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND

def _log(path):
    path = os.path.abspath(os.fsdecode(path))
    if not path.startswith(_watched + os.sep):
        return
    _busy[0] = True
    try:
        with open(os.path.join(_folder, f"{os.getpid()}.jsonl"), "a") as f:
            f.write(json.dumps(os.path.relpath(path, _watched)) + "\n")
    finally:
        _busy[0] = False

def _hook(event, args):
    if _busy[0]:
        return
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        mode, flags = args[1], args[2] or 0
        if (mode and any(c in mode for c in "wax+")) or (not mode and flags & _WRITE_FLAGS):
            _log(args[0])
    elif event in ("os.rename", "os.replace"):
        _log(args[1])

sys.addaudithook(_hook)
'''


def canonical(name):
    """A file's name without the temporary suffixes of its atomic writes."""
    name = re.sub(r"\.tmp\d*$", "", name)
    return re.sub(r"(^|/)\.([^/]+)$", r"\1\2", name)


def audited_writes(folder):
    """{pid: set of OUTPUT_DIR files it wrote}"""
    writes = {}
    for name in os.listdir(folder):
        with open(os.path.join(folder, name)) as f:
            writes[int(name.split(".")[0])] = {canonical(json.loads(line)) for line in f}
    return writes


@pytest.fixture(scope="module")
def train_env(phantom_root):
    # one thread per process: float reductions in one order, the same in every run
    return dict(os.environ, USTUMOR_DATASETS=str(phantom_root), PYTHONPATH=REPO_ROOT, OMP_NUM_THREADS="1",
                MKL_NUM_THREADS="1")


def resumed_run_command(output_dir, *launch_args, extra=()):
    return train_net_command(CONFIG, "--resume", *launch_args, "OUTPUT_DIR", str(output_dir), *SCHEDULE, *extra)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def last_checkpoint(output_dir):
    try:
        return open(os.path.join(output_dir, "last_checkpoint")).read()
    except OSError:
        return ""


def wait_for_new_checkpoint(process, output_dir, timeout=600):
    seen, start = last_checkpoint(output_dir), time.time()
    while process.poll() is None and last_checkpoint(output_dir) == seen and time.time() < start + timeout:
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before writing a checkpoint"


def worker_of_rank(launcher, output_dir, rank):
    """The pid of the launcher's worker that logs to ``log.txt.rank<rank>`` (``log.txt`` for 0)."""
    log = os.path.join(output_dir, "log.txt" if rank == 0 else f"log.txt.rank{rank}")
    children = open(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read().split()
    for pid in children:
        try:
            fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        if log in fds:
            return int(pid)
    raise AssertionError(f"no worker of {launcher.pid} has {log} open")


def stopped_at(output_dir):
    """The iterations each rank's log says it stopped at after a signal."""
    pattern = re.compile(r"Stopped by SIGTERM after iteration (\d+)")
    return [[int(m) for m in pattern.findall(open(os.path.join(output_dir, log)).read())]
            for log in ("log.txt", "log.txt.rank1")]


@pytest.fixture(scope="module")
def two_machine_run(train_env, tmp_path_factory):
    """The reference: 2 processes started as two launches ("machines") on this host, with
    every file write logged."""
    output_dir = tmp_path_factory.mktemp("two_machines")
    audit = tmp_path_factory.mktemp("audit")
    site = tmp_path_factory.mktemp("site")
    (site / "sitecustomize.py").write_text(WRITE_AUDIT)
    env = dict(train_env, PYTHONPATH=f"{site}{os.pathsep}{REPO_ROOT}", WRITE_AUDIT_DIR=str(audit),
               WRITE_AUDIT_WATCH=str(output_dir))
    url = f"tcp://127.0.0.1:{free_port()}"
    logs = [tmp_path_factory.mktemp("logs") / f"machine{r}.log" for r in range(2)]
    machines = [subprocess.Popen(resumed_run_command(output_dir, "--num-machines", "2", "--machine-rank", str(r),
                                                     "--num-gpus", "1", "--dist-url", url),
                                 env=env, cwd=REPO_ROOT, stdout=open(logs[r], "w"), stderr=subprocess.STDOUT)
                for r in range(2)]
    codes = [m.wait(timeout=900) for m in machines]
    assert codes == [0, 0], [log.read_text()[-3000:] for log in logs]
    return output_dir, audited_writes(audit)


def test_two_launches_as_two_machines_train_and_only_the_main_process_writes(two_machine_run):
    output_dir, writes = two_machine_run
    # the process that opened log.txt is rank 0, the one that opened log.txt.rank1 rank 1
    rank = {pid: 1 if "log.txt.rank1" in files else 0 for pid, files in writes.items() if any(
        f.startswith("log.txt") for f in files)}
    assert sorted(rank.values()) == [0, 1], writes
    main = [pid for pid, r in rank.items() if r == 0][0]
    writers = {}
    for pid, files in writes.items():
        for name in files:
            writers.setdefault(name, set()).add(pid)
    for name, pids in writers.items():
        if name.endswith(".lock"):  # Detectron2's file lock around the COCO-json cache: both take it
            continue
        expected = {pid for pid, r in rank.items() if r == 1} if name == "log.txt.rank1" else {main}
        assert pids == expected, (name, pids, rank)
    written = set(writers)
    assert {"last_checkpoint", "model_final.pth", "model_best.pth", "model_best.json", "metrics.json",
            "config.yaml", "splits/phantom.json", "inference/phantom_val/results.json"} <= written, written
    # nothing torn: every file reads back
    for name in written:
        path = output_dir / name
        if not path.exists() or name.endswith(".lock"):
            continue
        if name.endswith(".pth"):
            torch.load(path, map_location="cpu", weights_only=True)
        elif name.endswith(".json") and name != "metrics.json":
            json.load(open(path))
    lines = open(output_dir / "metrics.json").read().splitlines()
    assert max(json.loads(line)["iteration"] for line in lines) >= 11  # every line whole, up to the end


def test_sigterm_to_the_launcher_or_a_worker_then_resume_ends_as_the_uninterrupted_run(
        train_env, two_machine_run, tmp_path):
    reference = two_machine_run[0]
    output_dir = tmp_path / "interrupted"
    two_processes = ("--num-gpus", "2", "--dist-url", "auto")
    interruptions = ["launcher", "worker of rank 1"]
    for launch_number in range(3):
        with open(tmp_path / f"launch{launch_number}.log", "w") as log:
            launcher = subprocess.Popen(resumed_run_command(output_dir, *two_processes), env=train_env,
                                        cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
            if launch_number == 2:
                assert launcher.wait(timeout=900) == 0, (tmp_path / "launch2.log").read_text()[-3000:]
                break
            wait_for_new_checkpoint(launcher, output_dir)
            target = launcher.pid if launch_number == 0 else worker_of_rank(launcher, output_dir, 1)
            os.kill(target, signal.SIGTERM)
            code = launcher.wait(timeout=300)
        assert code == 128 + signal.SIGTERM, (interruptions[launch_number], code,
                                              (tmp_path / f"launch{launch_number}.log").read_text()[-3000:])
        # every rank stopped after the same iteration, and that iteration's checkpoint is the resume point
        rank0, rank1 = stopped_at(output_dir)
        assert len(rank0) == len(rank1) == launch_number + 1 and rank0 == rank1, (rank0, rank1)
        name = last_checkpoint(output_dir)
        saved = torch.load(output_dir / name, map_location="cpu", weights_only=True)
        assert name == f"model_{rank0[-1]:07d}.pth" and saved["iteration"] == rank0[-1]
        states = saved["trainer"]["hooks"]["ExactResumeState"]["rng_by_rank"]
        assert len(states) == 2 and not torch.equal(states[0]["torch"], states[1]["torch"])
    assert stopped_at(output_dir)[0][-1] < 11  # both interruptions happened before the end

    expected = torch.load(reference / "model_final.pth", map_location="cpu", weights_only=True)
    actual = torch.load(output_dir / "model_final.pth", map_location="cpu", weights_only=True)
    assert expected["iteration"] == actual["iteration"] == 11
    for name, tensor in expected["model"].items():
        assert torch.allclose(actual["model"][name].double(), tensor.double(), atol=1e-6, rtol=0), name
    assert json.load(open(output_dir / "model_best.json")) == json.load(open(reference / "model_best.json"))
    assert not [f for f in os.listdir(output_dir) if ".tmp" in f]


def test_a_killed_worker_brings_train_net_down(train_env, tmp_path):
    output_dir = tmp_path / "killed"
    with open(tmp_path / "launch.log", "w") as log:
        launcher = subprocess.Popen(
            resumed_run_command(output_dir, "--num-gpus", "2", "--dist-url", "auto", "--dist-timeout", "1"),
            env=train_env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_new_checkpoint(launcher, output_dir)
            main_worker = worker_of_rank(launcher, output_dir, 0)
            os.kill(worker_of_rank(launcher, output_dir, 1), signal.SIGKILL)
            start = time.time()
            launcher.wait(timeout=120)
        finally:
            launcher.kill()
    output = (tmp_path / "launch.log").read_text()
    assert time.time() - start < 60  # within --dist-timeout
    assert launcher.returncode not in (0, 128 + signal.SIGTERM), output[-3000:]
    assert "process 1 terminated with signal SIGKILL" in output, output[-3000:]
    assert not os.path.exists(f"/proc/{main_worker}")  # no worker left behind


# ---------------------------------------------------------------------------------------
# Evaluation on 2 processes
# ---------------------------------------------------------------------------------------
def evaluate(phantom, output_dir, *launch_args):
    run_train_net(phantom.datasets_root, CONFIG, "--eval-only", *launch_args, "OUTPUT_DIR", str(output_dir),
                  *SMALL_MODEL, "MODEL.WEIGHTS", phantom.weights,
                  "DATASETS.TEST", '("phantom_val", "phantom_test")', "TEST.BOOTSTRAP.NUM_SAMPLES", "50")
    return {name: (json.load(open(output_dir / "inference" / name / "results.json")),
                   json.load(open(output_dir / "inference" / name / "per_image.json")))
            for name in ("phantom_val", "phantom_test")}


def test_evaluation_on_two_processes_counts_every_image_once(tmp_path):
    phantom = trained_phantom_model()
    one = evaluate(phantom, tmp_path / "one")
    two = evaluate(phantom, tmp_path / "two", "--num-gpus", "2", "--dist-url", "auto")
    for name, (results, per_image) in one.items():
        results_two, per_image_two = two[name]
        images = sorted(e["image_id"] for e in per_image)
        assert images == sorted(e["image_id"] for e in per_image_two) and len(set(images)) == len(images) > 0
        assert results["settings"]["num_images"] == results_two["settings"]["num_images"] == len(images)
        assert results["bbox"]["AP50"] > 0  # a model that detects: the comparison means something
        assert_same_results(results_two, results)


def assert_same_results(actual, expected, where="results"):
    """Equal structure and strings, numbers equal to float precision (NaN equals NaN)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), where
        for key in expected:
            assert_same_results(actual[key], expected[key], f"{where}/{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for k, (a, e) in enumerate(zip(actual, expected)):
            assert_same_results(a, e, f"{where}[{k}]")
    elif isinstance(expected, float) or isinstance(actual, float):
        assert actual == pytest.approx(expected, rel=1e-9, abs=1e-12, nan_ok=True), where
    else:
        assert actual == expected, where
