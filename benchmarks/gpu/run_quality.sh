#!/usr/bin/env bash
# The quality benchmark's arms on one offline GPU, several processes at once:
#   bash benchmarks/gpu/run_quality.sh [SEEDS] [PROCESSES_PER_SEED]
# Runs benchmarks/bench_quality.py --device cuda at its CPU budget (800 iterations, batch 2,
# 256 px, random weights) for the torchvision baseline, seed_style with Detectron2's details,
# every arm of the factor walk and the MobileNetV2 arm, for each seed (default "0,1"),
# PROCESSES_PER_SEED processes per seed
# (default 3) sharing the GPU; results merge into output/gpu_quality/quality_walk.json, each
# arm's busi_test detections into output/gpu_quality/quality_predictions/. The mnv2 arm times
# its own step and R50's (ustumor's config) at its start and trains for R50's budget at that
# rate; it follows all_boxes in the same process, so that both see the same sharing of the GPU.
# Needs .whl/ and .gpu_data/ from benchmarks/gpu/prepare_carry.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
SEEDS=${1:-0,1}
PER_SEED=${2:-3}
OUT=output/gpu_quality
source benchmarks/gpu/setup_env.sh
mkdir -p "$OUT"
# arms dealt round-robin to the processes of a seed; all_boxes and mnv2 stay together, in order
ARMS=(all_boxes,mnv2 torchvision detectron2_details seed_style flip_intensity scale_jitter optimizer anchors rois proposals normalisation)
start=$(date +%s)
pids=()
for seed in ${SEEDS//,/ }; do
  for ((p = 0; p < PER_SEED; p++)); do
    mine=()
    for ((i = p; i < ${#ARMS[@]}; i += PER_SEED)); do mine+=("${ARMS[i]}"); done
    arms=$(IFS=,; echo "${mine[*]}")
    python3 benchmarks/bench_quality.py --device cuda --arms "$arms" --seeds "$seed" --workers 2 --threads 2 \
      --output "$OUT/quality_walk.json" > "$OUT/seed${seed}_p${p}.log" 2>&1 &
    pids+=($!)
  done
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
echo "wall time: $(( $(date +%s) - start )) s for seeds $SEEDS, $PER_SEED processes per seed; status $status"
python3 benchmarks/bench_quality.py --device cuda --table --output "$OUT/quality_walk.json"
grep -h "Error\|error" "$OUT"/seed*_p*.log | head -20 || true
exit $status
