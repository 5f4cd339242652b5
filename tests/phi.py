"""The PHI scan: every identifying value of some DICOMs, looked for in what we wrote."""

import pathlib

import pydicom

# Tags that identify a patient or a study, and the DICOM UIDs.
IDENTIFYING_TAGS = ("PatientName", "PatientID", "OtherPatientIDs", "PatientBirthDate",
                    "AccessionNumber", "StudyInstanceUID", "SeriesInstanceUID",
                    "SOPInstanceUID", "FrameOfReferenceUID", "MediaStorageSOPInstanceUID")


def identifiers(root) -> set:
    """Every identifying value in the DICOMs under `root` (names also as their parts)."""
    values = set()
    for path in pathlib.Path(root).rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for tag in IDENTIFYING_TAGS:
            value = ds.get(tag) or ds.file_meta.get(tag)
            if value:
                values.add(str(value))
        name = str(ds.get("PatientName", ""))
        if name:
            values.add(name.replace("^", " "))
            # Short parts ("LI") could occur by chance in compressed pixels.
            values.update(part for part in name.split("^") if len(part) >= 4)
    return values


def assert_absent(identifying: set, texts: dict) -> None:
    """No identifier in any of `texts` ({where: str or bytes})."""
    for where, text in texts.items():
        blob = text.encode() if isinstance(text, str) else text
        for identifier in identifying:
            assert identifier.encode() not in blob, f"{identifier} found in {where}"
