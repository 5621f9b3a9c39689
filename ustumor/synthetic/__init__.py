"""Synthetic data, so that the pipeline runs and is tested without patient data.

- :mod:`.tissue`: one phantom scan (breast layers, lesions, speckle) and its lesion masks
- :mod:`.screen`: the scanner screen around a scan (calipers, workspace screenshot) and
  screenshot sets with their true boxes
- :mod:`.phantom_dataset`: a phantom dataset in BUSI's layout (``tools/make_phantom.py``)
- :mod:`.hospital`: a hospital-style set (LabelMe clip exports, DICOM cines, the CSV)
"""
from .phantom_dataset import BUSI_ROOT_NAME, MANIFEST_NAME, write_phantom_dataset  # noqa: F401
from .screen import PhantomScreenshot, add_calipers, embed_in_workspace, embed_mask, render_screenshots  # noqa: F401
from .tissue import BUSI_CLASS_FRACTIONS, PHANTOM_CLASSES, render_phantom  # noqa: F401
