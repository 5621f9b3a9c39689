"""The dataset-dict fields ustumor adds to Detectron2's, in one place.

Loaders (BUSI, hospital CSV, COCO json) write them; the split, the mapper, the evaluation
suite, the picture tools and the report read them. Detectron2's own fields
(``file_name``, ``height``, ``width``, ``image_id``, ``annotations``) keep their meaning.

=================  ==========================================================  =====================
field              meaning                                                     written by
=================  ==========================================================  =====================
``patient_id``     the patient (hospital CSV: ``coded_mrn``)                   hospital, COCO
``accession``      the study (hospital CSV: ``coded_accession``)               hospital, COCO
``clip_id``        the cine clip (hospital CSV: ``video_id``)                  hospital, COCO
``frame_id``       the frame's number within its clip, as the source numbers   hospital, COCO
                   it (hospital CSV: ``frame_id``)
``dicom_frame``    0-based index of the frame inside a multi-frame DICOM       hospital, COCO
                   ``file_name``; absent for single-image files
``group_id``       the unit the split keeps whole: BUSI's near-duplicate       split
                   group, the hospital's patient
``split``          ``train``, ``val`` or ``test``                              split
``diagnosis``      ``benign``, ``malignant``, ``normal``, or ``""`` unknown    BUSI (folder), hospital
                   (image-level, whatever ``CLASS_MODE`` the boxes use)        (``First 50`` B/M)
=================  ==========================================================  =====================

Evaluation aggregates frames per ``patient_id`` (``patient_level``) and per ``clip_id``
(``clip_level``); tools read a frame through :func:`ustumor.data.image_io.read_dataset_frame`,
which honours ``dicom_frame``.
"""

PATIENT_ID = "patient_id"
ACCESSION = "accession"
CLIP_ID = "clip_id"
FRAME_ID = "frame_id"
DICOM_FRAME = "dicom_frame"
GROUP_ID = "group_id"
SPLIT = "split"
DIAGNOSIS = "diagnosis"

DIAGNOSES = ("benign", "malignant", "normal")

# Identity and grouping fields, in the order reports show them.
IDENTITY_FIELDS = (PATIENT_ID, ACCESSION, CLIP_ID, FRAME_ID, DICOM_FRAME)
# Every field above: what an image record carries from its dataset dict into evaluation,
# and what a COCO export keeps per image.
ALL_FIELDS = IDENTITY_FIELDS + (GROUP_ID, SPLIT, DIAGNOSIS)

# Names written by ustumor before these fields were unified (COCO exports, user code).
LEGACY_NAMES = {"video_id": CLIP_ID, "busi_class": DIAGNOSIS}


def with_current_names(record):
    """``record`` with legacy field names (:data:`LEGACY_NAMES`) renamed; a copy if any was."""
    legacy = [name for name in LEGACY_NAMES if name in record]
    if not legacy:
        return record
    record = dict(record)
    for name in legacy:
        value = record.pop(name)
        record.setdefault(LEGACY_NAMES[name], value)
    return record


def frame_in_file(record):
    """The frame number that tells apart the frames of one multi-frame file (``frame_id``,
    else ``dicom_frame``); None for a single-image file."""
    if record.get(DICOM_FRAME) is None:
        return None
    return record.get(FRAME_ID, record[DICOM_FRAME])


def describe_frame(record):
    """``file_name``, with the frame for a frame of a multi-frame file: for messages."""
    frame = frame_in_file(record)
    return record["file_name"] if frame is None else f"{record['file_name']} (frame {frame})"
