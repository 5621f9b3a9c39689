#!/usr/bin/env python
"""Copy BUSI with grey JPEG (quality 85) images and unchanged PNG masks, to fit a 64 MiB carry.

    benchmarks/gpu/compact_busi.py SRC_BUSI_ROOT DST_BUSI_ROOT

The loader accepts JPEG images in the BUSI layout; boxes come from the masks, which
are copied byte for byte, so the annotations are exactly the original ones.
"""
import os
import shutil
import sys

import cv2

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from ustumor.data.datasets.busi import BUSI_CLASSES, BUSI_SUBDIR, find_busi_root  # noqa: E402
from ustumor.data.image_io import read_grey  # noqa: E402


def main(source, destination):
    source = find_busi_root(source)
    for busi_class in BUSI_CLASSES:
        out = os.path.join(destination, BUSI_SUBDIR, busi_class)
        os.makedirs(out, exist_ok=True)
        for name in sorted(os.listdir(os.path.join(source, busi_class))):
            path = os.path.join(source, busi_class, name)
            if "_mask" in name:
                shutil.copyfile(path, os.path.join(out, name))
            elif name.lower().endswith(".png"):
                cv2.imwrite(os.path.join(out, name[:-4] + ".jpg"), read_grey(path), [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"compact BUSI written to {destination}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
