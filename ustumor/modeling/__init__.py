from .crop_aware_rcnn import CropAwareRCNN  # noqa: F401  registers the meta-architecture
from .mobilenet_v2_fpn import build_mobilenet_v2_fpn_backbone  # noqa: F401  registers the backbones
