"""Dataset loaders, one module per source, each registering its datasets in Detectron2's
``DatasetCatalog``/``MetadataCatalog`` (as ``detectron2.data.datasets``):

- :mod:`.busi`: the BUSI release's folder layout (also the phantom's)
- :mod:`.hospital`: the hospital CSV of frames, clips and patients (PNG or DICOM)
- :mod:`.labelme`: LabelMe 3.0 (CVAT) clip exports, read by ``tools/prepare_hospital.py``
- :mod:`.coco`: COCO json in and out
- :mod:`.registration`: ``<prefix>_{train,val,test,all}`` families over a saved split
- :mod:`.builtin`: the datasets registered on ``import ustumor`` and from a config

A new source gets a module here with a ``load_<source>_dicts`` and a ``register_...``,
called from :mod:`.builtin`.
"""
from .busi import load_busi_dicts  # noqa: F401
from .coco import export_coco_json, load_coco_dicts, register_coco_dataset  # noqa: F401
from .hospital import load_hospital_dicts, register_hospital_dataset  # noqa: F401
from .registration import register_busi_layout, register_split_family  # noqa: F401
