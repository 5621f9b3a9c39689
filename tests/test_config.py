"""Config keys: renamed keys still load (with a warning), and keys that became one must agree."""
import logging

import pytest

from ustumor.engine.defaults import merged_config


def write(tmp_path, text):
    path = tmp_path / "old.yaml"
    path.write_text(text)
    return str(path)


def test_on_bad_row_in_a_file_is_read_as_on_bad_item(tmp_path, caplog):
    path = write(tmp_path, "DATASETS:\n  ON_BAD_ROW: skip\n")
    with caplog.at_level(logging.WARNING):
        cfg = merged_config(path)
    assert cfg.DATASETS.ON_BAD_ITEM == "skip"
    assert "ON_BAD_ROW" not in cfg.DATASETS  # one key, not two
    assert f"{path}: config key DATASETS.ON_BAD_ROW is deprecated" in caplog.text
    assert "write DATASETS.ON_BAD_ITEM instead" in caplog.text


def test_on_bad_row_on_the_command_line_is_read_as_on_bad_item(caplog):
    with caplog.at_level(logging.WARNING):
        cfg = merged_config("", ["DATASETS.ON_BAD_ROW", "skip"])
    assert cfg.DATASETS.ON_BAD_ITEM == "skip"
    assert "DATASETS.ON_BAD_ROW is deprecated" in caplog.text


def test_both_old_class_modes_become_one_key(tmp_path):
    path = write(tmp_path, "DATASETS:\n  BUSI:\n    CLASS_MODE: benign_malignant\n"
                           "  HOSPITAL:\n    CLASS_MODE: benign_malignant\n")
    cfg = merged_config(path)
    assert cfg.DATASETS.CLASS_MODE == "benign_malignant"
    assert "CLASS_MODE" not in cfg.DATASETS.BUSI and "CLASS_MODE" not in cfg.DATASETS.HOSPITAL


def test_old_class_modes_that_differ_are_an_error_naming_both(tmp_path):
    path = write(tmp_path, "DATASETS:\n  BUSI:\n    CLASS_MODE: lesion\n"
                           "  HOSPITAL:\n    CLASS_MODE: benign_malignant\n")
    with pytest.raises(ValueError, match="old.yaml: DATASETS.BUSI.CLASS_MODE.*DATASETS.HOSPITAL.CLASS_MODE"):
        merged_config(path)
    with pytest.raises(ValueError, match="DATASETS.BUSI.CLASS_MODE.*DATASETS.CLASS_MODE"):
        merged_config("", ["DATASETS.BUSI.CLASS_MODE", "lesion", "DATASETS.CLASS_MODE", "benign_malignant"])


def test_an_old_key_later_on_the_command_line_overrides_the_file(tmp_path):
    cfg = merged_config(write(tmp_path, "DATASETS:\n  CLASS_MODE: benign_malignant\n"),
                        ["DATASETS.HOSPITAL.CLASS_MODE", "lesion"])
    assert cfg.DATASETS.CLASS_MODE == "lesion"


def test_unknown_keys_are_still_refused():
    with pytest.raises(AssertionError, match="Non-existent key: DATASETS.NO_SUCH_KEY"):  # yacs' check
        merged_config("", ["DATASETS.NO_SUCH_KEY", "1"])
