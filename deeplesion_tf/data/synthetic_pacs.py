"""The synthetic PACS: phantom patients as CT DICOM, a bookmark export and the truth.

The project's default data source. Every patient is an analytic torso
(`phantom`) with lesions of the five categories of the paper's Table 1 planted
in their organs; some are bookmarked (measured with a long and a short axis, as
radiologists do), some are not (the paper's missing annotations), a few
bookmarks are deliberately wrong (the release's `Possibly_noisy`).

Layout under `output_dir`:

    dicom/<PatientID>/study<k>/series<j>/<InstanceNumber:04d>.dcm
    bookmarks.csv     one row per bookmark, as a PACS export (0-based pixels)
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
import math
import multiprocessing
import os
import pathlib
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from absl import logging
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from tqdm import tqdm

from deeplesion_tf.data import bookmarks
from deeplesion_tf.data import lesion_categories
from deeplesion_tf.data import phantom
from deeplesion_tf.data import png16
from deeplesion_tf.data import release_format

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

# Rates of the PACS's imperfections (per series, per key slice, per bookmark).
SHARED_KEY_SLICE_RATE = 0.15
UNBOOKMARKED_RATE = 0.30
NOISY_RATE = 0.03
SECOND_KEY_SLICE_RATE = 0.35
THIN_SLICE_RATE = 0.2  # 2.5 mm instead of 5 mm
EDGE_KEY_SLICE_RATE = 0.1
MEASUREMENT_NOISE_PX = 0.5

# Sites of each category's primary lesions, with their odds.
_PRIMARY_SITES = {
    1: (("liver",), (1.0,)),
    2: (("lung",), (1.0,)),
    3: (("kidney", "abdominal node"), (0.5, 0.5)),
    4: (("mediastinum",), (1.0,)),
    5: (("bone", "soft tissue", "pelvis"), (0.4, 0.3, 0.3)),
}
# "Mixed" fits almost anywhere; without a lower weight it would crowd out the rest.
_SECONDARY_CATEGORY_WEIGHT = {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0, 5: 0.1}

_SPLIT_FRACTIONS = (0.70, 0.15, 0.15)

# Streams drawn from one patient's SeedSequence([seed, patient_index]).
_ANATOMY, _PLAN = 0, 1
# Tags of the per-item generators (slice noise, bookmark noise).
_NOISE_TAG, _MEASURE_TAG = 101, 102

_LAST_NAMES = ("MARTINEZ", "NGUYEN", "OKAFOR", "JOHANSSON", "KOWALSKI", "TANAKA", "MUELLER",
               "ROSSI", "DUBOIS", "SILVA", "COHEN", "PATEL", "KIM", "OBRIEN", "HASSAN",
               "PETROV", "GARCIA", "WILLIAMS", "CHEN", "MENSAH", "LINDQVIST", "FERREIRA")
_FIRST_NAMES = {
    "F": ("ELENA", "MARIA", "AIKO", "FATIMA", "GRACE", "INGRID", "PRIYA", "CHLOE", "AMARA",
          "SOFIA", "HANNAH", "MEI"),
    "M": ("JAMES", "RAVI", "OLUWASEUN", "LUCAS", "HIROSHI", "AHMED", "PIOTR", "MATEO",
          "DAVID", "SVEN", "KWAME", "WEI"),
}


# ----------------------------------------------------------------------------
# The plan of one patient (everything decided before a pixel is drawn).


class PlannedLesion(NamedTuple):
    """A lesion of one series.

    Attributes:
      lesion_id: e.g. `P0001-S1-L2`.
      lesion: the phantom lesion (mm).
      slice_index: 0-based index of its key slice (the slice nearest its centre).
      bookmarked: whether the PACS holds a measurement of it.
      noisy: whether that measurement is deliberately off.
      coords: `(x11, y11, x12, y12, x21, y21, x22, y22)` 0-based pixels on the
        key slice (bookmarked lesions), else None.
    """

    lesion_id: str
    lesion: phantom.Lesion
    slice_index: int
    bookmarked: bool
    noisy: bool
    coords: Optional[Tuple[float, ...]]


@dataclasses.dataclass(frozen=True)
class SeriesPlan:
    """One axial CT series: contiguous slices, slice 0 the most superior.

    Attributes:
      series_index: 1-based.
      z_mm: slice positions, decreasing.
      interval_mm: slice interval (= thickness).
      first_instance: InstanceNumber of slice 0.
      unsigned: stored as uint16 with intercept -1024, else int16 with intercept 0.
      windows: `((center, width), ...)`, the first the release's `DICOM_windows`.
      body_part: BodyPartExamined.
      noise_hu: standard deviation of the image noise.
      series_uid, frame_uid: DICOM UIDs.
      lesions: the lesions planted in the series.
    """

    series_index: int
    z_mm: Tuple[float, ...]
    interval_mm: float
    first_instance: int
    unsigned: bool
    windows: Tuple[Tuple[float, float], ...]
    body_part: str
    noise_hu: float
    series_uid: str
    frame_uid: str
    lesions: Tuple[PlannedLesion, ...]

    def instance_number(self, slice_index: int) -> int:
        return self.first_instance + slice_index


@dataclasses.dataclass(frozen=True)
class StudyPlan:
    """One CT study (a visit); this PACS has one series per study."""

    study_index: int
    date: str
    time: str
    accession_number: str
    age_years: int
    study_uid: str
    series: SeriesPlan


@dataclasses.dataclass(frozen=True)
class PatientPlan:
    """Everything the PACS holds about one patient.

    Attributes:
      seed, patient_index: what the plan was drawn from (patient_index 1-based).
      patient_id, name, birth_date, sex: DICOM identifiers (fake).
      anatomy: the phantom torso.
      grid: the output pixel grid (`image_size` pixels over the patient's field of view).
      studies: the visits, in date order.
    """

    seed: int
    patient_index: int
    patient_id: str
    name: str
    birth_date: str
    sex: str
    anatomy: phantom.Anatomy
    grid: phantom.SliceGrid
    studies: Tuple[StudyPlan, ...]


def _item_rng(seed: int, patient_index: int, tag: int, *keys: int) -> np.random.Generator:
    """A generator for one item (a slice's noise, a bookmark's error), independent of the rest."""
    return np.random.default_rng(np.random.SeedSequence([seed, patient_index, tag, *keys]))


def _uid(seed: int, *parts) -> str:
    return str(generate_uid(entropy_srcs=["deeplesion-tf synthetic PACS", str(seed)]
                            + [str(p) for p in parts]))


def primary_category(seed: int, patient_index: int, study_index: int) -> int:
    """Category (1-5) of a study's first lesion.

    Consecutive patients' first two studies cycle through all five categories
    (3p and 3p + 1 modulo 5 cover every residue within five patients), so
    any ten patients hold every category, whatever the seed.
    """
    return (seed + 3 * (patient_index - 1) + (study_index - 1)) % 5 + 1


class _Placer:
    """Places lesions in one patient on the 1 mm planning grid, caching label maps by height."""

    def __init__(self, anatomy: phantom.Anatomy, rng: np.random.Generator):
        self.anatomy = anatomy
        self.rng = rng
        self.grid = phantom.planning_grid(anatomy)
        self._labels: Dict[float, np.ndarray] = {}

    def labels(self, z: float) -> np.ndarray:
        if z not in self._labels:
            self._labels[z] = phantom.label_slice(self.anatomy, z, self.grid)
        return self._labels[z]

    def place(self, site: str, z: float, interval_mm: float,
              existing: Sequence[phantom.Lesion]) -> Optional[phantom.Lesion]:
        return phantom.place_lesion(self.anatomy, site, z, interval_mm, self.labels(z),
                                    self.grid, self.rng, existing)

    def place_primary(self, category: int, interval_mm: float) -> Tuple[phantom.Lesion, float]:
        """A lesion of `category` and its key slice's height, chosen by the placer.

        Raises:
          RuntimeError: nothing fits after many heights (a phantom bug).
        """
        sites, odds = _PRIMARY_SITES[category]
        site = sites[int(self.rng.choice(len(sites), p=odds))]
        low, high = phantom.site_z_range(self.anatomy, site)
        for _ in range(40):
            z = round(float(self.rng.uniform(low, high)), 1)
            lesion = self.place(site, z, interval_mm, ())
            if lesion is not None:
                return lesion, z
        raise RuntimeError(f"no room for a {site} lesion between z={low:.0f} and {high:.0f} mm")

    def place_secondary(self, z: float, interval_mm: float,
                        existing: Sequence[phantom.Lesion]) -> Optional[phantom.Lesion]:
        """A lesion of any category that fits at height `z`, or None."""
        ranges = {s: phantom.site_z_range(self.anatomy, s) for s in phantom.SITES}
        sites = [s for s, (low, high) in ranges.items() if low <= z <= high]
        weights = np.array([_SECONDARY_CATEGORY_WEIGHT[phantom.SITES[s].category.id]
                            for s in sites])
        while sites:
            i = int(self.rng.choice(len(sites), p=weights / weights.sum()))
            lesion = self.place(sites[i], z, interval_mm, existing)
            if lesion is not None:
                return lesion
            del sites[i]
            weights = np.delete(weights, i)
        return None


def _measure(lesion: phantom.Lesion, z: float, grid: phantom.SliceGrid, noisy: bool,
             rng: np.random.Generator) -> Tuple[float, ...]:
    """The bookmark a radiologist would draw: the two axes, with a little hand jitter.

    Returns `(x11, y11, x12, y12, x21, y21, x22, y22)`, 0-based pixels rounded to
    3 decimals, inside the image. A noisy bookmark is moved off the lesion.
    """
    ends = phantom.measurement_endpoints(lesion, z)
    cols, rows = grid.to_pixels(ends[:, 0], ends[:, 1])
    points = np.stack([cols, rows], axis=1)
    points += np.clip(rng.normal(0.0, MEASUREMENT_NOISE_PX, (4, 2)), -1.5, 1.5)
    if noisy:
        points = _misplace(points, grid.size, rng)
    points = np.clip(np.round(points, 3), 0.0, grid.size - 1.0)
    return tuple(float(v) for v in points.reshape(-1))


def _misplace(points: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """`[4, 2]` points moved 1-2 long axes (at least 12 px), until no end is near the lesion.

    The generator belongs to this bookmark alone, so the number of tries does
    not disturb any other draw.
    """
    low, high = points.min(axis=0), points.max(axis=0)
    long_px = float(np.hypot(*(points[0] - points[1])))
    for _ in range(50):
        angle = rng.uniform(0.0, 2.0 * np.pi)
        length = max(long_px * rng.uniform(1.0, 2.0), 12.0)
        shift = length * np.array([np.cos(angle), np.sin(angle)])
        # Keep the whole measurement inside the image.
        shift = np.clip(shift, -low, size - 1.0 - high)
        moved = points + shift
        clear = (moved < low - 5.0) | (moved > high + 5.0)
        if np.all(clear.any(axis=1)):
            return moved
    raise RuntimeError(f"cannot move a {long_px:.1f} px measurement off its lesion in a "
                       f"{size} px image")


def _key_slice_index(n: int, rng: np.random.Generator) -> int:
    if rng.random() < EDGE_KEY_SLICE_RATE:
        return 0 if rng.random() < 0.5 else n - 1
    return int(rng.integers(2, n - 2))


def _slice_positions(key_z: float, key_index: int, n: int, interval: float
                     ) -> Tuple[int, Tuple[float, ...]]:
    """Moves the key slice within the series so that the series stays in the imaged range."""
    highest = int(math.floor((phantom.Z_TOP_MM - key_z) / interval))
    lowest = n - 1 - int(math.floor((key_z - phantom.Z_BOTTOM_MM) / interval))
    key_index = min(max(key_index, lowest, 0), highest, n - 1)
    return key_index, tuple(round(key_z + (key_index - i) * interval, 2) for i in range(n))


def _body_part(z: float, anatomy: phantom.Anatomy) -> str:
    if z > anatomy.organs["liver"].cz + 0.5 * anatomy.organs["liver"].c:
        return "CHEST"
    if z > anatomy.sacrum_top - 20.0:
        return "ABDOMEN"
    return "PELVIS"


_WINDOWS = {  # (center, width) pairs; the first is the series' default display.
    "CHEST": (((-600.0, 1500.0), (40.0, 400.0)), ((40.0, 400.0), (-600.0, 1500.0))),
    "ABDOMEN": (((50.0, 450.0), (60.0, 160.0)), ((40.0, 400.0), (400.0, 1800.0))),
    "PELVIS": (((40.0, 400.0), (400.0, 1800.0)), ((50.0, 450.0), (400.0, 1800.0))),
}


class _PlanArgs(NamedTuple):
    """What every series of one patient shares."""

    seed: int
    patient_index: int
    grid: phantom.SliceGrid


class _SeriesBuilder:
    """Plans the lesions of one series and its slices."""

    def __init__(self, plan_args: _PlanArgs, placer: _Placer, study_index: int):
        self.args = plan_args
        self.placer = placer
        self.rng = placer.rng
        self.study_index = study_index
        self.lesions: List[Tuple[phantom.Lesion, float, bool]] = []  # (lesion, key z, bookmarked)

    def add_key_slice(self, z: float, interval: float, first: Optional[phantom.Lesion]) -> None:
        """A key slice: its bookmarked lesion, maybe a second one, maybe an unbookmarked one."""
        existing = [l for l, _, _ in self.lesions]
        lesion = first or self.placer.place_secondary(z, interval, existing)
        if lesion is None:
            return
        self.lesions.append((lesion, z, True))
        if first is not None and self.rng.random() < SHARED_KEY_SLICE_RATE:
            self._add(z, interval, bookmarked=True)
        if self.rng.random() < UNBOOKMARKED_RATE:
            self._add(z, interval, bookmarked=False)

    def _add(self, z: float, interval: float, bookmarked: bool) -> None:
        existing = [l for l, _, _ in self.lesions]
        lesion = self.placer.place_secondary(z, interval, existing)
        if lesion is not None:
            self.lesions.append((lesion, z, bookmarked))

    def build(self, category: int) -> SeriesPlan:
        rng = self.rng
        interval = 2.5 if rng.random() < THIN_SLICE_RATE else 5.0
        n = int(rng.integers(8, 15))
        primary, key_z = self.placer.place_primary(category, interval)
        key_index, z_mm = _slice_positions(key_z, _key_slice_index(n, rng), n, interval)
        self.add_key_slice(z_mm[key_index], interval, primary)
        if rng.random() < SECOND_KEY_SLICE_RATE:
            others = [i for i in range(1, n - 1) if abs(i - key_index) >= 2]
            second = others[int(rng.integers(len(others)))]
            self.add_key_slice(z_mm[second], interval, None)
        body_part = _body_part(z_mm[key_index], self.placer.anatomy)
        options = _WINDOWS[body_part]
        windows = options[int(rng.integers(len(options)))]
        return SeriesPlan(
            series_index=1,
            z_mm=z_mm,
            interval_mm=interval,
            first_instance=int(rng.integers(1, 80)),
            unsigned=bool(rng.random() < 0.6),
            windows=windows,
            body_part=body_part,
            noise_hu=float(rng.uniform(9.0, 15.0)),
            series_uid=_uid(self.args.seed, self.args.patient_index, self.study_index, "series"),
            frame_uid=_uid(self.args.seed, self.args.patient_index, self.study_index, "frame"),
            lesions=self._planned(z_mm, interval),
        )

    def _planned(self, z_mm: Sequence[float], interval: float) -> Tuple[PlannedLesion, ...]:
        planned = []
        for number, (lesion, key_z, bookmarked) in enumerate(self.lesions, start=1):
            slice_index = z_mm.index(key_z)
            noisy = bookmarked and bool(self.rng.random() < NOISY_RATE)
            coords = None
            if bookmarked:
                rng = _item_rng(self.args.seed, self.args.patient_index, _MEASURE_TAG,
                                self.study_index, number)
                coords = _measure(lesion, key_z, self.args.grid, noisy, rng)
            lesion_id = f"P{self.args.patient_index:04d}-S{self.study_index}-L{number}"
            planned.append(PlannedLesion(lesion_id, lesion, slice_index, bookmarked, noisy, coords))
        return tuple(planned)


def _identifiers(seed: int, patient_index: int, sex: str, rng: np.random.Generator
                 ) -> Tuple[str, str]:
    """A fake but realistic name and an 8-digit MRN, unique per patient."""
    offset = int(np.random.SeedSequence([seed]).generate_state(1)[0]) % 90_000_000
    # 48271 is prime and coprime with 9e7: distinct patients get distinct MRNs.
    mrn = 10_000_000 + (patient_index * 48271 + offset) % 90_000_000
    first = _FIRST_NAMES[sex][int(rng.integers(len(_FIRST_NAMES[sex])))]
    last = _LAST_NAMES[int(rng.integers(len(_LAST_NAMES)))]
    return f"{last}^{first}", str(mrn)


def _accession_number(seed: int, patient_index: int, study_index: int) -> str:
    offset = int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])
    # 2654435761 is coprime with 9e9: distinct studies get distinct numbers.
    return str(1_000_000_000 + ((patient_index * 10 + study_index) * 2654435761 + offset)
               % 9_000_000_000)


def _age(birth: datetime.date, on: datetime.date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def plan_patient(seed: int, patient_index: int, image_size: int) -> PatientPlan:
    """Draws one patient: anatomy, identifiers, studies, lesions and bookmarks.

    Deterministic in its arguments. The anatomy and lesions (mm) do not depend
    on `image_size`; bookmarks and boxes (pixels) do.

    Args:
      seed: the PACS's seed.
      patient_index: 1-based.
      image_size: rows = columns of the slices.

    Returns:
      A `PatientPlan`.
    """
    streams = np.random.SeedSequence([seed, patient_index]).spawn(2)
    anatomy = phantom.sample_anatomy(np.random.default_rng(streams[_ANATOMY]))
    rng = np.random.default_rng(streams[_PLAN])
    grid = phantom.make_grid(anatomy.fov_mm, image_size, anatomy.fov_center)
    name, patient_id = _identifiers(seed, patient_index, anatomy.sex, rng)
    first_date = datetime.date(2005, 1, 1) + datetime.timedelta(days=int(rng.integers(0, 3650)))
    age = int(rng.integers(30, 86))
    birth = first_date - datetime.timedelta(days=int(age * 365.25 + rng.integers(0, 365)))
    placer = _Placer(anatomy, rng)
    args = _PlanArgs(seed, patient_index, grid)
    studies = []
    date = first_date
    for study_index in range(1, int(rng.integers(2, 4)) + 1):
        if study_index > 1:
            date += datetime.timedelta(days=int(rng.integers(60, 400)))
        series = _SeriesBuilder(args, placer, study_index).build(
            primary_category(seed, patient_index, study_index))
        studies.append(StudyPlan(
            study_index=study_index,
            date=date.strftime("%Y%m%d"),
            time=f"{int(rng.integers(7, 19)):02d}{int(rng.integers(0, 60)):02d}"
                 f"{int(rng.integers(0, 60)):02d}",
            accession_number=_accession_number(seed, patient_index, study_index),
            age_years=_age(birth, date),
            study_uid=_uid(seed, patient_index, study_index, "study"),
            series=series,
        ))
    return PatientPlan(seed, patient_index, patient_id, name, birth.strftime("%Y%m%d"),
                       anatomy.sex, anatomy, grid, tuple(studies))


# ----------------------------------------------------------------------------
# Rendering and writing one patient.


def render_series_hu(plan: PatientPlan, study: StudyPlan) -> np.ndarray:
    """The series' slices as stored: `[num_slices, H, W]` int16 HU, noise included."""
    series = study.series
    lesions = [p.lesion for p in series.lesions]
    slices = []
    for i, z in enumerate(series.z_mm):
        rendered = phantom.render_slice(plan.anatomy, lesions, z, plan.grid)
        rng = _item_rng(plan.seed, plan.patient_index, _NOISE_TAG, study.study_index, i)
        noise = phantom.correlated_noise(rendered.hu.shape, series.noise_hu, rng)
        slices.append(phantom.to_stored_hu(rendered.hu + noise))
    return np.stack(slices)


def dicom_relative_path(plan: PatientPlan, study: StudyPlan, slice_index: int) -> str:
    """`dicom/<PatientID>/study<k>/series<j>/<InstanceNumber:04d>.dcm` (POSIX separators)."""
    series = study.series
    return (f"dicom/{plan.patient_id}/study{study.study_index}/series{series.series_index}/"
            f"{series.instance_number(slice_index):04d}.dcm")


def sop_instance_uid(plan: PatientPlan, study: StudyPlan, slice_index: int) -> str:
    return _uid(plan.seed, plan.patient_index, study.study_index, "instance", slice_index)


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


def _write_series(plan: PatientPlan, study: StudyPlan, output_dir: pathlib.Path,
                  write_release: bool) -> int:
    """Writes the series' DICOM files (and release PNGs); returns the number of slices."""
    series = study.series
    stored = render_series_hu(plan, study)
    folder = release_format.series_folder(plan.patient_index, study.study_index,
                                          series.series_index)
    for i in range(len(series.z_mm)):
        path = output_dir / dicom_relative_path(plan, study, i)
        path.parent.mkdir(parents=True, exist_ok=True)
        _dicom_dataset(plan, study, i, stored[i]).save_as(path, enforce_file_format=True)
        if write_release:
            png = output_dir / "Images_png" / folder / release_format.slice_file(
                series.instance_number(i))
            png.parent.mkdir(parents=True, exist_ok=True)
            png.write_bytes(png16.encode_hu(stored[i]))
    return len(series.z_mm)


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
        num_slices += _write_series(plan, study, output_dir, job.write_release)
        for planned in study.series.lesions:
            rows.truth.append(_truth_row(plan, study, planned))
            if planned.bookmarked:
                rows.bookmarks.append(_bookmark_row(plan, study, planned))
                rows.release.append(_release_row(plan, study, planned))
    return rows._replace(num_slices=num_slices)


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


def patient_splits(num_patients: int, seed: int) -> Dict[int, int]:
    """`{patient_index: Train_Val_Test}`: a seeded 70/15/15 cut of the patients (1/2/3)."""
    order = np.random.default_rng(np.random.SeedSequence([seed, 0x5B117])).permutation(
        np.arange(1, num_patients + 1))
    num_train = int(round(_SPLIT_FRACTIONS[0] * num_patients))
    num_val = int(round(_SPLIT_FRACTIONS[1] * num_patients))
    splits = {}
    for rank, patient in enumerate(order):
        splits[int(patient)] = 1 if rank < num_train else 2 if rank < num_train + num_val else 3
    return splits


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
