"""The per-run HTML report: every section, every image, and a real render in headless Chromium."""
import base64
import json
import os
import re
import shutil
import subprocess

import cv2
import numpy as np
import pytest

from conftest import REPO_ROOT
from test_plots import record, write_metrics
from ustumor.engine.defaults import build_config
from ustumor.evaluation.suite import evaluate_suite
from ustumor.interpretation.gradcam import DetectionCAM
from ustumor.interpretation.overlay import render_cam
from ustumor.visualization.drawing import write_rgb
from ustumor.visualization.outcome_images import image_outcome, render_outcome
from ustumor.visualization.report import build_report

CONFIG = os.path.join(REPO_ROOT, "configs", "phantom", "faster_rcnn_R_50_FPN_cpu_300it.yaml")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
LESION = [40, 30, 80, 60]
# what the run folder below holds: 6 training curves, 7 evaluation plots, 4 outcome samples, 2 Grad-CAMs
EXPECTED_IMAGES = 6 + 7 + 4 + 2


def scan(seed):
    rng = np.random.default_rng(seed)
    grey = rng.integers(90, 160, (96, 128), dtype=np.uint8)
    grey[30:60, 40:80] = 40  # a dark "lesion"
    return grey


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder as train_net.py, visualize_predictions.py and gradcam.py leave it."""
    out = str(tmp_path_factory.mktemp("run") / "phantom_run")
    os.makedirs(os.path.join(out, "splits"))
    with open(os.path.join(out, "config.yaml"), "w") as f:
        f.write(build_config(CONFIG, ["OUTPUT_DIR", out]).dump())
    assignment = {f"benign/benign ({i}).png": s for i, s in enumerate(["train"] * 7 + ["val"] * 1 + ["test"] * 2)}
    assignment.update({f"normal/normal ({i}).png": s for i, s in enumerate(["train"] * 3 + ["test"])})
    with open(os.path.join(out, "splits", "phantom.json"), "w") as f:
        json.dump({"dataset": "phantom", "seed": 0, "ratios": [0.7, 0.1, 0.2], "method": "near-duplicate groups",
                   "assignment": assignment, "group": {k: i for i, k in enumerate(assignment)},
                   "near_duplicate_pairs": [["benign/benign (0).png", "benign/benign (1).png"]]}, f)
    lines = [{"iteration": i, "total_loss": 2.0 / (i + 1), "loss_cls": 1.0 / (i + 1), "lr": 0.01}
             for i in range(0, 100, 10)]
    lines += [{"iteration": 49, "penalized_iou/piou": 0.4, "bbox/AP": 30.0, "validation/total_loss": 0.9},
              {"iteration": 99, "penalized_iou/piou": 0.6, "bbox/AP": 41.0, "validation/total_loss": 0.7}]
    write_metrics(out, lines, best={"metric": "penalized_iou/piou", "mode": "max", "value": 0.6, "iteration": 99})

    records = [record("a", [LESION], [(LESION, 0.9)]), record("b", [LESION], [([0, 0, 20, 20], 0.8)]),
               record("c", [], [([5, 5, 25, 25], 0.7)]), record("d", [], [])]
    results = evaluate_suite(records, num_bootstrap=50)
    os.makedirs(os.path.join(out, "inference", "phantom_test"))
    with open(os.path.join(out, "inference", "phantom_test", "results.json"), "w") as f:
        json.dump(results, f)

    folder = os.path.join(out, "visualization", "phantom_test")
    entries = []
    cases = [([LESION], [LESION], [0.9]), ([LESION], [[0, 0, 20, 20]], [0.8]), ([], [[5, 5, 25, 25]], [0.7]),
             ([LESION], [[42, 30, 80, 62]], [0.95])]  # TP, FN, FP, TP
    for index, (gt, boxes, scores) in enumerate(cases):
        outcome = image_outcome(f"scan{index}.png", f"scan{index}", boxes, scores, gt)
        file = outcome.file_stem + ".png"
        write_rgb(os.path.join(folder, file), render_outcome(scan(index), outcome))
        entries.append({"image": outcome.file_name, "outcome": outcome.outcome, "iou": outcome.iou,
                        "score": outcome.score, "file": file})
    entries.append({"image": "scan9.png", "outcome": "tn", "iou": 0.0, "score": 0.0, "file": None})
    with open(os.path.join(folder, "outcomes.json"), "w") as f:
        json.dump({"settings": {"score_thresh": 0.45, "iou_thresh": 0.25, "top_k": 1},
                   "counts": {"TP": 2, "FP": 1, "FN": 1, "TN": 1}, "images": entries}, f)

    folder = os.path.join(out, "gradcam", "phantom_test")
    heat = np.zeros((96, 128), np.float32)
    heat[35:55, 45:75] = 1.0
    entries = []
    for index in range(2):
        cam = DetectionCAM(index=0, box=np.array(LESION, float), score=0.9, label=0, layer="res5", method="hirescam",
                           heatmap=heat)
        file = f"scan{index}_det0_res5_hirescam.png"
        write_rgb(os.path.join(folder, file), render_cam(scan(index), cam, [LESION]))
        entries.append({"image": f"scan{index}.png", "file": file, "detection": 0, "heat_ratio": 7.8})
    with open(os.path.join(folder, "gradcam.json"), "w") as f:
        json.dump({"layer": "res5", "method": "hirescam", "images": entries}, f)
    return out


def image_sources(page):
    with open(page, encoding="utf-8") as f:
        return re.findall(r'<img src="([^"]+)"', f.read())


def test_report_has_every_section_and_embeds_every_image(run_dir):
    page, missing = build_report(run_dir)
    assert missing == [] and page == os.path.join(run_dir, "report.html")
    with open(page, encoding="utf-8") as f:
        html = f.read()
    for heading in ("Configuration", "Data splits", "Training curves", "Evaluation on phantom_test",
                    "Prediction samples", "Grad-CAM samples"):
        assert f">{heading}</h2>" in html
    assert "CropAwareRCNN" in html and "TEST.PENALIZED_IOU.SCORE_THRESH" in html
    assert "<td>benign</td>" not in html and "<th>benign</th>" in html and "<th>normal</th>" in html
    results = json.load(open(os.path.join(run_dir, "inference", "phantom_test", "results.json")))
    interval = results["confidence_intervals"]["penalized_iou/piou"]
    assert f"[{interval['low']:.3f}, {interval['high']:.3f}]" in html
    assert "iteration 99" in html  # the best checkpoint
    sources = image_sources(page)
    assert len(sources) == EXPECTED_IMAGES
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        picture = cv2.imdecode(np.frombuffer(base64.b64decode(source.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
        assert picture is not None and picture.std() > 5


def test_one_page_holds_both_stages_each_under_its_own_heading(run_dir, tmp_path):
    stage2 = str(tmp_path / "hospital_run")
    shutil.copytree(run_dir, stage2, ignore=shutil.ignore_patterns("report*"))
    os.rename(os.path.join(stage2, "inference", "phantom_test"), os.path.join(stage2, "inference", "ucla_test"))
    page, missing = build_report([run_dir, stage2], page_path=str(tmp_path / "both.html"))
    assert missing == []
    html = open(page, encoding="utf-8").read()
    stage1_at, stage2_at = html.index(">Run: phantom_run</h2>"), html.index(">Run: hospital_run</h2>")
    assert stage1_at < html.index(">Evaluation on phantom_test</h3>") < stage2_at < html.index(
        ">Evaluation on ucla_test</h3>")
    assert html.count(">Training curves</h3>") == 2
    assert len(image_sources(page)) == 2 * EXPECTED_IMAGES
    with pytest.raises(ValueError, match="page_path"):
        build_report([run_dir, stage2])


def test_missing_parts_are_named_with_the_command_that_makes_them(tmp_path):
    write_metrics(str(tmp_path), [{"iteration": 0, "total_loss": 1.0}])
    page, missing = build_report(str(tmp_path))
    assert set(missing) == {"config.yaml", "splits/*.json", "inference/<dataset>/results.json",
                            "visualization/<dataset>/outcomes.json", "gradcam/<dataset>/gradcam.json"}
    html = open(page, encoding="utf-8").read()
    assert "tools/visualize_predictions.py" in html and "tools/gradcam.py" in html and "--eval-only" in html


def render(page, tmp_path):
    """Chromium's DOM after load, and a screenshot of the page."""
    screenshot = str(tmp_path / "page.png")
    url = "file://" + os.path.abspath(page)
    common = [CHROMIUM, *CHROMIUM_FLAGS, "--virtual-time-budget=10000", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    shot = subprocess.run([*common, f"--screenshot={screenshot}", "--window-size=1280,2400", url],
                          capture_output=True, text=True, timeout=120)
    assert shot.returncode == 0 and os.path.isfile(screenshot), shot.stderr[-2000:]
    counts = re.search(r'data-images-total="(\d+)" data-images-loaded="(\d+)"', dom.stdout)
    assert counts, "the page's load check did not run: " + dom.stdout[:500]
    return int(counts.group(1)), int(counts.group(2)), screenshot


needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it: apt-get install chromium)")


@needs_chromium
def test_report_renders_in_headless_chromium_with_every_image(run_dir, tmp_path):
    page, _ = build_report(run_dir)
    total, loaded, screenshot = render(page, tmp_path)
    assert total == loaded == EXPECTED_IMAGES
    picture = cv2.imread(screenshot)
    assert picture is not None and picture.std() > 10  # text and figures, not a blank page


@needs_chromium
def test_a_linked_report_that_lost_an_image_says_so(run_dir, tmp_path):
    """With --link, the page refers to the PNGs; remove one and the render must count it missing."""
    page = str(tmp_path / "linked.html")
    build_report(run_dir, page_path=page, embed=False)
    sources = image_sources(page)
    assert len(sources) == EXPECTED_IMAGES and not any(s.startswith("data:") for s in sources)
    total, loaded, _ = render(page, tmp_path)
    assert total == loaded == EXPECTED_IMAGES
    os.remove(os.path.join(os.path.dirname(page), sources[-1]))
    total, loaded, _ = render(page, tmp_path)
    assert (total, loaded) == (EXPECTED_IMAGES, EXPECTED_IMAGES - 1)
