"""Old module paths, kept for one release after a move.

The old paths are served by an import hook rather than by files left at them, so that git
sees each move as a rename (and merges carry changes made at the old path to the new one).
"""
import importlib
import importlib.abc
import importlib.util
import sys
import warnings

# old module path -> new one
MOVED_MODULES = {
    "ustumor.data.busi": "ustumor.data.datasets.busi",
    "ustumor.data.hospital": "ustumor.data.datasets.hospital",
    "ustumor.data.coco": "ustumor.data.datasets.coco",
    "ustumor.data.labelme": "ustumor.data.datasets.labelme",
    "ustumor.data.builtin": "ustumor.data.datasets.builtin",
    "ustumor.data.ultrasound": "ustumor.data.preprocessing.scan_window",
    "ustumor.data.crop_cache": "ustumor.data.preprocessing.crop_cache",
    "ustumor.data.normalization": "ustumor.data.preprocessing.normalization",
    "ustumor.data.synthetic": "ustumor.synthetic",
    "ustumor.data.synthetic_hospital": "ustumor.synthetic.hospital",
    "ustumor.visualization.inference": "ustumor.engine.inference",
}
# where an old path is served from, when not from its new module: names dropped from it
_SERVED_FROM = {"ustumor.data.ultrasound": "ustumor.data.preprocessing._ultrasound_compat"}


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old path as the new module itself (so private names and monkeypatching keep
    working), with a DeprecationWarning naming the new path."""

    def __init__(self):
        self._specs = {}

    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED_MODULES else None

    def create_module(self, spec):
        new_name = MOVED_MODULES[spec.name]
        warnings.warn(f"{spec.name} moved to {new_name}; the old path will be removed in the next release",
                      DeprecationWarning, stacklevel=2)
        module = importlib.import_module(_SERVED_FROM.get(spec.name, new_name))
        self._specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module):
        module.__spec__ = self._specs[module.__name__]  # importlib set the old path's spec on it


def install_moved_modules():
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())


def moved_names(module_name, moved):
    """A module ``__getattr__`` serving the names in ``moved`` (name -> new module path)
    from their new home, warning that they moved."""

    def __getattr__(name):
        if name not in moved:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        warnings.warn(f"{module_name}.{name} moved to {moved[name]}.{name}; the old path will be removed in "
                      "the next release", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(moved[name]), name)

    return __getattr__
