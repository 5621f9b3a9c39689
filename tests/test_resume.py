"""Exact resume: the resumable sampler and loader, the saved random state, and tools/train_net.py
killed (SIGKILL, SIGTERM) at random points and resumed, against an uninterrupted run."""
import json
import os
import random
import re
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT, run_train_net, train_net_command
from ustumor.data.build import ResumableTrainLoader
from ustumor.data.samplers import ResumableTrainingSampler
from ustumor.synthetic import write_phantom_dataset
from ustumor.engine.checkpoint import capture_rng_state, restore_rng_state


def take(iterable, count):
    iterator = iter(iterable)
    return [next(iterator) for _ in range(count)]


@pytest.mark.parametrize("group_ids", [None, [0, 1, 0, 0, 1, 1, 0]])
def test_sampler_started_at_a_step_continues_the_uninterrupted_sequence(group_ids):
    full = take(ResumableTrainingSampler(7, 2, seed=5, group_ids=group_ids, rank=0, world_size=1), 20)
    for start in (1, 4, 13):
        resumed = ResumableTrainingSampler(7, 2, seed=5, group_ids=group_ids, start_step=start, rank=0, world_size=1)
        assert take(resumed, 20 - start) == full[start:]
    positions = [p for batch in full for p, _ in batch]
    assert len(set(positions)) == len(positions)  # no sample drawn twice
    if group_ids is not None:
        assert all(len({group_ids[i] for _, i in batch}) == 1 for batch in full)


def test_sampler_visits_every_image_once_per_epoch_in_a_seeded_order():
    sampler = ResumableTrainingSampler(6, 3, seed=1, rank=0, world_size=1)
    batches = take(sampler, 4)  # two epochs
    samples = [s for batch in batches for s in batch]
    assert [p for p, _ in samples] == list(range(12))  # consecutive: nothing skipped
    first, second = [i for _, i in samples[:6]], [i for _, i in samples[6:]]
    assert sorted(first) == sorted(second) == list(range(6)) and first != second
    assert take(ResumableTrainingSampler(6, 3, seed=1, rank=0, world_size=1), 4) == batches
    assert take(ResumableTrainingSampler(6, 3, seed=2, rank=0, world_size=1), 4) != batches


def test_sampler_gives_each_rank_its_slice_of_the_global_batch():
    def rank(r, start=0):
        return ResumableTrainingSampler(9, 2, seed=3, rank=r, world_size=2, start_step=start)

    one_process = take(ResumableTrainingSampler(9, 4, seed=3, rank=0, world_size=1), 5)
    assert take(rank(0).global_batches(), 5) == one_process
    assert take(rank(0), 5) == [b[:2] for b in one_process] and take(rank(1), 5) == [b[2:] for b in one_process]
    assert take(rank(1, start=3), 2) == [b[2:] for b in one_process[3:5]]


class RandomMapper:
    """Stands in for the dataset mapper: its "augmentation" draws from all global generators."""

    def __call__(self, item):
        return (item, np.random.randint(1 << 30), random.random(), float(torch.rand(())))


def make_loader(num_workers=0):
    sampler = ResumableTrainingSampler(5, 2, seed=7, rank=0, world_size=1)
    return ResumableTrainLoader(list(range(5)), RandomMapper(), sampler, num_workers=num_workers)


def test_loader_resumes_with_the_same_samples_and_augmentations():
    full = take(make_loader(), 8)
    first = make_loader()
    assert take(first, 3) == full[:3]
    state = first.state_dict()
    assert state["next_step"] == 3
    resumed = make_loader()
    iterator = iter(resumed)  # as the trainer does before --resume loads the state
    resumed.load_state_dict(state)
    assert [next(iterator) for _ in range(5)] == full[3:]
    with pytest.raises(RuntimeError):
        resumed.load_state_dict(state)  # too late once batches were drawn


def test_loader_output_does_not_depend_on_workers_and_leaves_global_generators_alone():
    np.random.seed(0)
    before = np.random.get_state()[1].copy()
    in_process = take(make_loader(num_workers=0), 6)
    assert np.array_equal(np.random.get_state()[1], before)
    assert take(make_loader(num_workers=2), 6) == in_process


def test_rng_state_survives_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    np.random.normal()  # a cached Gaussian is part of NumPy's state
    torch.save({"rng": capture_rng_state()}, tmp_path / "state.pth")
    expected = (random.random(), np.random.normal(), torch.rand(3))
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    restore_rng_state(torch.load(tmp_path / "state.pth", weights_only=True)["rng"])
    again = (random.random(), np.random.normal(), torch.rand(3))
    assert again[:2] == expected[:2] and torch.equal(again[2], expected[2])


# ---------------------------------------------------------------------------------------
# End to end: the phantom config on the CPU, deterministic, killed and resumed
# ---------------------------------------------------------------------------------------
CONFIG = os.path.join(REPO_ROOT, "configs", "phantom", "faster_rcnn_R_50_FPN_cpu_300it.yaml")
SCHEDULE = [
    "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "160", "INPUT.MIN_SIZE_TEST", "128",
    "INPUT.MAX_SIZE_TEST", "160", "DATALOADER.NUM_WORKERS", "0", "SEED", "42",
    "SOLVER.MAX_ITER", "8", "SOLVER.WARMUP_ITERS", "2", "SOLVER.STEPS", "(5,)", "SOLVER.CHECKPOINT_PERIOD", "2",
    "SOLVER.CHECKPOINT_KEEP_LAST", "2", "TEST.EVAL_PERIOD", "3", "TEST.VAL_LOSS.ENABLED", "True",
    # validation loss changes at every evaluation, so model_best moves during the run
    "TEST.BEST_CHECKPOINT.METRIC", "validation/total_loss", "TEST.BEST_CHECKPOINT.MODE", "min",
]


@pytest.fixture(scope="module")
def phantom_env(tmp_path_factory):
    datasets = tmp_path_factory.mktemp("datasets")
    write_phantom_dataset(str(datasets / "phantom"), num_images=30, seed=0, image_size=(128, 160))
    # one thread: float reductions then run in one order, the same in every process
    return dict(os.environ, USTUMOR_DATASETS=str(datasets), PYTHONPATH=REPO_ROOT, OMP_NUM_THREADS="1",
                MKL_NUM_THREADS="1")


def resumed_run_command(output_dir, *extra):
    return train_net_command(CONFIG, "--resume", "OUTPUT_DIR", str(output_dir), *SCHEDULE, *extra)


def last_checkpoint(output_dir):
    try:
        return open(os.path.join(output_dir, "last_checkpoint")).read()
    except OSError:
        return ""


def wait_for_new_checkpoint(process, output_dir, timeout=900):
    """Seconds until this process tags a checkpoint (or exits)."""
    seen, start = last_checkpoint(output_dir), time.time()
    while process.poll() is None and last_checkpoint(output_dir) == seen and time.time() < start + timeout:
        time.sleep(0.02)
    return time.time() - start


@pytest.fixture(scope="module")
def uninterrupted_run(phantom_env, tmp_path_factory):
    """The reference run, and the seconds between its checkpoints (to time the kills)."""
    output_dir = tmp_path_factory.mktemp("uninterrupted")
    log_file = output_dir.parent / "uninterrupted.log"  # a file, not a pipe nobody reads while it runs
    with open(log_file, "w") as log:
        process = subprocess.Popen(resumed_run_command(output_dir), env=phantom_env, cwd=REPO_ROOT, stdout=log,
                                   stderr=subprocess.STDOUT)
        wait_for_new_checkpoint(process, output_dir)
        periods = [wait_for_new_checkpoint(process, output_dir) for _ in range(3)]
        process.wait(timeout=900)
    assert process.returncode == 0, log_file.read_text()[-3000:]
    return output_dir, max(periods)


@pytest.mark.slow
def test_killed_and_resumed_run_ends_exactly_as_an_uninterrupted_one(phantom_env, uninterrupted_run, tmp_path):
    reference, period = uninterrupted_run
    output_dir = tmp_path / "interrupted"
    rng = random.Random(2024)
    # SIGTERM first: it then lands well before the end, so the run must stop on it
    interruptions = [signal.SIGTERM, signal.SIGKILL, signal.SIGKILL]
    outcomes = []
    for launch in range(8):  # until a launch completes: a kill may also hit the final evaluation
        log_file = tmp_path / f"launch{launch}.log"
        with open(log_file, "w") as log:
            process = subprocess.Popen(resumed_run_command(output_dir), env=phantom_env, cwd=REPO_ROOT,
                                       stdout=log, stderr=subprocess.STDOUT)
            if not interruptions:
                assert process.wait(timeout=900) == 0
                break
            # strike at a random moment within a checkpoint period after this launch's first
            # checkpoint: mid-step, mid-evaluation or mid-write
            wait_for_new_checkpoint(process, output_dir)
            time.sleep(rng.uniform(0.0, period))
            signum = interruptions.pop(0)
            process.send_signal(signum)
            code = process.wait(timeout=900)
        outcomes.append((signum.name, code, last_checkpoint(output_dir)))
        if signum == signal.SIGTERM:
            # the interrupt hook, not the signal, ended the process: after saving the iteration it stopped at
            assert code == 128 + signal.SIGTERM, (code, log_file.read_text()[-3000:])
            stopped = re.findall(r"Stopped by SIGTERM after iteration (\d+)", log_file.read_text())
            assert len(stopped) == 1, log_file.read_text()[-3000:]
            name = last_checkpoint(output_dir)
            saved = torch.load(output_dir / name, map_location="cpu", weights_only=True)
            assert name == f"model_{int(stopped[0]):07d}.pth" and saved["iteration"] == int(stopped[0])
        if code == 0:
            break
    interrupted = [o for o in outcomes if o[1] in (-signal.SIGKILL, 128 + signal.SIGTERM)]
    assert len(interrupted) >= 2, outcomes  # the test must really have interrupted the run

    expected = torch.load(reference / "model_final.pth", map_location="cpu", weights_only=True)
    actual = torch.load(output_dir / "model_final.pth", map_location="cpu", weights_only=True)
    assert expected["iteration"] == actual["iteration"] == 7
    assert expected["model"].keys() == actual["model"].keys()
    for name, tensor in expected["model"].items():
        assert torch.allclose(actual["model"][name].double(), tensor.double(), atol=1e-6, rtol=0), name
    best = json.load(open(output_dir / "model_best.json"))
    assert best == json.load(open(reference / "model_best.json"))
    assert best["iteration"] in (2, 5, 7)  # the evaluations' iterations
    # SOLVER.CHECKPOINT_KEEP_LAST 2, counted across all the launches; no temporary left behind
    periodic = sorted(f for f in os.listdir(output_dir) if f.startswith("model_0"))
    assert periodic == ["model_0000005.pth", "model_0000007.pth"], periodic
    assert not [f for f in os.listdir(output_dir) if ".tmp" in f]


@pytest.mark.slow
def test_eval_only_writes_the_medical_suite(phantom_env, uninterrupted_run):
    uninterrupted_run = uninterrupted_run[0]
    log = run_train_net(phantom_env["USTUMOR_DATASETS"], CONFIG, "--eval-only",
                        "OUTPUT_DIR", str(uninterrupted_run), *SCHEDULE,
                        "MODEL.WEIGHTS", str(uninterrupted_run / "model_best.pth"),
                        "DATASETS.TEST", '("phantom_test",)', "TEST.BOOTSTRAP.NUM_SAMPLES", "200",
                        "TEST.PENALIZED_IOU.SCORE_THRESH", "0.05")
    assert "95% CI" in log and "froc" in log and "cpm" in log

    folder = uninterrupted_run / "inference" / "phantom_test"
    results = json.load(open(folder / "results.json"))
    assert {"bbox", "bbox_agnostic", "froc", "froc_curve", "lesion_level", "image_level", "penalized_iou",
            "penalized_iou_sweep", "confidence_intervals", "settings"} <= set(results)
    assert "patient_level" not in results and "malignancy" not in results  # no patients, one class
    assert results["settings"]["bootstrap"]["num_samples"] == 200
    num_images = results["settings"]["num_images"]
    assert results["froc"]["num_images"] == results["penalized_iou"]["num_images"] == num_images > 0
    for name in ("froc/cpm", "penalized_iou/piou", "bbox_agnostic/AP50", "image_level/sensitivity"):
        interval = results["confidence_intervals"][name]
        assert interval["low"] <= interval["estimate"] <= interval["high"], (name, interval)
    per_image = json.load(open(folder / "per_image.json"))
    assert len(per_image) == num_images
    assert {e["outcome"] for e in per_image} <= {"tp", "fp", "fn", "tn"}
    assert (folder / "penalized_iou_sweep.csv").exists()


@pytest.mark.slow
def test_a_kill_while_writing_model_final_is_repaired_on_resume(phantom_env, uninterrupted_run, tmp_path):
    """Killed between the last periodic checkpoint and model_final.pth: --resume starts past the
    last iteration, runs no step, and must still write model_final.pth."""
    reference, _ = uninterrupted_run
    output_dir = tmp_path / "killed_in_final"
    shutil.copytree(reference, output_dir)
    last_periodic = sorted(name for name in os.listdir(output_dir) if re.fullmatch(r"model_\d{7}\.pth", name))[-1]
    os.remove(output_dir / "model_final.pth")
    (output_dir / "last_checkpoint").write_text(last_periodic)
    result = subprocess.run(resumed_run_command(output_dir), env=phantom_env, cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    final = torch.load(output_dir / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    expected = torch.load(reference / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    assert final.keys() == expected.keys() and all(torch.equal(final[k], expected[k]) for k in expected)
