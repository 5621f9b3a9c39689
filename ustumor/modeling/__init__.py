from .crop_aware_rcnn import CropAwareRCNN  # noqa: F401  registers the meta-architecture
