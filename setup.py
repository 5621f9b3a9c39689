#!/usr/bin/env python
"""ustumor: breast-tumour detection in ultrasound on Detectron2.

Detectron2 itself is not on PyPI under its own name: `make setup` installs it
through tools/install_detectron2.py (or use the official one from git).
"""
from setuptools import find_packages, setup

setup(
    name="ustumor",
    version="0.1.0",
    description="Breast-tumour detection in ultrasound images on Detectron2",
    packages=find_packages(exclude=("tests*", "tools*", "benchmarks*", "configs*")),
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.0",
        "torchvision>=0.15",
        "numpy",
        "opencv-python-headless",
        "Pillow>=9",
        "matplotlib",
        "PyYAML",  # reading a run's config.yaml for its report
        "pycocotools>=2.0.2",
        "tabulate",  # the --eval-only results table
        "tqdm",
        "pydicom>=3.0",
        "scikit-learn",  # ROC curve (ustumor/evaluation/roc.py)
        "scipy",  # tied ranks for the AUC (ustumor/evaluation/roc.py); Spearman correlation in the tests
        # Grad-CAM maths (tensor-hook gradients, Grad-CAM/Grad-CAM++); ustumor adds the Detectron2 adapter
        "grad-cam>=1.5.7,<1.6",
        # Detectron2 v0.6's own runtime dependencies (installed without --deps,
        # because its pinned black==21.4b2 is irrelevant and breaks on new click).
        "fvcore>=0.1.5,<0.1.6",
        "iopath>=0.1.7,<0.1.10",
        "yacs>=0.1.8",
        "termcolor>=1.1",
        "cloudpickle",
        "tensorboard",
        "omegaconf>=2.1",
        "hydra-core>=1.1",
        "setuptools>=77.0.3,<81",  # detectron2.model_zoo imports pkg_resources
    ],
    extras_require={
        "test": [
            "pytest",
            "pytest-timeout",  # pytest.ini's per-test time limit: a hung test fails instead of stalling CI
        ],
    },
)
