"""Data: loaders in :mod:`.datasets`, preprocessing in :mod:`.preprocessing`, and here the
pieces every loader and the training loop share: dataset-dict field names (:mod:`.fields`),
frame readers (:mod:`.image_io`, :mod:`.dicom`), the bad-input policy (:mod:`.bad_input`),
split making (:mod:`.splits`), the dataset mapper (:mod:`.mapper`), the resumable sampler
(:mod:`.samplers`) and the training loader built on it (:mod:`.build`)."""
from .mapper import UltrasoundDatasetMapper  # noqa: F401
