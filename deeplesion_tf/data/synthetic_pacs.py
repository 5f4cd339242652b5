"""The synthetic PACS: phantom patients as CT DICOM, a bookmark export and the truth.

The project's default data source. Every patient is an analytic torso
(`phantom`) with lesions of the five categories of the paper's Table 1 planted
in their organs; some are bookmarked (measured with a long and a short axis, as
radiologists do), some are not (the paper's missing annotations), a few
bookmarks are deliberately wrong (the release's `Possibly_noisy`).

What each patient, study, series and lesion is, is decided in `synthetic_plan`
(`plan_patient`, `patient_splits`, imported here for callers of this module);
this module renders the planned series, writes them as DICOM (and release
PNGs), writes the CSVs, and runs the patients in worker processes.

Layout under `output_dir`:

    dicom/<PatientID>/study<k>/series<j>/<InstanceNumber:04d>.dcm
    bookmarks.csv     one row per bookmark, as a PACS export (0-based pixels)
    sr/<PatientID>/study<k>.dcm   the same bookmarks as DICOM SR (TID 1500), one
                      report per study with bookmarks
    truth.csv         every planted lesion, for evaluation only
    Images_png/<pp>_<ss>_<se>/<nnn>.png, DL_info.csv   (write_release only)

Indices: patients, studies and series are 1-based (as in the release);
`slice_index` is 0-based within a series, slice 0 the most superior; the
release's slice number is the DICOM InstanceNumber. Boxes are
`[ymin, xmin, ymax, xmax]` in 0-based pixels.

Output is a function of `(seed, num_patients, image_size, write_release)`
only: each patient draws from `SeedSequence([seed, patient_index])`, rows are
sorted before writing, and no wall-clock time is recorded anywhere.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import multiprocessing
import os
import pathlib
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import pydicom
from absl import logging
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from tqdm import tqdm

from deeplesion_tf.data import bookmarks
from deeplesion_tf.data import lesion_categories
from deeplesion_tf.data import pacs_source
from deeplesion_tf.data import phantom
from deeplesion_tf.data import png16
from deeplesion_tf.data import release_format
from deeplesion_tf.data import sr_bookmarks
from deeplesion_tf.data.synthetic_plan import (NOISE_TAG, PatientPlan, PlannedLesion, SeriesPlan,
                                               StudyPlan, item_rng, patient_splits, plan_patient,
                                               sop_instance_uid)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"

BOOKMARK_COLUMNS = ("lesion_id", "accession_number", "study_instance_uid",
                    "series_instance_uid", "sop_instance_uid",
                    "relative_path") + bookmarks.COORDINATE_NAMES
TRUTH_COLUMNS = (
    "lesion_id", "category", "category_name", "short_name", "site", "coarse_type",
    "patient_index", "study_index", "series_index", "slice_index", "instance_number",
    "relative_path", "release_file_name", "ymin", "xmin", "ymax", "xmax",
    "long_diameter_mm", "short_diameter_mm", "bookmarked", "noisy",
)


# ----------------------------------------------------------------------------
# Rendering and writing one patient.


def render_series_hu(plan: PatientPlan, study: StudyPlan) -> np.ndarray:
    """The series' slices as stored: `[num_slices, H, W]` int16 HU, noise included."""
    series = study.series
    lesions = [p.lesion for p in series.lesions]
    slices = []
    for i, z in enumerate(series.z_mm):
        rendered = phantom.render_slice(plan.anatomy, lesions, z, plan.grid)
        rng = item_rng(plan.seed, plan.patient_index, NOISE_TAG, study.study_index, i)
        noise = phantom.correlated_noise(rendered.hu.shape, series.noise_hu, rng)
        slices.append(phantom.to_stored_hu(rendered.hu + noise))
    return np.stack(slices)


def dicom_relative_path(plan: PatientPlan, study: StudyPlan, slice_index: int) -> str:
    """`dicom/<PatientID>/study<k>/series<j>/<InstanceNumber:04d>.dcm` (POSIX separators)."""
    series = study.series
    return (f"dicom/{plan.patient_id}/study{study.study_index}/series{series.series_index}/"
            f"{series.instance_number(slice_index):04d}.dcm")


def _ds(value: float) -> str:
    """A decimal string short enough for DICOM's DS (16 characters)."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text if text not in ("-0", "") else "0"


def _dicom_dataset(plan: PatientPlan, study: StudyPlan, slice_index: int,
                   hu: np.ndarray) -> Dataset:
    """A CT Image Storage dataset for one slice (`hu` int16 `[H, W]`)."""
    series = study.series
    grid = plan.grid
    sop_uid = sop_instance_uid(plan, study, slice_index)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    for prefix in ("Study", "Series", "Acquisition", "Content"):
        setattr(ds, f"{prefix}Date", study.date)
        setattr(ds, f"{prefix}Time", study.time)
    ds.AccessionNumber = study.accession_number
    ds.Modality = "CT"
    ds.Manufacturer = "deeplesion-tf synthetic PACS"
    ds.InstitutionName = "SYNTHETIC GENERAL HOSPITAL"
    ds.ReferringPhysicianName = ""
    contrast = "W CONTRAST" if plan.anatomy.contrast else "WO CONTRAST"
    ds.StudyDescription = f"CT CHEST ABDOMEN PELVIS {contrast}"
    ds.SeriesDescription = f"{series.body_part} AXIAL {series.interval_mm:g} MM"
    ds.PatientName = plan.name
    ds.PatientID = plan.patient_id
    ds.PatientBirthDate = plan.birth_date
    ds.PatientSex = plan.sex
    ds.PatientAge = f"{study.age_years:03d}Y"
    ds.BodyPartExamined = series.body_part
    ds.SliceThickness = _ds(series.interval_mm)
    ds.KVP = "120"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = series.series_uid
    ds.StudyID = str(study.study_index)
    ds.SeriesNumber = series.series_index
    ds.InstanceNumber = series.instance_number(slice_index)
    z = series.z_mm[slice_index]
    ds.ImagePositionPatient = [_ds(grid.x0_mm), _ds(grid.y0_mm), _ds(z)]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = series.frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = _ds(z)
    _set_pixels(ds, series, grid, hu)
    return ds


def _set_pixels(ds: Dataset, series: SeriesPlan, grid: phantom.SliceGrid, hu: np.ndarray) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = grid.size
    ds.PixelSpacing = [_ds(grid.spacing_mm), _ds(grid.spacing_mm)]
    ds.BitsAllocated = 16
    if series.unsigned:
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
        ds.RescaleIntercept = "-1024"
        stored = (hu.astype(np.int32) + 1024).astype("<u2")
    else:
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 15, 1
        ds.RescaleIntercept = "0"
        stored = hu.astype("<i2")
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = [_ds(c) for c, _ in series.windows]
    ds.WindowWidth = [_ds(w) for _, w in series.windows]
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"


class _PatientRows(NamedTuple):
    """What one patient contributes to the CSVs and the summary."""

    truth: List[Dict[str, object]]
    bookmarks: List[Dict[str, object]]
    release: List[Dict[str, object]]
    num_studies: int
    num_slices: int


def _truth_row(plan: PatientPlan, study: StudyPlan, planned: PlannedLesion) -> Dict[str, object]:
    series = study.series
    site = phantom.SITES[planned.lesion.site]
    z = series.z_mm[planned.slice_index]
    outline = phantom.lesion_outline(planned.lesion, z)
    cols, rows = plan.grid.to_pixels(outline[:, 0], outline[:, 1])
    section = planned.lesion.cross_section(z)
    instance = series.instance_number(planned.slice_index)
    return {
        "lesion_id": planned.lesion_id,
        "category": site.category.id,
        "category_name": site.category.name,
        "short_name": site.category.short_name,
        "site": site.name,
        "coarse_type": site.coarse_type,
        "patient_index": plan.patient_index,
        "study_index": study.study_index,
        "series_index": series.series_index,
        "slice_index": planned.slice_index,
        "instance_number": instance,
        "relative_path": dicom_relative_path(plan, study, planned.slice_index),
        "release_file_name": release_format.key_slice_file_name(
            plan.patient_index, study.study_index, series.series_index, instance),
        "ymin": round(float(rows.min()), 3),
        "xmin": round(float(cols.min()), 3),
        "ymax": round(float(rows.max()), 3),
        "xmax": round(float(cols.max()), 3),
        "long_diameter_mm": round(2.0 * section.a, 2),
        "short_diameter_mm": round(2.0 * section.b, 2),
        "bookmarked": int(planned.bookmarked),
        "noisy": int(planned.noisy),
    }


def _bookmark_row(plan: PatientPlan, study: StudyPlan, planned: PlannedLesion) -> Dict[str, object]:
    row = {
        "lesion_id": planned.lesion_id,
        "accession_number": study.accession_number,
        "study_instance_uid": study.study_uid,
        "series_instance_uid": study.series.series_uid,
        "sop_instance_uid": sop_instance_uid(plan, study, planned.slice_index),
        "relative_path": dicom_relative_path(plan, study, planned.slice_index),
    }
    row.update(zip(bookmarks.COORDINATE_NAMES, planned.coords))
    return row


def _normalized_location(anatomy: phantom.Anatomy, lesion: phantom.Lesion, z: float
                         ) -> Tuple[float, float, float]:
    """x, y within the body's extent on the key slice; z from the perineum (0) to the apex (1)."""
    xmin, xmax, ymin, ymax = phantom.body_extent(anatomy, z)
    x, y, _ = lesion.center_mm
    return ((x - xmin) / (xmax - xmin), (y - ymin) / (ymax - ymin),
            (z - phantom.Z_BOTTOM_MM) / (phantom.Z_TOP_MM - phantom.Z_BOTTOM_MM))


def _release_row(plan: PatientPlan, study: StudyPlan, planned: PlannedLesion) -> Dict[str, object]:
    """A `DL_info.csv` row without the split-dependent columns (filled in later)."""
    series = study.series
    grid = plan.grid
    instance = series.instance_number(planned.slice_index)
    spacing = (grid.spacing_mm, grid.spacing_mm)
    geometry = bookmarks.measure(
        bookmarks.Bookmark(planned.lesion_id, planned.coords, grid.size, grid.size, spacing),
        padding=bookmarks.RELEASE_PADDING_PX)
    center, width = series.windows[0]
    z = series.z_mm[planned.slice_index]
    fmt = release_format.format_numbers
    return {
        "File_name": release_format.key_slice_file_name(
            plan.patient_index, study.study_index, series.series_index, instance),
        "Patient_index": plan.patient_index,
        "Study_index": study.study_index,
        "Series_ID": series.series_index,
        "Key_slice_index": instance,
        "Measurement_coordinates": fmt(bookmarks.to_release_coordinates(planned.coords)),
        "Bounding_boxes": fmt(bookmarks.box_to_release(geometry.box)),
        "Lesion_diameters_Pixel_": fmt((geometry.long_diameter_px, geometry.short_diameter_px)),
        "Normalized_lesion_location": fmt(_normalized_location(plan.anatomy, planned.lesion, z)),
        "Coarse_lesion_type": phantom.SITES[planned.lesion.site].coarse_type,
        "Possibly_noisy": int(planned.noisy),
        "Slice_range": fmt((series.instance_number(0),
                            series.instance_number(len(series.z_mm) - 1))),
        "Spacing_mm_px_": fmt((grid.spacing_mm, grid.spacing_mm, series.interval_mm)),
        "Image_size": fmt((grid.size, grid.size)),
        "DICOM_windows": fmt((center - width / 2.0, center + width / 2.0)),
        "Patient_gender": plan.sex,
        "Patient_age": study.age_years,
        "Train_Val_Test": 0,
        "_lesion_id": planned.lesion_id,
    }


class _WrittenSeries(NamedTuple):
    num_slices: int
    key_slices: Dict[int, Dataset]  # slice index -> dataset, the slices with a bookmark


def _write_series(plan: PatientPlan, study: StudyPlan, output_dir: pathlib.Path,
                  write_release: bool) -> _WrittenSeries:
    """Writes the series' DICOM files (and release PNGs)."""
    series = study.series
    stored = render_series_hu(plan, study)
    folder = release_format.series_folder(plan.patient_index, study.study_index,
                                          series.series_index)
    marked = {p.slice_index for p in series.lesions if p.bookmarked}
    key_slices = {}
    for i in range(len(series.z_mm)):
        path = output_dir / dicom_relative_path(plan, study, i)
        path.parent.mkdir(parents=True, exist_ok=True)
        dataset = _dicom_dataset(plan, study, i, stored[i])
        dataset.save_as(path, enforce_file_format=True)
        if i in marked:
            key_slices[i] = dataset
        if write_release:
            png = output_dir / "Images_png" / folder / release_format.slice_file(
                series.instance_number(i))
            png.parent.mkdir(parents=True, exist_ok=True)
            png.write_bytes(png16.encode_hu(stored[i]))
    return _WrittenSeries(len(series.z_mm), key_slices)


class _Job(NamedTuple):
    seed: int
    patient_index: int
    image_size: int
    output_dir: str
    write_release: bool


def _generate_patient(job: _Job) -> _PatientRows:
    """Plans, renders and writes one patient (runs in a worker process)."""
    plan = plan_patient(job.seed, job.patient_index, job.image_size)
    output_dir = pathlib.Path(job.output_dir)
    rows = _PatientRows([], [], [], len(plan.studies), 0)
    num_slices = 0
    for study in plan.studies:
        written = _write_series(plan, study, output_dir, job.write_release)
        num_slices += written.num_slices
        for planned in study.series.lesions:
            rows.truth.append(_truth_row(plan, study, planned))
            if planned.bookmarked:
                rows.bookmarks.append(_bookmark_row(plan, study, planned))
                rows.release.append(_release_row(plan, study, planned))
        _write_report(plan, study, written.key_slices, output_dir)
    return rows._replace(num_slices=num_slices)


def report_relative_path(plan: PatientPlan, study: StudyPlan) -> str:
    """Where a study's measurement report lies: `sr/` mirrors the DICOM tree's study folders."""
    study_folder = pathlib.PurePosixPath(dicom_relative_path(plan, study, 0)).parent.parent
    return f"{pacs_source.REPORTS_FOLDER}/{study_folder.relative_to('dicom')}.dcm"


def _write_report(plan: PatientPlan, study: StudyPlan, key_slices: Dict[int, Dataset],
                  output_dir: pathlib.Path) -> None:
    """The study's bookmarks as a TID 1500 SR, as a standards-based PACS keeps them.

    The same measurements as `bookmarks.csv` (in its order: by lesion id), so a `pacs`
    build from either gives the same dataset; dated as the study, so the file is a
    function of the seed like the rest of the PACS.
    """
    marked = sorted((p for p in study.series.lesions if p.bookmarked), key=lambda p: p.lesion_id)
    if not marked:
        return
    when = datetime.datetime.strptime(study.date + study.time[:6], "%Y%m%d%H%M%S")
    report = sr_bookmarks.measurement_report(
        [key_slices[i] for i in dict.fromkeys(p.slice_index for p in marked)],
        [(p.lesion_id, sop_instance_uid(plan, study, p.slice_index), p.coords) for p in marked],
        series_instance_uid=pydicom.uid.generate_uid(entropy_srcs=[study.study_uid, "sr series"]),
        sop_instance_uid=pydicom.uid.generate_uid(entropy_srcs=[study.study_uid, "sr"]),
        when=when)
    path = output_dir / report_relative_path(plan, study)
    path.parent.mkdir(parents=True, exist_ok=True)
    report.save_as(path, enforce_file_format=True)


# ----------------------------------------------------------------------------
# The whole PACS.


@dataclasses.dataclass(frozen=True)
class PacsSummary:
    """Counts of what `make_synthetic_pacs` wrote.

    Attributes:
      output_dir: where.
      num_patients, num_studies, num_series, num_slices: the DICOM tree.
      num_lesions: planted lesions (`truth.csv` rows).
      lesions_per_category: `{category id: count}` over all planted lesions.
      num_bookmarks: bookmarked lesions (`bookmarks.csv` rows).
      num_unbookmarked: planted lesions without a bookmark.
      num_noisy: bookmarks deliberately off their lesion.
    """

    output_dir: str
    num_patients: int
    num_studies: int
    num_series: int
    num_slices: int
    num_lesions: int
    lesions_per_category: Dict[int, int]
    num_bookmarks: int
    num_unbookmarked: int
    num_noisy: int


def _write_csv(path: pathlib.Path, columns: Sequence[str],
               rows: Iterable[Dict[str, object]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), lineterminator="\n",
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _run_jobs(jobs: Sequence[_Job], num_workers: int) -> List[_PatientRows]:
    progress = dict(total=len(jobs), desc="patients", unit="patient")
    if num_workers == 1:
        return [_generate_patient(job) for job in tqdm(jobs, **progress)]
    # Spawned workers: forking a process that may hold TensorFlow's threads is unsafe.
    context = multiprocessing.get_context("spawn")
    with context.Pool(min(num_workers, len(jobs))) as pool:
        return list(tqdm(pool.imap(_generate_patient, jobs), **progress))


def _check_output_dir(output_dir: pathlib.Path) -> None:
    if output_dir.exists() and any(output_dir.iterdir()):
        # Leftovers of an earlier run would make the tree depend on history.
        raise FileExistsError(f"{output_dir} is not empty; choose a new or empty directory")
    output_dir.mkdir(parents=True, exist_ok=True)


def make_synthetic_pacs(output_dir: os.PathLike | str, num_patients: int, seed: int,
                        image_size: int = 512, write_release: bool = False,
                        num_workers: Optional[int] = None) -> PacsSummary:
    """Generates patients and writes the PACS (and, optionally, the NIH release layout).

    Args:
      output_dir: a new or empty directory.
      num_patients: how many patients (indices 1..num_patients).
      seed: the seed; the same seed gives byte-identical files.
      image_size: rows = columns of every slice.
      write_release: also write `Images_png/` and `DL_info.csv`.
      num_workers: processes; None uses every core. The output does not depend on it.

    Returns:
      A `PacsSummary`.

    Raises:
      ValueError: a non-positive count or size.
      FileExistsError: `output_dir` holds files.
    """
    if num_patients < 1 or image_size < 32:
        raise ValueError(f"need num_patients >= 1 and image_size >= 32, got "
                         f"{num_patients} and {image_size}")
    num_workers = num_workers or os.cpu_count() or 1
    output = pathlib.Path(output_dir)
    _check_output_dir(output)
    jobs = [_Job(seed, i, image_size, str(output), write_release)
            for i in range(1, num_patients + 1)]
    results = _run_jobs(jobs, num_workers)
    truth = sorted((r for p in results for r in p.truth), key=lambda r: r["lesion_id"])
    marks = sorted((r for p in results for r in p.bookmarks), key=lambda r: r["lesion_id"])
    _write_csv(output / "bookmarks.csv", BOOKMARK_COLUMNS, marks)
    _write_csv(output / "truth.csv", TRUTH_COLUMNS, truth)
    if write_release:
        _write_dl_info(output / "DL_info.csv", [r for p in results for r in p.release],
                       patient_splits(num_patients, seed))
    summary = _summarize(str(output), results, truth)
    _log_summary(summary)
    return summary


def _write_dl_info(path: pathlib.Path, rows: List[Dict[str, object]],
                   splits: Dict[int, int]) -> None:
    for row in rows:
        row["Train_Val_Test"] = splits[int(row["Patient_index"])]
        if row["Train_Val_Test"] == 1:  # as in the release: no type for training rows
            row["Coarse_lesion_type"] = release_format.UNKNOWN_COARSE_TYPE
    rows.sort(key=lambda r: (r["File_name"], r["_lesion_id"]))
    _write_csv(path, release_format.DL_INFO_COLUMNS, rows)


def _summarize(output_dir: str, results: Sequence[_PatientRows],
               truth: Sequence[Dict[str, object]]) -> PacsSummary:
    per_category = {c.id: 0 for c in lesion_categories.CATEGORIES}
    for row in truth:
        per_category[int(row["category"])] += 1
    num_bookmarks = sum(int(r["bookmarked"]) for r in truth)
    num_studies = sum(p.num_studies for p in results)
    return PacsSummary(
        output_dir=output_dir,
        num_patients=len(results),
        num_studies=num_studies,
        num_series=num_studies,
        num_slices=sum(p.num_slices for p in results),
        num_lesions=len(truth),
        lesions_per_category=per_category,
        num_bookmarks=num_bookmarks,
        num_unbookmarked=len(truth) - num_bookmarks,
        num_noisy=sum(int(r["noisy"]) for r in truth),
    )


def _log_summary(summary: PacsSummary) -> None:
    per_category = ", ".join(
        f"{lesion_categories.CATEGORIES_BY_ID[c].short_name} {n}"
        for c, n in summary.lesions_per_category.items())
    logging.info(
        "Synthetic PACS in %s: %d patients, %d studies, %d series, %d slices; "
        "%d lesions (%s); %d bookmarked, %d unbookmarked, %d noisy.",
        summary.output_dir, summary.num_patients, summary.num_studies, summary.num_series,
        summary.num_slices, summary.num_lesions, per_category, summary.num_bookmarks,
        summary.num_unbookmarked, summary.num_noisy)
