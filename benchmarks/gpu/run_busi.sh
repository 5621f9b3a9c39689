#!/usr/bin/env bash
# BUSI on one GPU with AMP, on a machine with no network (about 4 minutes on an H200).
#   bash benchmarks/gpu/run_busi.sh [ITERATIONS]
# Needs, beside the repo (made by benchmarks/gpu/prepare_carry.sh): .whl/ (pure-Python
# Detectron2 + dependencies) and .gpu_data/BUSI. Installs only from .whl, into /tmp/site.
# No pretrained weights can be fetched offline, so it trains from random weights with BN.
# Prints it/s, the wall time, and the final busi_test metrics.
set -euo pipefail
cd "$(dirname "$0")/../.."
ITERS=${1:-1500}
RUN_DIR=${RUN_DIR:-output/gpu_busi}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD USTUMOR_DATASETS=$PWD/.gpu_data USTUMOR_CACHE=/tmp/ustumor_cache
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
mkdir -p "$(dirname "$RUN_DIR")"
start=$(date +%s)
python3 tools/train_net.py --config-file configs/busi/faster_rcnn_R_50_FPN_4500it.yaml \
  OUTPUT_DIR "$RUN_DIR" MODEL.DEVICE cuda MODEL.WEIGHTS "" \
  MODEL.RESNETS.NORM BN MODEL.BACKBONE.FREEZE_AT 0 SOLVER.AMP.ENABLED True \
  SOLVER.MAX_ITER "$ITERS" SOLVER.STEPS "($((ITERS * 7 / 10)), $((ITERS * 9 / 10)))" \
  SOLVER.CHECKPOINT_PERIOD "$ITERS" TEST.EVAL_PERIOD 0 DATALOADER.NUM_WORKERS 8 \
  DATASETS.TEST '("busi_test",)' 2>&1 | tee "$RUN_DIR.log" | grep -E "eta:|Overall training speed|Total training time|AP|copypaste" || true
end=$(date +%s)
echo "wall time: $((end - start)) s for $ITERS iterations"
grep -E "Overall training speed" "$RUN_DIR.log" | sed -E 's/.*Overall training speed: ([0-9]+) iterations in ([0-9:]+) \(([0-9.]+) s \/ it\).*/train speed: \3 s\/it/'
python3 - "$RUN_DIR" <<'PY'
import json, sys
results = json.load(open(f"{sys.argv[1]}/inference/busi_test/results.json"))
print("busi_test:", json.dumps(results, indent=1)[:3000])
PY
