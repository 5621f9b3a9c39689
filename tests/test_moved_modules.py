"""Module paths from before the data package was laid out by job keep working for one
release, each with a DeprecationWarning naming the new path."""
import importlib
import re
import sys

import numpy as np
import pytest

# written out here, not read from ustumor.utils.deprecation: the test is that these paths work
MOVED = {
    "ustumor.data.busi": "ustumor.data.datasets.busi",
    "ustumor.data.hospital": "ustumor.data.datasets.hospital",
    "ustumor.data.coco": "ustumor.data.datasets.coco",
    "ustumor.data.labelme": "ustumor.data.datasets.labelme",
    "ustumor.data.builtin": "ustumor.data.datasets.builtin",
    "ustumor.data.crop_cache": "ustumor.data.preprocessing.crop_cache",
    "ustumor.data.normalization": "ustumor.data.preprocessing.normalization",
    "ustumor.data.synthetic": "ustumor.synthetic",
    "ustumor.data.synthetic_hospital": "ustumor.synthetic.hospital",
    "ustumor.visualization.inference": "ustumor.engine.inference",
}


def fresh_import(name):
    sys.modules.pop(name, None)
    return importlib.import_module(name)


@pytest.mark.parametrize("old, new", sorted(MOVED.items()))
def test_old_module_path_is_the_new_module_and_warns(old, new):
    with pytest.warns(DeprecationWarning, match=re.escape(f"{old} moved to {new}")):
        module = fresh_import(old)
    assert module is importlib.import_module(new)
    assert module.__spec__.name == new  # the new module is not renamed by the alias


def test_names_imported_from_old_paths_are_the_new_objects():
    with pytest.warns(DeprecationWarning):
        sys.modules.pop("ustumor.data.synthetic", None)
        from ustumor.data.synthetic import BUSI_ROOT_NAME, render_phantom, write_phantom_dataset
    from ustumor.synthetic.phantom_dataset import BUSI_ROOT_NAME as new_root, write_phantom_dataset as new_write
    from ustumor.synthetic.tissue import render_phantom as new_render
    assert (BUSI_ROOT_NAME, render_phantom, write_phantom_dataset) == (new_root, new_render, new_write)


def test_old_scan_window_path_keeps_its_helpers():
    with pytest.warns(DeprecationWarning, match="ustumor.data.preprocessing.scan_window"):
        ultrasound = fresh_import("ustumor.data.ultrasound")
    from ustumor.data.preprocessing import scan_window
    assert ultrasound.crop_ultrasound_window is scan_window.crop_ultrasound_window
    assert ultrasound._find_scan_blob is scan_window._find_scan_blob
    assert not hasattr(scan_window, "shift_boxes")  # no longer public API
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert np.array_equal(ultrasound.to_grey(ultrasound.to_three_channels(grey)), grey)
    np.testing.assert_allclose(ultrasound.shift_boxes([[1, 1, 3, 5]], (1, 0, 3, 3)), [[0, 1, 2, 3]])
    assert ultrasound.apply_crop(grey, (1, 0, 3, 2)).tolist() == [[1, 2], [5, 6]]


def test_loader_names_moved_out_of_samplers_warn():
    from ustumor.data import build, samplers
    with pytest.warns(DeprecationWarning, match=r"ustumor\.data\.build\.ResumableTrainLoader"):
        assert samplers.ResumableTrainLoader is build.ResumableTrainLoader
    with pytest.raises(AttributeError):
        samplers.no_such_name  # noqa: B018
