"""Reading ultrasound frames from DICOM files, without ever touching patient data.

Single-frame and multi-frame (cine) files are read one frame at a time, in grey.
Photometric interpretations MONOCHROME1/2, RGB, YBR_FULL, YBR_FULL_422 and
PALETTE COLOR are handled (pydicom converts YBR to RGB).

When a file has a Sequence of Ultrasound Regions (0018,6011), its 2D tissue
regions give the scan window (:func:`ultrasound_region_box`), so no image-based
crop is needed.

Privacy: only the image-pixel module (group 0028), the ultrasound regions and the
pixel data's presence are ever parsed (``specific_tags``). Patient-identifying
tags are not read into memory, so they cannot reach a log, an error message or an
output file. Error messages name the file and frame only.
"""
import os
import warnings
from typing import NamedTuple, Optional, Tuple

import cv2
import numpy as np

from .bad_input import BadInputError

__all__ = ["DicomInfo", "is_dicom", "read_dicom_info", "read_dicom_frame", "ultrasound_region_box"]

DICOM_EXTENSIONS = (".dcm", ".dicom")
# Extensions that are certainly not DICOM: no need to open the file to check.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# The only tags ever parsed from the header (no patient, study or institution tags).
_HEADER_TAGS = [
    "Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "PhotometricInterpretation",
    "BitsAllocated", "BitsStored", "PixelRepresentation", "SequenceOfUltrasoundRegions",
    "PixelData", "FloatPixelData", "DoubleFloatPixelData",
]
# RegionSpatialFormat 1 is a 2D (B-mode) region; others are M-mode, spectral Doppler, ...
_SPATIAL_FORMAT_2D = 1


class DicomInfo(NamedTuple):
    """What ustumor needs to know about a DICOM file; nothing that identifies anyone."""

    rows: int
    columns: int
    num_frames: int
    photometric: str
    has_pixel_data: bool
    region_box: Optional[Tuple[int, int, int, int]]  # scan window (x0, y0, x1, y1), exclusive


def is_dicom(path):
    """True for ``.dcm``/``.dicom`` files and for files with the ``DICM`` marker at byte 128."""
    extension = os.path.splitext(path)[1].lower()
    if extension in DICOM_EXTENSIONS:
        return True
    if extension in IMAGE_EXTENSIONS:
        return False
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _pydicom():
    try:
        import pydicom
        from pydicom.pixels import pixel_array  # noqa: F401  pydicom >= 3: one frame at a time
    except ImportError as error:
        raise ImportError(
            "reading DICOM needs pydicom>=3.0 (`pip install -e .` installs it)"
        ) from error
    return pydicom


def ultrasound_region_box(regions, width, height):
    """Scan window from a Sequence of Ultrasound Regions, or None.

    The union of the 2D regions (all regions when none is marked 2D), as an exclusive
    box clipped to the frame. DICOM's RegionLocationMaxX1/Y1 are inclusive pixel
    indices. A dual (side-by-side) view gives one box around both views, so no
    lesion on either view is cut.
    """
    boxes, boxes_2d = [], []
    for region in regions or []:
        try:
            box = (int(region.RegionLocationMinX0), int(region.RegionLocationMinY0),
                   int(region.RegionLocationMaxX1) + 1, int(region.RegionLocationMaxY1) + 1)
        except (AttributeError, TypeError, ValueError):
            continue  # a region without its location is no help for cropping
        boxes.append(box)
        if region.get("RegionSpatialFormat", None) == _SPATIAL_FORMAT_2D:
            boxes_2d.append(box)
    boxes = boxes_2d or boxes
    if not boxes:
        return None
    x0 = max(0, min(b[0] for b in boxes))
    y0 = max(0, min(b[1] for b in boxes))
    x1 = min(int(width), max(b[2] for b in boxes))
    y1 = min(int(height), max(b[3] for b in boxes))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return (x0, y0, x1, y1)


def read_dicom_info(path):
    """Size, frame count, photometric interpretation, pixel-data presence and scan window.

    Raises :class:`BadInputError` naming the file if it is missing or not DICOM.
    """
    pydicom = _pydicom()
    if not os.path.isfile(path):
        raise BadInputError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's warnings may quote element values
            header = pydicom.dcmread(path, specific_tags=_HEADER_TAGS, defer_size=1024)
    except Exception as error:  # InvalidDicomError, truncated files, ...
        raise BadInputError(f"{path}: cannot read as DICOM ({type(error).__name__})") from None
    has_pixel_data = any(k in header for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    rows, columns = int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0)
    frames = header.get("NumberOfFrames", None)
    num_frames = int(frames) if frames not in (None, "") else 1
    return DicomInfo(
        rows=rows,
        columns=columns,
        num_frames=num_frames,
        photometric=str(header.get("PhotometricInterpretation", "")),
        has_pixel_data=has_pixel_data and rows > 0 and columns > 0,
        region_box=ultrasound_region_box(header.get("SequenceOfUltrasoundRegions", None), columns, rows),
    )


def read_dicom_frame(path, index=None):
    """Frame ``index`` (0-based; None for a single-frame file) as a (H, W) uint8 grey array.

    Only the requested frame is decoded. Raises :class:`BadInputError` naming the file
    and frame for a missing file, missing pixel data or an index past the last frame.
    """
    _pydicom()
    from pydicom.dataset import Dataset
    from pydicom.pixels import apply_color_lut, pixel_array

    info = read_dicom_info(path)
    if not info.has_pixel_data:
        raise BadInputError(f"{path}: DICOM has no pixel data")
    if index is None:
        if info.num_frames > 1:
            raise BadInputError(f"{path}: multi-frame DICOM ({info.num_frames} frames) needs a frame index")
        index = 0
    index = int(index)
    if not 0 <= index < info.num_frames:
        raise BadInputError(
            f"{path}: frame {index} is past the last frame (the file has {info.num_frames}, 0-based)"
        )
    pixel_module = Dataset()  # receives group 0028 only
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frame = pixel_array(path, index=index if info.num_frames > 1 else None, ds_out=pixel_module)
    except Exception as error:
        raise BadInputError(
            f"{path}: cannot decode frame {index} ({type(error).__name__}: pixel data truncated, "
            "or a compressed transfer syntax without its pydicom plugin)"
        ) from None
    bits_stored = int(pixel_module.get("BitsStored", 8) or 8)
    if info.photometric == "PALETTE COLOR":
        frame = apply_color_lut(frame, pixel_module)
        bits_stored = 8 * frame.dtype.itemsize  # the LUT's entries, not the stored indices
    return _to_grey_uint8(frame, info.photometric, bits_stored, path)


def _to_grey_uint8(frame, photometric, bits_stored, path):
    if frame.dtype != np.uint8:
        # Scale the stored bit range to 0..255 (ultrasound is nearly always 8-bit already).
        frame = frame.astype(np.float64)
        if frame.min() < 0:
            frame += 2 ** (bits_stored - 1)
        top = float(2 ** min(bits_stored, 16) - 1) if bits_stored else max(float(frame.max()), 1.0)
        frame = np.clip(frame * (255.0 / top) + 0.5, 0, 255).astype(np.uint8)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)  # pydicom gives RGB
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim != 2:
        raise BadInputError(f"{path}: unsupported DICOM frame shape {frame.shape}")
    if photometric == "MONOCHROME1":  # 0 is white
        frame = 255 - frame
    return np.ascontiguousarray(frame)
