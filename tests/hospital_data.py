"""Shared helpers of the hospital tests: one synthetic hospital export per test process."""
import atexit
import csv
import functools
import os
import shutil
import tempfile


# The hospital CSV's header line, verbatim: the format every hospital CSV must keep.
CSV_HEADER = ",coded_mrn,coded_accession,video_id,frame_id,image_path,bounding box,Final Diagnosis," \
             "Bx Site,Final Diagnosis.1,First 50"


@functools.lru_cache(maxsize=1)
def synthetic_hospital():
    """(UCLA folder, manifest) of a synthetic export: 8 patients, 10 clips of 3 frames,
    one clip zipped, one nested, one also as a multi-frame DICOM. Read-only for tests."""
    from ustumor.synthetic.hospital import write_synthetic_hospital

    root = tempfile.mkdtemp(prefix="ustumor_hospital_")
    atexit.register(shutil.rmtree, root, True)
    folder = os.path.join(root, "UCLA")
    manifest = write_synthetic_hospital(folder, num_patients=8, frames_per_clip=3, seed=0)
    return folder, manifest


def clip_of(manifest, **conditions):
    return next(c for c in manifest["clips"] if all(c[k] == v for k, v in conditions.items()))


def write_csv_rows(path, rows, header=CSV_HEADER, encoding="utf-8"):
    """Rows as lists of the 10 data columns (the counter is added) under the hospital CSV's header."""
    with open(path, "w", newline="", encoding=encoding) as f:
        f.write(header + "\r\n")
        writer = csv.writer(f)
        for counter, row in enumerate(rows):
            writer.writerow([counter] + list(row))
    return path


def csv_row(image_path, box="[]", frame_id=0, patient="P1", video="P1_A1_1.mp4-x-labelme 3.0.zip",
            accession="A1", diagnosis="B"):
    return [patient, accession, video, frame_id, image_path, box, "Fibroadenoma", "Left 2:00", "Fibroadenoma",
            diagnosis]
