#!/usr/bin/env python
"""Install a pure-Python Detectron2 v0.6 into the current interpreter.

Detectron2 is not on PyPI under its own name. ``pb1-detectron2==0.6`` is a
byte-identical copy of the official v0.6 Python sources and configs, but it
ships without the C++/CUDA sources, so it cannot be installed as is. This
script downloads that sdist, patches it so it builds without extensions and
runs on current numpy/Pillow, and pip-installs it.

Nothing is done when a working Detectron2 is already importable (for example
the official one installed from its git repository, which is the preferred
route wherever GitHub is reachable).

Usage: python tools/install_detectron2.py [--sdist PATH] [--force] [--wheel-dir DIR]

``--wheel-dir`` builds a pure-Python wheel instead of installing, to carry to an
offline machine (any Python 3, any CUDA).
"""
import argparse
import hashlib
import html.parser
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request

SDIST_NAME = "pb1-detectron2"
SDIST_VERSION = "0.6"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
DEFAULT_INDEX = "https://pypi.org/simple"

# Stand-in for the compiled extension. Only rotated-box, deformable-conv ops and
# the fast COCO evaluator use it; Faster R-CNN on axis-aligned boxes never does.
C_STUB = '''"""Placeholder for detectron2's compiled extension (pure-Python install).

Installed by ustumor's tools/install_detectron2.py. Axis-aligned detection
(Faster R-CNN, RetinaNet, Mask R-CNN) does not need compiled ops: torchvision
provides nms and roi_align. Rotated boxes, deformable convolution and the C++
COCO evaluator do, and fail here with a clear message.
"""


def get_compiler_version():
    return "none (pure-Python install without detectron2._C)"


def get_cuda_version():
    return "none (pure-Python install without detectron2._C)"


def has_cuda():
    return False


def __getattr__(name):
    raise NotImplementedError(
        f"detectron2._C.{name} is not available: this Detectron2 was installed without its "
        "compiled extension (ustumor tools/install_detectron2.py). Rotated boxes, deformable "
        "convolution and COCOEvaluator(use_fast_impl=True) need it; install the official "
        "Detectron2 from source (pip install 'git+https://github.com/facebookresearch/detectron2.git') "
        "to use them."
    )
'''

NUMPY_ALIAS_FILES = [
    "detectron2/evaluation/pascal_voc_evaluation.py",
    "detectron2/evaluation/sem_seg_evaluation.py",
    "detectron2/structures/masks.py",
    "detectron2/data/datasets/pascal_voc.py",
    "detectron2/data/build.py",
    "detectron2/utils/visualizer.py",
    "detectron2/utils/video_visualizer.py",
]


def log(msg):
    print(f"[install_detectron2] {msg}", flush=True)


def detectron2_works():
    """True when an importable Detectron2 can build a Faster R-CNN config."""
    if importlib.util.find_spec("detectron2") is None:
        return False
    probe = (
        "import detectron2, detectron2.model_zoo, detectron2.engine, detectron2.evaluation;"
        "from detectron2.model_zoo import get_config_file;"
        "get_config_file('COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml')"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    if result.returncode != 0:
        log("an installed detectron2 failed the probe, reinstalling:\n" + result.stderr[-2000:])
    return result.returncode == 0


class _LinkParser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.links.append(dict(attrs).get("href", ""))


def download_sdist(dest_dir):
    index = os.environ.get("PIP_INDEX_URL", DEFAULT_INDEX).rstrip("/")
    page_url = f"{index}/{SDIST_NAME}/"
    log(f"looking up {SDIST_NAME}=={SDIST_VERSION} at {page_url}")
    with urllib.request.urlopen(page_url, timeout=120) as response:
        parser = _LinkParser()
        parser.feed(response.read().decode("utf-8"))
    wanted = f"{SDIST_NAME}-{SDIST_VERSION}.tar.gz"
    for href in parser.links:
        url = urllib.parse.urljoin(page_url, href)
        if urllib.parse.urlparse(url).path.endswith("/" + wanted):
            path = os.path.join(dest_dir, wanted)
            with urllib.request.urlopen(url.split("#")[0], timeout=300) as response, open(path, "wb") as f:
                shutil.copyfileobj(response, f)
            return path
    raise SystemExit(f"{wanted} not listed at {page_url}")


def verify_sha256(path):
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    if digest != SDIST_SHA256:
        raise SystemExit(f"{path}: sha256 {digest} does not match the expected {SDIST_SHA256}")


def replace_exactly(path, old, new, count=None, regex=False):
    """Edit a file, failing loudly when the expected target is not there."""
    text = open(path, encoding="utf-8").read()
    found = len(re.findall(old, text)) if regex else text.count(old)
    if found == 0 or (count is not None and found != count):
        raise SystemExit(
            f"patch target not found as expected in {path}: {old!r} "
            f"(found {found}, expected {count or '>=1'}). Is this really pb1-detectron2==0.6?"
        )
    text = re.sub(old, new, text) if regex else text.replace(old, new)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return found


def patch_sources(src):
    def p(rel):
        return os.path.join(src, rel)

    # 1. no compiled extension
    replace_exactly(p("setup.py"), "ext_modules=get_extensions(),", "ext_modules=[],", count=1)
    # 2. setup.py collects the zoo configs from a top-level configs/ folder
    zoo_configs = p("detectron2/model_zoo/configs")
    if not os.path.isdir(zoo_configs):
        raise SystemExit(f"{zoo_configs} missing: unexpected sdist layout")
    shutil.move(zoo_configs, p("configs"))
    # 3. importable stand-in for detectron2._C
    if os.path.exists(p("detectron2/_C.py")):
        raise SystemExit("detectron2/_C.py already exists in the sdist: unexpected layout")
    with open(p("detectron2/_C.py"), "w") as f:
        f.write(C_STUB)
    # 4. Pillow >= 10 removed Image.LINEAR
    replace_exactly(p("detectron2/data/transforms/transform.py"), "Image.LINEAR", "Image.BILINEAR")
    # 5. numpy >= 1.24 removed the builtin aliases
    total = 0
    for rel in NUMPY_ALIAS_FILES:
        total += replace_exactly(p(rel), r"\bnp\.(bool|int|float|str)\b(?!_)", r"\1", regex=True)
    log(f"replaced {total} removed numpy aliases in {len(NUMPY_ALIAS_FILES)} files")
    # 6. numpy 2 forbids copy=False when a copy is needed
    replace_exactly(p("detectron2/layers/mask_ops.py"), "np.array(mask, copy=False)", "np.asarray(mask)", count=1)
    # 7. the fast COCO evaluator lives in the compiled extension
    replace_exactly(p("detectron2/evaluation/coco_evaluation.py"), "use_fast_impl=True,", "use_fast_impl=False,", count=2)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sdist", help="a local pb1-detectron2-0.6.tar.gz instead of downloading it")
    parser.add_argument("--force", action="store_true", help="reinstall even if detectron2 works")
    parser.add_argument("--wheel-dir", help="build a wheel into this folder instead of installing")
    args = parser.parse_args()

    if not args.force and not args.wheel_dir and detectron2_works():
        log("a working detectron2 is already installed; nothing to do")
        return
    with tempfile.TemporaryDirectory(prefix="d2_sdist_") as tmp:
        sdist = args.sdist or download_sdist(tmp)
        verify_sha256(sdist)
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        src = os.path.join(tmp, f"{SDIST_NAME}-{SDIST_VERSION}")
        patch_sources(src)
        if args.wheel_dir:
            subprocess.check_call([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps",
                                   "-w", args.wheel_dir, src])
            log(f"wheel written to {args.wheel_dir}")
            return
        log("installing the patched sources with pip")
        subprocess.check_call(
            [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", src]
        )
    if not detectron2_works():
        raise SystemExit("detectron2 was installed but still fails to import; see the error above")
    log("detectron2 installed")


if __name__ == "__main__":
    main()
