"""Files that readers never see half-written, JSON of numpy values, and ustumor's cache folder."""
import os

import numpy as np


def _fsync_directory(directory):
    # makes the rename itself durable; not available on every platform
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write, mode="wb"):
    """Call ``write(file)`` on a temporary file beside ``path``, then move it onto ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(temporary, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the name points at it
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    _fsync_directory(directory)
    # a process killed mid-write leaves its temporary behind; the next write of the file clears it
    prefix = f".{os.path.basename(path)}.tmp"
    for name in os.listdir(directory):
        if name.startswith(prefix):
            try:
                os.remove(os.path.join(directory, name))
            except OSError:
                pass


def atomic_write_text(path, text):
    """Write a text file so readers never see half of it."""
    atomic_write(path, lambda f: f.write(text), mode="w")


def json_safe(value):
    """``value`` with numpy scalars as Python ones and tuples as lists, for ``json.dumps``.

    NaN stays NaN (written ``NaN``, as Python's json and Detectron2's results files do), so
    readers such as ``tools/demo.py`` keep getting floats.
    """
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def cache_dir():
    """``$USTUMOR_CACHE``, default ``~/.cache/ustumor``: split files and scan-window crops."""
    return os.environ.get("USTUMOR_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "ustumor"))
