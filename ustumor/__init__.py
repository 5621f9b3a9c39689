"""ustumor: breast-tumour detection in ultrasound images on Detectron2.

Importing the package registers its components (datasets, meta-architecture, backbones)
with Detectron2, as Detectron2's own projects do.
"""
from .config import add_ustumor_config
from . import modeling  # noqa: F401  registers CropAwareRCNN and the MobileNetV2 backbones
from .data.datasets import builtin  # noqa: F401  registers the builtin datasets
from .utils.deprecation import install_moved_modules

install_moved_modules()  # old module paths, for one release

__all__ = ["add_ustumor_config"]
