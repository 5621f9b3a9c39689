"""Scan-window crops computed once per frame and kept on disk across runs.

Finding the scan window of a 600x800 screenshot takes ~15 ms; a hospital set has
thousands of cine frames and training reads each many times, in several
DataLoader workers, over several runs. :class:`CropBoxStore` keeps the boxes in
one SQLite file under ``$USTUMOR_CACHE`` (safe for concurrent worker processes),
keyed by the file's path, mtime, size and frame, and by a hash of the crop code,
so an edited frame or a changed algorithm is recomputed rather than reused.
:class:`CropCache`, used by the dataset mapper, adds a per-process memory cache and
counts the frames where no scan window was found.
"""
import hashlib
import json
import logging
import os
import sqlite3
from typing import NamedTuple, Tuple

from ...utils.file_io import cache_dir
from .. import dicom
from ..image_io import read_frame_grey
from . import scan_window
from .scan_window import CropFailureCounter

logger = logging.getLogger(__name__)

SOURCES = ("dicom_region", "image", "fallback")


class CropEntry(NamedTuple):
    """A frame's crop: ``box`` (x0, y0, x1, y1), exclusive; ``ok`` False when no scan window
    was found and ``box`` is the full frame; ``source`` one of :data:`SOURCES`."""

    box: Tuple[int, int, int, int]
    ok: bool
    source: str


def compute_crop(path, grey, frame=None):
    """The DICOM ultrasound-region box when the file has one, else the image-based crop."""
    if dicom.is_dicom(path):
        region_box = dicom.read_dicom_info(path).region_box
        if region_box is not None:
            return CropEntry(tuple(int(v) for v in region_box), True, "dicom_region")
    box, ok = scan_window.crop_ultrasound_window_or_full(grey)
    return CropEntry(tuple(int(v) for v in box), bool(ok), "image" if ok else "fallback")


_ALGORITHM_VERSION = None


def crop_algorithm_version():
    """Hash of the modules that decide a crop: editing them invalidates cached boxes."""
    global _ALGORITHM_VERSION
    if _ALGORITHM_VERSION is None:
        digest = hashlib.sha1()
        for module in (scan_window, dicom):
            with open(module.__file__, "rb") as f:
                digest.update(f.read())
        _ALGORITHM_VERSION = digest.hexdigest()[:12]
    return _ALGORITHM_VERSION


def frame_key(path, frame=None):
    """Cache key of one frame: changes when the file is rewritten."""
    stat = os.stat(path)
    return (os.path.abspath(path), stat.st_mtime_ns, stat.st_size, None if frame is None else int(frame))


class CropBoxStore:
    """Persistent ``frame_key -> CropEntry`` map in SQLite.

    Each process opens its own connection (DataLoader workers fork). If the file
    cannot be used (read-only or corrupt cache), a warning is logged once and the
    store turns into a no-op: crops are then only cached in memory.
    """

    def __init__(self, path=None):
        self.path = path or os.path.join(cache_dir(), "crop_boxes.sqlite")
        self._connection = None
        self._pid = None
        self.disabled = False

    def __getstate__(self):  # a connection cannot be pickled (spawned workers)
        state = dict(self.__dict__)
        state["_connection"], state["_pid"] = None, None
        return state

    def _connect(self):
        if self._pid != os.getpid():
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=60)
            connection.execute(
                "CREATE TABLE IF NOT EXISTS crops (key TEXT PRIMARY KEY, x0 INT, y0 INT, x1 INT, y1 INT, "
                "ok INT, source TEXT)"
            )
            connection.commit()
            self._connection, self._pid = connection, os.getpid()
        return self._connection

    def _key(self, key):
        return json.dumps(list(key) + [crop_algorithm_version()])

    def _run(self, action):
        if self.disabled:
            return None
        try:
            return action(self._connect())
        except (sqlite3.Error, OSError) as error:
            self.disabled = True
            logger.warning("Crop cache %s unusable (%s); crops are cached in memory only", self.path, error)
            return None

    def get(self, key):
        row = self._run(lambda c: c.execute(
            "SELECT x0, y0, x1, y1, ok, source FROM crops WHERE key = ?", (self._key(key),)).fetchone())
        if row is None:
            return None
        return CropEntry(tuple(int(v) for v in row[:4]), bool(row[4]), str(row[5]))

    def put(self, key, entry):
        def insert(connection):
            with connection:  # commits
                connection.execute("INSERT OR REPLACE INTO crops VALUES (?, ?, ?, ?, ?, ?, ?)",
                                   (self._key(key), *entry.box, int(entry.ok), entry.source))
        self._run(insert)


class CropCache:
    """Scan-window boxes, found once per frame.

    Kept in memory per process and on disk across processes and runs
    (:class:`CropBoxStore` under ``$USTUMOR_CACHE``), keyed by
    path, mtime, size and frame. A DICOM with ultrasound regions gives its box directly.
    """

    def __init__(self, persistent=True):
        self._boxes = {}
        self.failures = CropFailureCounter(logger)
        self.store = CropBoxStore() if persistent else None

    def crop_box(self, path, grey=None, frame=None):
        return self.crop_entry(path, grey, frame).box

    def crop_entry(self, path, grey=None, frame=None):
        """:class:`CropEntry` (box, ok, source) of a frame; ``grey`` is read only if needed."""
        key = frame_key(path, frame)
        if key not in self._boxes:
            entry = self.store.get(key) if self.store is not None else None
            if entry is None:
                entry = compute_crop(path, read_frame_grey(path, frame) if grey is None else grey, frame)
                if self.store is not None:
                    self.store.put(key, entry)
            self.failures.record(entry.ok, path)  # once per frame and process, cached or not
            self._boxes[key] = entry
        return self._boxes[key]
