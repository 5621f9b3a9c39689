"""model_best across evaluations and resumes, atomic and pruned checkpoints, SIGTERM
(in the style of Detectron2's test_best_checkpointer: a toy model in a SimpleTrainer)."""
import itertools
import json
import os
import signal

import pytest
import torch
from detectron2.engine import SimpleTrainer, hooks
from torch import nn

import ustumor.engine.hooks as hooks_module
from ustumor.engine.checkpoint import AtomicCheckpointer
from ustumor.engine.hooks import BestCheckpointer, InterruptCheckpointer, PeriodicCheckpointer

NAN = float("nan")


class ToyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3))

    def forward(self, batch):
        return {"loss": (self.weight * batch[0]).square().sum()}


class Crash(Exception):
    pass


def run(folder, scores, max_iter=8, period=2, resume=False, mode="max", crash_after=None, crash_before_checkpoint=None,
        checkpoint_period=None):
    """Train the toy model with an EvalHook producing ``scores[iteration]``; returns the
    weights after every iteration. ``crash_after``/``crash_before_checkpoint`` raise at that
    iteration after, or between model_best and the periodic checkpoint."""
    model = ToyModel()
    trainer = SimpleTrainer(model, itertools.repeat([torch.tensor([1.0, 2.0, 3.0])]),
                            torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
    checkpointer = AtomicCheckpointer(model, str(folder), trainer=trainer)
    weights = {}

    def evaluate():
        iteration = min(trainer.iter, max_iter - 1)
        return {"val": {"score": scores[iteration]}}

    def after_step(t):
        weights[t.iter] = model.weight.detach().clone()
        if t.iter == crash_after:
            raise Crash()

    def crash_between(t):
        if t.iter == crash_before_checkpoint:
            raise Crash()

    trainer.register_hooks([
        hooks.EvalHook(period, evaluate),
        BestCheckpointer(period, checkpointer, "val/score", mode),
        hooks.CallbackHook(after_step=crash_between),
        PeriodicCheckpointer(checkpointer, checkpoint_period or period, keep_last=0),
        hooks.CallbackHook(after_step=after_step),
    ])
    start = 0
    if resume:
        checkpointer.resume_or_load("", resume=True)
        start = trainer.iter + 1
    trainer.train(start, max_iter)
    return weights


def best_json(folder):
    return json.load(open(os.path.join(folder, "model_best.json")))


def best_weights(folder):
    return torch.load(os.path.join(folder, "model_best.pth"), weights_only=True)["model"]["weight"]


# evaluations run after iterations 1, 3, 5 and (after_train) 7
@pytest.mark.parametrize("mode,scores,best_iter", [
    ("max", {1: 0.2, 3: 0.7, 5: 0.4, 7: 0.6}, 3),
    ("max", {1: 0.2, 3: 0.3, 5: 0.4, 7: 0.9}, 7),  # the final evaluation can win
    ("min", {1: 0.9, 3: 0.5, 5: 0.1, 7: 0.3}, 5),
    ("max", {1: NAN, 3: 0.3, 5: NAN, 7: float("inf")}, 3),  # NaN and inf are never best
])
def test_best_over_one_run(tmp_path, mode, scores, best_iter):
    weights = run(tmp_path, scores, mode=mode)
    saved = best_json(tmp_path)
    assert (saved["iteration"], saved["value"], saved["mode"]) == (best_iter, scores[best_iter], mode)
    assert saved["metric"] == "val/score"
    assert torch.equal(best_weights(tmp_path), weights[best_iter])
    # model_best never becomes the resume point
    assert open(tmp_path / "last_checkpoint").read() == "model_final.pth"


def test_no_finite_value_writes_no_best(tmp_path):
    run(tmp_path, {1: NAN, 3: NAN, 5: NAN, 7: NAN})
    assert not os.path.exists(tmp_path / "model_best.json")
    assert not os.path.exists(tmp_path / "model_best.pth")


def test_resume_in_the_middle_keeps_a_better_best(tmp_path):
    scores = {1: 0.5, 3: 0.9, 5: 0.7, 7: 0.8}
    with pytest.raises(Crash):
        run(tmp_path, scores, crash_after=4)  # checkpoint at 3 holds best 0.9 @ 3
    assert best_json(tmp_path)["iteration"] == 3
    best_before = best_weights(tmp_path).clone()
    run(tmp_path, scores, resume=True)  # 0.7 and 0.8 come after the resume: both worse
    assert (best_json(tmp_path)["iteration"], best_json(tmp_path)["value"]) == (3, 0.9)
    assert torch.equal(best_weights(tmp_path), best_before)


def test_the_best_lives_in_the_checkpointed_trainer_state(tmp_path):
    scores = {1: 0.5, 3: 0.9, 5: 0.7, 7: 0.8}
    with pytest.raises(Crash):
        run(tmp_path, scores, crash_after=4)
    state = torch.load(tmp_path / "model_0000003.pth", weights_only=True)["trainer"]["hooks"]["BestCheckpointer"]
    assert (state["best_value"], state["best_iter"], state["metric"]) == (0.9, 3, "val/score")
    os.remove(tmp_path / "model_best.pth")  # e.g. moved away: the state alone must suffice
    run(tmp_path, scores, resume=True)
    assert (best_json(tmp_path)["iteration"], best_json(tmp_path)["value"]) == (3, 0.9)


def test_resume_after_a_better_value_updates_the_best(tmp_path):
    scores = {1: 0.5, 3: 0.6, 5: 0.7, 7: 0.95}
    with pytest.raises(Crash):
        run(tmp_path, scores, crash_after=4)
    weights = run(tmp_path, scores, resume=True)
    assert (best_json(tmp_path)["iteration"], best_json(tmp_path)["value"]) == (7, 0.95)
    assert torch.equal(best_weights(tmp_path), weights[7])


def test_a_best_saved_just_before_a_kill_survives_the_resume(tmp_path):
    # killed after model_best@5 was written but before checkpoint 5: the resume starts from
    # checkpoint 3, whose state knows only 0.6; a re-run evaluation scoring lower (as on a
    # non-deterministic GPU) must not replace the 0.9 on disk
    with pytest.raises(Crash):
        run(tmp_path, {1: 0.5, 3: 0.6, 5: 0.9, 7: 0.1}, crash_before_checkpoint=5)
    assert best_json(tmp_path)["iteration"] == 5
    run(tmp_path, {1: 0.5, 3: 0.6, 5: 0.8, 7: 0.85}, resume=True)
    assert (best_json(tmp_path)["iteration"], best_json(tmp_path)["value"]) == (5, 0.9)


def test_a_kill_between_model_best_and_its_summary_is_repaired_on_resume(tmp_path, monkeypatch):
    # the final evaluation wins and model_best.pth is written, then the process dies before
    # model_best.json: the resume (from model_final, whose state predates that best) re-runs
    # the final evaluation, which only ties, so the summary must be repaired on resume
    scores = {1: 0.5, 3: 0.6, 5: 0.4, 7: 0.9}
    real_write = hooks_module.atomic_write

    def dies_before_the_summary(path, *args, **kwargs):
        if path.endswith("model_best.json") and torch.load(
                tmp_path / "model_best.pth", weights_only=True)["best"]["iteration"] == 7:
            raise Crash()
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(hooks_module, "atomic_write", dies_before_the_summary)
    with pytest.raises(Crash):
        run(tmp_path, scores)
    monkeypatch.setattr(hooks_module, "atomic_write", real_write)
    assert best_json(tmp_path)["iteration"] == 3  # stale, as the kill left it
    run(tmp_path, scores, resume=True)
    assert (best_json(tmp_path)["iteration"], best_json(tmp_path)["value"]) == (7, 0.9)
    state = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert torch.equal(best_weights(tmp_path), state["model"]["weight"])


def test_another_runs_best_is_not_taken_for_this_runs(tmp_path):
    run(tmp_path, {1: 0.99, 3: 0.1, 5: 0.1, 7: 0.1})  # an earlier run in the same folder
    assert best_json(tmp_path)["value"] == 0.99
    # a new run (no --resume) checkpoints every iteration, evaluates every 4; killed at 1
    scores = {3: 0.3, 7: 0.2}
    with pytest.raises(Crash):
        run(tmp_path, scores, period=4, checkpoint_period=1, crash_after=1)
    run(tmp_path, scores, period=4, checkpoint_period=1, resume=True)
    assert (best_json(tmp_path)["iteration"], best_json(tmp_path)["value"]) == (3, 0.3)


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    model = ToyModel()
    checkpointer = AtomicCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000001", iteration=1)
    before = (tmp_path / "model_0000001.pth").read_bytes()
    real_save = torch.save

    def save_half_then_die(data, f):
        real_save(data, f)
        f.truncate(10)
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of the write

    monkeypatch.setattr(torch, "save", save_half_then_die)
    model.weight.data.fill_(5.0)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save("model_0000001", iteration=2)
    assert (tmp_path / "model_0000001.pth").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]  # no temporary left
    assert torch.load(tmp_path / "model_0000001.pth", weights_only=True)["iteration"] == 1


def test_keep_last_counts_checkpoints_on_disk_and_spares_the_resume_point(tmp_path):
    for name in ["model_0000001.pth", "model_0000003.pth", "model_0000005.pth", "model_0000007.pth",
                 "model_final.pth", "model_best.pth", "other_0000001.pth"]:
        (tmp_path / name).write_bytes(b"x")
    checkpointer = AtomicCheckpointer(ToyModel(), str(tmp_path))
    checkpointer.tag_last_checkpoint("model_0000003.pth")
    removed = checkpointer.prune_periodic(keep_last=2)
    assert sorted(removed) == ["model_0000001.pth"]
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000003.pth", "model_0000005.pth",
                                            "model_0000007.pth", "model_best.pth", "model_final.pth",
                                            "other_0000001.pth"]
    assert checkpointer.prune_periodic(keep_last=0) == []


def test_periodic_checkpointer_keeps_the_last_n_across_a_resume(tmp_path):
    with pytest.raises(Crash):
        run(tmp_path, {i: 0.1 for i in range(8)}, period=1, crash_after=4)
    assert sorted(f for f in os.listdir(tmp_path) if f.startswith("model_0")) == [
        f"model_000000{i}.pth" for i in range(5)]  # keep_last=0: all kept

    model = ToyModel()
    trainer = SimpleTrainer(model, itertools.repeat([torch.ones(3)]), torch.optim.SGD(model.parameters(), lr=0.01))
    checkpointer = AtomicCheckpointer(model, str(tmp_path), trainer=trainer)
    trainer.register_hooks([PeriodicCheckpointer(checkpointer, 1, keep_last=2)])
    checkpointer.resume_or_load("", resume=True)
    trainer.train(trainer.iter + 1, 7)
    assert sorted(f for f in os.listdir(tmp_path) if f.startswith("model_")) == [
        "model_0000005.pth", "model_0000006.pth", "model_best.json", "model_best.pth", "model_final.pth"]


def test_sigterm_saves_the_current_iteration_and_exits(tmp_path):
    model = ToyModel()
    trainer = SimpleTrainer(model, itertools.repeat([torch.ones(3)]), torch.optim.SGD(model.parameters(), lr=0.01))
    checkpointer = AtomicCheckpointer(model, str(tmp_path), trainer=trainer)
    previous = signal.getsignal(signal.SIGTERM)

    def send_sigterm(t):
        if t.iter == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    trainer.register_hooks([
        hooks.CallbackHook(after_step=send_sigterm),
        PeriodicCheckpointer(checkpointer, 4),
        InterruptCheckpointer(checkpointer),
    ])
    with pytest.raises(SystemExit) as stopped:
        trainer.train(0, 10)
    assert stopped.value.code == 128 + signal.SIGTERM
    assert open(tmp_path / "last_checkpoint").read() == "model_0000002.pth"
    saved = torch.load(tmp_path / "model_0000002.pth", weights_only=True)
    assert saved["iteration"] == 2 and saved["trainer"]["iteration"] == 2
    assert torch.equal(saved["model"]["weight"], model.weight.detach())  # nothing ran after it
    assert signal.getsignal(signal.SIGTERM) == previous  # handler put back
