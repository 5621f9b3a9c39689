"""Shared pieces of the benchmarks: timing statistics, machine facts, JSON + table output."""
import datetime
import json
import os
import statistics
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from ustumor.utils import cpu  # noqa: E402

_machine_printed = []


def summarize(seconds):
    """Median and range of a list of timings, and the timings in the order they ran (an outlier
    step is then visible in the JSON)."""
    return {"median": statistics.median(seconds), "min": min(seconds), "max": max(seconds), "n": len(seconds),
            "samples": list(seconds)}


def time_interleaved(candidates, repeats, warmup):
    """Time each zero-argument callable ``repeats`` times, alternating between them.

    Alternating A, B, A, B... spreads slow phases of a shared or freshly started
    machine over all candidates, so their ratio stays meaningful.
    """
    for _ in range(warmup):
        for run in candidates.values():
            run()
    samples = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            start = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - start)
    return {name: summarize(values) for name, values in samples.items()}


def machine_facts():
    """The date and the machine (CPU model, the ISA ATen and oneDNN dispatch to, threads, torch)."""
    return {"date": datetime.date.today().isoformat(), **cpu.machine_facts()}


# The quality benchmarks' headline metrics: table label -> key of the suite's confidence_intervals
REPORTED = {"AP50": "bbox_agnostic/AP50", "FROC CPM": "froc/cpm", "sens@1FP": "froc/sensitivity@1",
            "penalised IoU": "penalized_iou/piou"}


def fmt_interval(interval, signed=False):
    """``estimate [low, high]`` of a suite interval; ``signed`` for differences."""
    spec = "+.3f" if signed else ".3f"
    return f"{interval['estimate']:{spec}} [{interval['low']:{spec}}, {interval['high']:{spec}}]"


def budget_size_overrides(size):
    """ustumor's input sizes at a CPU budget's short side: training jitter 0.85-1.15x, 5:3 at most."""
    return ["INPUT.MIN_SIZE_TRAIN", f"({int(size * 0.85)}, {size}, {int(size * 1.15)})",
            "INPUT.MAX_SIZE_TRAIN", str(int(size * 1.15 * 5 / 3)),
            "INPUT.MIN_SIZE_TEST", str(size), "INPUT.MAX_SIZE_TEST", str(int(size * 5 / 3))]


def write_json(path, payload):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)
    print(f"wrote {path}")


def print_table(header, rows):
    """A text table; the first table a benchmark prints is headed by the machine it ran on."""
    if not _machine_printed:
        print("machine: " + cpu.describe_machine())
        _machine_printed.append(True)
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    for line in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)))


def fmt(stats):
    return f"{stats['median']:.3f} ({stats['min']:.3f}-{stats['max']:.3f})"
