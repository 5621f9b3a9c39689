"""LabelMe 3.0 XML exports (as written by CVAT / Datumaro) of ultrasound cine clips.

One clip is a folder or a zip named ``<mrn>_<acc>_<k>.mp4-<timestamp>-labelme 3.0.zip``
holding ``default/`` (sometimes ``default/default/``) with ``frame_000NNN.png`` (or
``.PNG``) and one XML per frame::

    <annotation>
      <filename>frame_000012.PNG</filename> <folder></folder>
      <imagesize><nrows>600</nrows><ncols>800</ncols></imagesize>
      <object>
        <name>lesion</name> <deleted>0</deleted> <type>bounding_box</type>
        <polygon><pt><x>329.51</x><y>221.38</y></pt> ... </polygon>
      </object>
    </annotation>

A rectangle is a 4-point polygon with ``<type>bounding_box</type>``; a polygon has
any number of points; a mask object (``<segm>``) carries its ``<box>``. Every shape
becomes a box by min/max over its points, in whatever order the corners come.
Objects marked ``<deleted>1</deleted>`` are not annotations; they are counted.
"""
import os
import re
import zipfile
import xml.etree.ElementTree as ElementTree
from typing import List, NamedTuple, Optional, Tuple

from ..bad_input import BadInputError

__all__ = [
    "LabelMeObject", "LabelMeFrame", "LabelMeClip", "ClipFrame", "parse_labelme_xml", "points_to_box",
    "find_labelme_clips", "list_clip_frames",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_FRAME_NUMBER = re.compile(r"(\d+)\D*$")


class LabelMeObject(NamedTuple):
    label: str
    points: List[Tuple[float, float]]
    shape: str  # "bounding_box", "polygon" or "mask_box"


class LabelMeFrame(NamedTuple):
    xml_file: str
    image_name: str  # <folder>/<filename> as written in the XML
    height: Optional[int]
    width: Optional[int]
    objects: List[LabelMeObject]
    deleted: int  # objects marked deleted, not returned


class LabelMeClip(NamedTuple):
    video_id: str  # the folder or zip name, e.g. "<mrn>_<acc>_<k>.mp4-<timestamp>-labelme 3.0.zip"
    path: str
    zipped: bool


class ClipFrame(NamedTuple):
    frame_id: int
    image_file: str
    xml_file: Optional[str]  # None: the export has the image but no XML for it


def points_to_box(points):
    """``[x0, y0, x1, y1]`` by min/max over the points (any corner order)."""
    if len(points) < 2:
        raise ValueError(f"{len(points)} point(s); a box needs at least 2")
    xs = [float(p[0]) for p in points]
    ys = [float(p[1]) for p in points]
    return [min(xs), min(ys), max(xs), max(ys)]


def _text(element, tag, default=""):
    child = element.find(tag)
    return child.text.strip() if child is not None and child.text else default


def _number(text, xml_file, what):
    try:
        return float(text)
    except (TypeError, ValueError):
        raise BadInputError(f"{xml_file}: {what} is not a number ({text!r})") from None


def parse_labelme_xml(source, xml_file=None):
    """Parse one LabelMe XML; ``source`` is a path or the file's bytes (``xml_file`` names it).

    Raises :class:`BadInputError` naming the XML for a malformed file or shape.
    """
    xml_file = xml_file or str(source)
    try:
        root = ElementTree.fromstring(source) if isinstance(source, bytes) else ElementTree.parse(source).getroot()
    except (ElementTree.ParseError, OSError) as error:
        raise BadInputError(f"{xml_file}: not a readable LabelMe XML ({error})") from None
    if root.tag != "annotation":
        raise BadInputError(f"{xml_file}: root element is <{root.tag}>, expected <annotation>")
    size = root.find("imagesize")
    height = width = None
    if size is not None and _text(size, "nrows") and _text(size, "ncols"):
        height = int(_number(_text(size, "nrows"), xml_file, "nrows"))
        width = int(_number(_text(size, "ncols"), xml_file, "ncols"))
    objects, deleted = [], 0
    for index, element in enumerate(root.iter("object")):
        if _text(element, "deleted", "0") not in ("", "0"):
            deleted += 1
            continue
        label = _text(element, "name")
        polygon, segm = element.find("polygon"), element.find("segm")
        if polygon is not None:
            points = [(_number(_text(pt, "x"), xml_file, "x"), _number(_text(pt, "y"), xml_file, "y"))
                      for pt in polygon.iter("pt")]
            shape = "bounding_box" if _text(element, "type") == "bounding_box" else "polygon"
        elif segm is not None and segm.find("box") is not None:
            box = segm.find("box")
            values = [_number(_text(box, k), xml_file, k) for k in ("xmin", "ymin", "xmax", "ymax")]
            points, shape = [(values[0], values[1]), (values[2], values[3])], "mask_box"
        else:
            raise BadInputError(f"{xml_file}: object {index} ({label!r}) has no polygon or mask box")
        if len(points) < 2:
            raise BadInputError(f"{xml_file}: object {index} ({label!r}) has {len(points)} point(s), needs 2+")
        objects.append(LabelMeObject(label, points, shape))
    image_name = os.path.join(_text(root, "folder"), _text(root, "filename"))
    return LabelMeFrame(xml_file, image_name, height, width, objects, deleted)


def _is_clip_folder(path):
    return os.path.isdir(os.path.join(path, "default"))


def find_labelme_clips(paths):
    """Clips among ``paths``: each path is a clip (a folder with ``default/``, or a
    ``.zip``) or a folder whose children are clips. Sorted by video id."""
    clips = []
    for path in paths:
        path = os.path.normpath(path)
        if os.path.isfile(path) and zipfile.is_zipfile(path):
            clips.append(LabelMeClip(os.path.basename(path), path, True))
        elif _is_clip_folder(path):
            clips.append(LabelMeClip(os.path.basename(path), path, False))
        elif os.path.isdir(path):
            for name in sorted(os.listdir(path)):
                child = os.path.join(path, name)
                if os.path.isfile(child) and name.lower().endswith(".zip") and zipfile.is_zipfile(child):
                    clips.append(LabelMeClip(name, child, True))
                elif _is_clip_folder(child):
                    clips.append(LabelMeClip(name, child, False))
        else:
            raise FileNotFoundError(f"{path}: neither a LabelMe clip (folder with default/, or .zip) nor a folder")
    names = [c.video_id for c in clips]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise BadInputError(f"clip names occur more than once among {paths}: {repeated[:5]}")
    return sorted(clips)


def extract_clip(clip, extract_to):
    """Unzip a zipped clip's images and XMLs into ``extract_to/<video_id>/`` (once) and
    return that folder. Members with absolute paths or ``..`` are refused."""
    target = os.path.join(extract_to, clip.video_id)
    with zipfile.ZipFile(clip.path) as archive:
        for member in archive.infolist():
            name = member.filename
            if member.is_dir() or not name.lower().endswith(IMAGE_EXTENSIONS + (".xml",)):
                continue
            parts = name.replace("\\", "/").split("/")
            if name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", name):
                raise BadInputError(f"{clip.path}: unsafe member path {name!r} in the zip")
            destination = os.path.join(target, *parts)
            if os.path.isfile(destination) and os.path.getsize(destination) == member.file_size:
                continue  # extracted by an earlier run
            os.makedirs(os.path.dirname(destination), exist_ok=True)
            temporary = f"{destination}.tmp{os.getpid()}"
            with archive.open(member) as src, open(temporary, "wb") as dst:
                dst.write(src.read())
            os.replace(temporary, destination)
    return target


def frame_number(image_file):
    """N of ``frame_000N.png`` (the last run of digits in the name)."""
    match = _FRAME_NUMBER.search(os.path.splitext(os.path.basename(image_file))[0])
    return int(match.group(1)) if match else None


def list_clip_frames(folder):
    """The frames of an (unzipped) clip folder, sorted by frame id.

    Each XML is paired with the image its ``<filename>`` names (beside it), or else
    the image with its stem; an image without XML is listed with ``xml_file=None``.
    Raises :class:`BadInputError` for an XML without image, a frame without a number,
    or two images with one frame number (e.g. in ``default/`` and ``default/default/``).
    """
    images, xmls = [], []
    for directory, _, files in os.walk(folder):
        for name in sorted(files):
            lower = name.lower()
            if lower.endswith(IMAGE_EXTENSIONS):
                images.append(os.path.join(directory, name))
            elif lower.endswith(".xml"):
                xmls.append(os.path.join(directory, name))
    by_path = {os.path.normcase(p): p for p in images}
    by_stem = {}
    for path in images:
        by_stem.setdefault(os.path.splitext(path)[0], path)
    xml_of = {}
    for xml in sorted(xmls):
        image = None
        named = _xml_filename(xml)
        if named:
            image = by_path.get(os.path.normcase(os.path.join(os.path.dirname(xml), named)))
        image = image or by_stem.get(os.path.splitext(xml)[0])
        if image is None:
            raise BadInputError(f"{xml}: its image ({named or 'same name'}) is not in the export")
        xml_of[image] = xml
    frames, seen = [], {}
    for image in sorted(images):
        number = frame_number(image)
        if number is None:
            raise BadInputError(f"{image}: no frame number in the file name")
        if number in seen:
            raise BadInputError(f"{image}: frame {number} also at {seen[number]}")
        seen[number] = image
        frames.append(ClipFrame(number, image, xml_of.get(image)))
    return sorted(frames)


def _xml_filename(xml):
    try:
        root = ElementTree.parse(xml).getroot()
    except (ElementTree.ParseError, OSError):
        return ""  # reported when the XML itself is parsed
    return os.path.join(_text(root, "folder"), _text(root, "filename")) if _text(root, "filename") else ""
