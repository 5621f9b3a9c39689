#!/usr/bin/env bash
# BUSI on every GPU of one machine, with AMP, on a machine with no network: one process per GPU,
# PyTorch DDP over NCCL; on one GPU it is a single process (about 4 minutes on an H200).
#   bash benchmarks/gpu/run_busi.sh [ITERATIONS_ON_ONE_GPU]
# Needs, beside the repo (made by benchmarks/gpu/prepare_carry.sh): .whl/ (pure-Python
# Detectron2 + dependencies) and .gpu_data/BUSI. Installs only from .whl, into /tmp/site.
# No pretrained weights can be fetched offline, so it trains from random weights with BN.
# 8 images per GPU, scaled by Detectron2's SOLVER.REFERENCE_WORLD_SIZE 1: with N GPUs the batch
# is 8N, the learning rate N times larger and the schedule N times shorter, so every run sees
# the same images. BN statistics are per GPU (8 images, as on one GPU).
# Prints the number of GPUs, s/iter, the wall time and the busi_test metrics.
# The several-GPU path has not yet run on a GPU machine (written and checked by reading).
set -euo pipefail
cd "$(dirname "$0")/../.."
ITERS=${1:-1500}
RUN_DIR=${RUN_DIR:-output/gpu_busi}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD USTUMOR_DATASETS=$PWD/.gpu_data USTUMOR_CACHE=/tmp/ustumor_cache
GPUS=$(python3 -c "import torch; print(torch.cuda.device_count())")
python3 -c "import torch; print('torch', torch.__version__, [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])"
if [ "$GPUS" -lt 1 ]; then echo "no GPU visible"; exit 1; fi
mkdir -p "$(dirname "$RUN_DIR")"
start=$(date +%s)
# Build the split once, before N processes would each compute it.
python3 - <<'PY'
from detectron2.data import DatasetCatalog
from ustumor.engine.defaults import build_config
build_config("configs/busi/faster_rcnn_R_50_FPN_4500it.yaml")
DatasetCatalog.get("busi_train")
PY
python3 tools/train_net.py --config-file configs/busi/faster_rcnn_R_50_FPN_4500it.yaml \
  --num-gpus "$GPUS" --dist-url auto \
  OUTPUT_DIR "$RUN_DIR" MODEL.DEVICE cuda MODEL.WEIGHTS "" \
  MODEL.RESNETS.NORM BN MODEL.BACKBONE.FREEZE_AT 0 SOLVER.AMP.ENABLED True \
  SOLVER.IMS_PER_BATCH 8 SOLVER.REFERENCE_WORLD_SIZE 1 \
  SOLVER.MAX_ITER "$ITERS" SOLVER.STEPS "($((ITERS * 7 / 10)), $((ITERS * 9 / 10)))" \
  SOLVER.CHECKPOINT_PERIOD "$ITERS" TEST.EVAL_PERIOD 0 DATALOADER.NUM_WORKERS 8 \
  DATASETS.TEST '("busi_test",)' 2>&1 | tee "$RUN_DIR.log" | grep -E "eta:|Overall training speed|Total training time|AP|copypaste|Error|error" || true
end=$(date +%s)
echo "GPUs: $GPUS; wall time: $((end - start)) s for $ITERS iterations on one GPU's schedule ($((ITERS / GPUS)) on $GPUS)"
grep -E "Overall training speed" "$RUN_DIR.log" | sed -E 's/.*Overall training speed: ([0-9]+) iterations in ([0-9:]+) \(([0-9.]+) s \/ it\).*/train speed: \3 s\/it (batch 8 per GPU)/'
python3 - "$RUN_DIR" <<'PY'
import json, sys
results = json.load(open(f"{sys.argv[1]}/inference/busi_test/results.json"))
print("busi_test:", json.dumps(results, indent=1)[:3000])
PY
