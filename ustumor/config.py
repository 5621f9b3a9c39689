"""ustumor's additions to Detectron2's config (PointRend-style ``add_*_config``)."""
from detectron2.config import CfgNode as CN


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
    # Training-time intensity jitter: multiplicative ranges; [1.0, 1.0] disables it.
    cfg.INPUT.BRIGHTNESS_RANGE = [0.8, 1.2]
    cfg.INPUT.CONTRAST_RANGE = [0.8, 1.2]

    # ---- datasets ----
    # What to do with a corrupt image, a missing or mismatched mask, a bad row:
    # "error" stops with a message naming the file; "skip" drops it with a counted warning.
    cfg.DATASETS.ON_BAD_ITEM = "error"
    cfg.DATASETS.BUSI = CN()
    # "lesion": one class; "benign_malignant": two classes from BUSI's folders.
    cfg.DATASETS.BUSI.CLASS_MODE = "lesion"
    # Connected mask components smaller than this many pixels are annotation specks.
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
