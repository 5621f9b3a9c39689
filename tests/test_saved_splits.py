"""DATASETS.SPLIT.FILE/FILES: earlier runs' split files pin the splits of several datasets at
once (a joint BUSI-layout + hospital run), each file matched to its dataset by name."""
import json
import os

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from hospital_data import synthetic_hospital
from ustumor.data.splits import save_splits_of
from ustumor.synthetic import write_phantom_dataset
from ustumor.engine.defaults import build_config


@pytest.fixture
def two_datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("USTUMOR_DATASETS", str(tmp_path / "datasets"))
    write_phantom_dataset(str(tmp_path / "datasets" / "phantom"), num_images=12, seed=0, image_size=(64, 80))
    folder, _ = synthetic_hospital()
    register = ["DATASETS.HOSPITAL.REGISTER", f'[["hosp", "{os.path.join(folder, "annotations.csv")}", ""]]']
    build_config("", register)
    written = save_splits_of(["phantom_train", "hosp_train"], str(tmp_path / "splits"))
    yield register, {json.load(open(path))["dataset"]: path for path in written}
    for name in [n for n in DatasetCatalog.list() if n.split("_")[0] in ("phantom", "hosp")]:
        DatasetCatalog.remove(name)  # they point into tmp_path
        MetadataCatalog.remove(name)


def edited_copy(path, edit, out):
    split = json.load(open(path))
    edit(split)
    with open(out, "w") as f:
        json.dump(split, f)
    return str(out)


def test_each_dataset_takes_its_own_saved_split(two_datasets, tmp_path):
    register, saved = two_datasets
    phantom_split, hospital_split = json.load(open(saved["phantom"])), json.load(open(saved["hosp"]))
    image = next(i for i, name in phantom_split["assignment"].items() if name == "train")
    patient = next(p for p, name in hospital_split["patients"].items() if name == "train")

    def move_image(split):
        split["assignment"][image] = "test"

    def move_patient(split):
        split["patients"][patient] = "test"

    files = [edited_copy(saved["phantom"], move_image, tmp_path / "a.json"),
             edited_copy(saved["hosp"], move_patient, tmp_path / "b.json")]
    # before: computed splits put both in train
    assert image not in {d["image_id"] for d in DatasetCatalog.get("phantom_test")}
    assert patient not in {d["patient_id"] for d in DatasetCatalog.get("hosp_test")}
    build_config("", register + ["DATASETS.SPLIT.FILES", json.dumps(files)])
    assert image in {d["image_id"] for d in DatasetCatalog.get("phantom_test")}
    assert image not in {d["image_id"] for d in DatasetCatalog.get("phantom_train")}
    assert patient in {d["patient_id"] for d in DatasetCatalog.get("hosp_test")}
    assert patient not in {d["patient_id"] for d in DatasetCatalog.get("hosp_train")}
    # FILE and FILES together, as an older config plus a new entry
    build_config("", register + ["DATASETS.SPLIT.FILE", files[0], "DATASETS.SPLIT.FILES", json.dumps(files[1:])])
    assert image in {d["image_id"] for d in DatasetCatalog.get("phantom_test")}
    assert patient in {d["patient_id"] for d in DatasetCatalog.get("hosp_test")}


def test_two_files_for_one_dataset_or_a_file_for_none_are_errors(two_datasets, tmp_path):
    register, saved = two_datasets
    copy = edited_copy(saved["phantom"], lambda split: None, tmp_path / "copy.json")
    with pytest.raises(ValueError, match="all split 'phantom'"):
        build_config("", register + ["DATASETS.SPLIT.FILES", json.dumps([saved["phantom"], copy])])

    def rename(split):
        split["dataset"] = "elsewhere"

    orphan = edited_copy(saved["phantom"], rename, tmp_path / "orphan.json")
    with pytest.raises(ValueError, match=f"{orphan} holds a split of 'elsewhere', which is not registered"):
        build_config("", register + ["DATASETS.SPLIT.FILE", orphan])
