"""Reading images and masks with errors that name the file."""
import os

import cv2
import numpy as np

from .bad_input import BadInputError
from .fields import DICOM_FRAME


def read_image(path, flags=cv2.IMREAD_UNCHANGED):
    """cv2.imread that raises a clear error for a missing or undecodable file."""
    data = np.fromfile(path, dtype=np.uint8) if os.path.isfile(path) else None
    if data is None:
        raise BadInputError(f"{path}: file not found")
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise BadInputError(f"{path}: cannot decode the image (corrupt or not an image file)")
    return image


def read_grey(path):
    """The image as a (H, W) uint8 grey array (colour is converted, 16-bit is scaled)."""
    image = read_image(path, cv2.IMREAD_UNCHANGED)
    return to_grey_uint8(image, path)


def to_grey_uint8(image, path="image"):
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise BadInputError(f"{path}: unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] in (3, 4):
        colour = image[:, :, :3]
        if np.array_equal(colour[:, :, 0], colour[:, :, 1]) and np.array_equal(colour[:, :, 1], colour[:, :, 2]):
            return np.ascontiguousarray(colour[:, :, 0])
        return cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)
    raise BadInputError(f"{path}: unsupported image shape {image.shape}")


def read_binary_mask(path):
    """A lesion mask as a bool (H, W) array.

    A mask may be grey, RGB or RGBA (BUSI has all three), but it must hold at most
    two distinct pixel values; the brighter one is the lesion.
    """
    mask = read_image(path, cv2.IMREAD_UNCHANGED)
    pixels = mask.reshape(mask.shape[0] * mask.shape[1], -1)
    first = pixels[0]
    is_first = np.all(pixels == first, axis=1)
    others = pixels[~is_first]
    if others.shape[0] == 0:
        return np.full(mask.shape[:2], bool(first[: 3].max() > 0))
    second = others[0]
    if not np.all(others == second, axis=1).all():
        values = np.unique(pixels, axis=0)[:5].tolist()
        raise BadInputError(
            f"{path}: mask has more than two distinct values (e.g. {values}); "
            "expected a binary lesion mask"
        )
    first_is_lesion = int(first[:3].astype(np.int64).sum()) > int(second[:3].astype(np.int64).sum())
    lesion = is_first if first_is_lesion else ~is_first
    return lesion.reshape(mask.shape[:2])


def read_dataset_frame(dataset_dict):
    """The (H, W) uint8 grey frame a dataset dict names: its image file, or frame
    ``dicom_frame`` of its DICOM. Every reader of dataset frames goes through here."""
    return read_frame_grey(dataset_dict["file_name"], dataset_dict.get(DICOM_FRAME))


def read_frame_grey(path, frame_index=None):
    """One frame as (H, W) uint8 grey: a PNG/JPEG file, or frame ``frame_index`` (0-based)
    of a DICOM file (``None``: a single-frame DICOM)."""
    from .dicom import is_dicom, read_dicom_frame  # pydicom only when DICOM is used

    if is_dicom(path):
        return read_dicom_frame(path, frame_index)
    if frame_index not in (None, 0):
        raise BadInputError(f"{path}: frame {frame_index} asked of a single image (not a multi-frame DICOM)")
    return read_grey(path)
