# Sourced by the GPU scripts: installs the carried wheels (.whl/, from prepare_carry.sh) into
# /tmp/site, points Python and ustumor at them and at .gpu_data, sets GPUS, and builds the BUSI
# split once (before several processes would each compute it). Expects the repo root as cwd.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD USTUMOR_DATASETS=$PWD/.gpu_data USTUMOR_CACHE=/tmp/ustumor_cache
GPUS=$(python3 -c "import torch; print(torch.cuda.device_count())")
python3 -c "import torch; print('torch', torch.__version__, [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])"
if [ "$GPUS" -lt 1 ]; then echo "no GPU visible"; exit 1; fi
python3 - <<'PY'
from detectron2.data import DatasetCatalog
from ustumor.engine.defaults import build_config
build_config("configs/busi/faster_rcnn_R_50_FPN_scratch_4500it.yaml")  # the BUSI configs' split settings
DatasetCatalog.get("busi_train")
PY
