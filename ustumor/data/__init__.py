from .mapper import UltrasoundDatasetMapper  # noqa: F401
