"""COCO json: export any registered dataset, register COCO files from the config, round trip."""
import json
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from pycocotools.coco import COCO

from conftest import load_tool
from hospital_data import synthetic_hospital
from ustumor.data.datasets.coco import export_coco_json
from ustumor.data.fields import CLIP_ID, DIAGNOSIS, FRAME_ID, PATIENT_ID, SPLIT
from ustumor.data.datasets.hospital import register_hospital_dataset
from ustumor.data.image_io import read_frame_grey, read_grey
from ustumor.engine.defaults import build_config


@pytest.fixture(scope="module")
def hospital_name():
    folder, _ = synthetic_hospital()
    register_hospital_dataset("cocohosp", os.path.join(folder, "annotations.csv"))
    return "cocohosp_all"


def xyxy_boxes(record):
    return sorted(BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS)
                  for a in record["annotations"])


def test_export_is_valid_coco_with_the_same_boxes(tmp_path, hospital_name):
    out = str(tmp_path / "hosp.json")
    summary = export_coco_json(hospital_name, out)
    dicts = DatasetCatalog.get(hospital_name)
    coco = COCO(out)  # pycocotools accepts it
    assert summary["images"] == len(coco.getImgIds()) == len(dicts)
    assert [c["id"] for c in coco.loadCats(coco.getCatIds())] == [1]  # COCO's 1-based ids
    for image in coco.loadImgs(coco.getImgIds()):
        assert isinstance(image["id"], int)
        record = next(d for d in dicts if d["image_id"] == image["source_image_id"])
        assert image["patient_id"] == record["patient_id"] and image["frame_id"] == record["frame_id"]
        assert image["split"] == record["split"]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        got = sorted([a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                     for a in anns)
        assert np.allclose(got, xyxy_boxes(record)) if anns else not record["annotations"]


def test_coco_json_registered_from_the_config_round_trips(tmp_path, hospital_name):
    folder, _ = synthetic_hospital()
    out = str(tmp_path / "hosp.json")
    export_coco_json(hospital_name, out, relative_to=folder, frames_dir=str(tmp_path / "frames"))
    names = json.load(open(out))["images"]
    assert not any(os.path.isabs(i["file_name"]) for i in names)
    build_config("", ["DATASETS.COCO", f'[["hosp_coco", "{out}", "{folder}"]]'])
    original = {d["image_id"]: d for d in DatasetCatalog.get(hospital_name)}
    loaded = DatasetCatalog.get("hosp_coco")
    assert MetadataCatalog.get("hosp_coco").thing_classes == ["lesion"]  # set by Detectron2 on loading
    assert len(loaded) == len(original)
    images = {i["id"]: i for i in names}
    for record in loaded:
        source = original[images[record["image_id"]]["source_image_id"]]
        if source["annotations"]:
            assert np.allclose(xyxy_boxes(record), xyxy_boxes(source))
        else:
            assert not record["annotations"]
        assert os.path.isfile(record["file_name"])
        # the ustumor fields come back with the COCO images (Detectron2's loader alone drops them)
        for key in (PATIENT_ID, CLIP_ID, FRAME_ID, SPLIT, DIAGNOSIS):
            assert record[key] == source[key], key
        if "dicom_frame" in source:  # DICOM frames were written out as PNG for COCO tools
            assert np.array_equal(read_grey(record["file_name"]),
                                  read_frame_grey(source["file_name"], source["dicom_frame"]))
    # exporting the COCO dataset again keeps its ids
    again = str(tmp_path / "again.json")
    export_coco_json("hosp_coco", again)
    assert [c["id"] for c in json.load(open(again))["categories"]] == [1]
    assert sorted(i["id"] for i in json.load(open(again))["images"]) == sorted(images)


def test_coco_files_written_with_the_old_field_names_still_load(tmp_path, hospital_name):
    folder, _ = synthetic_hospital()
    out = str(tmp_path / "old.json")
    export_coco_json(hospital_name, out, relative_to=folder)
    coco = json.load(open(out))
    for image in coco["images"]:
        image["video_id"] = image.pop(CLIP_ID)
    json.dump(coco, open(out, "w"))
    build_config("", ["DATASETS.COCO", f'[["hosp_coco_old", "{out}", "{folder}"]]'])
    loaded = DatasetCatalog.get("hosp_coco_old")
    assert all(record[CLIP_ID] and "video_id" not in record for record in loaded)


def test_coco_names_may_not_replace_other_datasets(tmp_path, hospital_name):
    out = str(tmp_path / "x.json")
    export_coco_json(hospital_name, out)
    with pytest.raises(ValueError, match="already registered"):
        build_config("", ["DATASETS.COCO", f'[["{hospital_name}", "{out}", "/"]]'])
    with pytest.raises(ValueError, match=r"\[name, json_file, image_root\]"):
        build_config("", ["DATASETS.COCO", '["just_a_name"]'])


def test_export_tool(tmp_path, capsys, hospital_name):
    out = str(tmp_path / "tool.json")
    assert load_tool("export_coco").main([hospital_name, out, "--opts", "DATASETS.SPLIT.SEED", "0"]) == 0
    assert f"-> {out}" in capsys.readouterr().out
    assert len(COCO(out).getImgIds()) == len(DatasetCatalog.get(hospital_name))
    assert load_tool("export_coco").main(["no_such_dataset", out]) == 1
