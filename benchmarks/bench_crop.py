#!/usr/bin/env python
"""Scan-window crop on phantom screenshots with dark frames: recovery, lesion cuts, speed.

    .venv/bin/python benchmarks/bench_crop.py [--frames 1000] [--dark-fraction 0.25] [--seed 0]
        [--before bc77488] [--output benchmarks/results/crop.json]

Frames: ``ustumor.synthetic.render_screenshots`` (600x800 scanner screenshots,
scans of many sizes; every fourth one dark at the default fraction: low gain, dark
tissue or a shadow reaching the scan's border), converted to grey once, in memory.

For each crop: the recovery rate (IoU with the generator's scan box >= 0.95) overall,
on dark and on normal frames; the minimum IoU; lesion boxes cut (a lesion's box not
fully inside the crop; counted per lesion); full-frame fallbacks; frames/s on one core
(``cv2.setNumThreads(1)``, one torch thread; median of interleaved passes over all
frames), both per wall-clock second and per second of this process's CPU time (the
second is the fairer figure on a shared, busy machine; the load average is recorded).
Crops:

- ``after``: ``ustumor.data.preprocessing.scan_window`` as it is in the working tree;
- ``before``: the same module at git revision ``--before`` (default: the last commit
  before the dark-frame change), loaded from ``git show`` into a temporary module;
- ``largest_component``: a reference, the bounding box of the largest 8-connected
  component above the background level (no GUI handling at all).
"""
import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np
import torch

from common import REPO_ROOT, machine_facts, print_table, summarize, write_json

from ustumor.data.preprocessing import scan_window  # noqa: E402
from ustumor.synthetic import render_screenshots  # noqa: E402

# The crop as it was before dark frames were handled (issue 9, item 6).
BEFORE_REVISION = "bc77488c4a76b772c82bc1147afd5e76109c0a18"
RECOVERED_IOU = 0.95
BACKGROUND_LEVEL = 4  # the crop's default


def load_crop_at(revision):
    """``crop_ultrasound_window_or_full`` of the scan-window module at a git revision (it was
    ustumor/data/ultrasound.py before the data package was laid out by job)."""
    for path in ("ustumor/data/preprocessing/scan_window.py", "ustumor/data/ultrasound.py"):
        shown = subprocess.run(["git", "-C", REPO_ROOT, "show", f"{revision}:{path}"], capture_output=True, text=True)
        if shown.returncode == 0:
            break
    else:
        raise RuntimeError(f"no scan-window module at revision {revision}")
    source = shown.stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ultrasound_before.py")
        with open(path, "w") as f:
            f.write(source)
        spec = importlib.util.spec_from_file_location("ultrasound_before", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module.crop_ultrasound_window_or_full


def largest_component_crop(grey):
    """Reference: box of the largest connected component above the background level."""
    _, signal = cv2.threshold(grey, BACKGROUND_LEVEL, 255, cv2.THRESH_BINARY)
    count, _, stats, _ = cv2.connectedComponentsWithStats(signal, connectivity=8)
    if count <= 1:
        return (0, 0, grey.shape[1], grey.shape[0]), False
    x, y, w, h = stats[1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA])), :4]
    return (int(x), int(y), int(x + w), int(y + h)), True


def iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / float(union)


def inside(lesion, box):
    return lesion[0] >= box[0] and lesion[1] >= box[1] and lesion[2] <= box[2] and lesion[3] <= box[3]


def score(crop, frames):
    ious, cut, fallbacks, failures = [], 0, 0, []
    for index, frame in enumerate(frames):
        box, ok = crop(frame["grey"])
        value = iou(box, frame["scan_box"])
        lesions_cut = sum(not inside(lesion, box) for lesion in frame["lesion_boxes"])
        ious.append(value)
        cut += lesions_cut
        fallbacks += not ok
        if value < RECOVERED_IOU or lesions_cut:
            failures.append({"frame": index, "dark": frame["dark"], "true_box": list(frame["scan_box"]),
                             "crop_box": [int(v) for v in box], "iou": round(value, 4),
                             "lesions_cut": lesions_cut})
    ious = np.array(ious)
    dark = np.array([frame["dark"] for frame in frames])
    recovered = ious >= RECOVERED_IOU
    return {
        "recovery_overall": float(recovered.mean()),
        "recovery_dark": float(recovered[dark].mean()) if dark.any() else None,
        "recovery_normal": float(recovered[~dark].mean()) if (~dark).any() else None,
        "min_iou": float(ious.min()),
        "lesion_boxes_cut": int(cut),
        "fallbacks": int(fallbacks),
        "failures": failures,
    }


def time_crops(crops, greys, repeats):
    """Wall and CPU seconds per pass over all frames, passes interleaved (A, B, C, A, ...)."""
    for crop in crops.values():  # warm-up
        for grey in greys[:50]:
            crop(grey)
    wall = {name: [] for name in crops}
    cpu = {name: [] for name in crops}
    for _ in range(repeats):
        for name, crop in crops.items():
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            for grey in greys:
                crop(grey)
            wall[name].append(time.perf_counter() - start_wall)
            cpu[name].append(time.process_time() - start_cpu)
    return wall, cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--dark-fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--before", default=BEFORE_REVISION, help="git revision of the 'before' crop")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes over all frames, per crop")
    parser.add_argument("--output", default=os.path.join(REPO_ROOT, "benchmarks", "results", "crop.json"))
    args = parser.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)

    frames = []
    for shot in render_screenshots(args.seed, args.frames, args.dark_fraction):
        frames.append({"grey": cv2.cvtColor(shot.image, cv2.COLOR_RGB2GRAY), "scan_box": shot.scan_box,
                       "lesion_boxes": shot.lesion_boxes, "dark": shot.dark})
    num_dark = sum(frame["dark"] for frame in frames)
    num_lesions = sum(len(frame["lesion_boxes"]) for frame in frames)
    print(f"{len(frames)} frames ({num_dark} dark), {num_lesions} lesion boxes, seed {args.seed}")

    crops = {"before": load_crop_at(args.before), "after": scan_window.crop_ultrasound_window_or_full,
             "largest_component": largest_component_crop}
    results = {name: score(crop, frames) for name, crop in crops.items()}
    greys = [frame["grey"] for frame in frames]
    load_before = os.getloadavg()
    wall, cpu = time_crops(crops, greys, args.repeats)
    load_after = os.getloadavg()
    for name in crops:
        results[name]["frames_per_s_per_core"] = len(greys) / statistics.median(wall[name])
        results[name]["frames_per_cpu_s"] = len(greys) / statistics.median(cpu[name])
        results[name]["pass_wall_seconds"] = summarize(wall[name])
        results[name]["pass_cpu_seconds"] = summarize(cpu[name])

    rows = []
    for name, r in results.items():
        rows.append([name, f"{100 * r['recovery_overall']:.1f}%", f"{100 * r['recovery_dark']:.1f}%",
                     f"{100 * r['recovery_normal']:.1f}%", f"{r['min_iou']:.3f}", r["lesion_boxes_cut"],
                     r["fallbacks"], f"{r['frames_per_s_per_core']:.0f}", f"{r['frames_per_cpu_s']:.0f}"])
    print_table(["crop", "recovered", "dark", "normal", "min IoU", "lesions cut", "fallbacks",
                 "frames/s (wall, 1 core)", "frames/CPU-s"], rows)

    machine = machine_facts()
    machine.update({
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "opencv_threads": cv2.getNumThreads(),
        "load_average_1_5_15_min": {"before_timing": load_before, "after_timing": load_after},
    })
    print(f"opencv {machine['opencv']} ({machine['opencv_threads']} threads), load average {load_before[0]:.1f} "
          f"before timing, {load_after[0]:.1f} after")
    write_json(args.output, {
        "machine": machine,
        "frames": len(frames), "dark_frames": num_dark, "lesion_boxes": num_lesions,
        "dark_fraction": args.dark_fraction, "seed": args.seed, "recovered_iou": RECOVERED_IOU,
        "before_revision": args.before,
        "crops": results,
    })


if __name__ == "__main__":
    sys.exit(main())
