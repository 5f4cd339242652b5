"""The plan of one synthetic PACS patient: everything decided before a pixel is drawn.

A `PatientPlan` holds the patient's phantom anatomy, fake identifiers, studies
and series (slice positions, storage, windows, UIDs) and the lesions planted
in each series, with the bookmarks a radiologist drew on them. Lesions and
anatomy are in mm and do not depend on the image size; bookmarks are pixels.
`synthetic_pacs` renders and writes what is planned here.

Indices: patients, studies and series are 1-based (as in the release);
`slice_index` is 0-based within a series, slice 0 the most superior.

Every patient draws from `SeedSequence([seed, patient_index])`, so a plan does
not depend on the other patients or on the worker that draws it; an item whose
number of draws may vary (a slice's noise, a bookmark's error) draws from its
own `item_rng`, so it shifts no other draw.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from pydicom.uid import generate_uid

from deeplesion_tf.data import phantom

# Rates of the PACS's imperfections (per series, per key slice, per bookmark).
SHARED_KEY_SLICE_RATE = 0.15
UNBOOKMARKED_RATE = 0.30
# Long axis of an unbookmarked lesion, mm. Radiologists measure target lesions (RECIST 1.1:
# measurable, >= 10 mm) and leave the smaller, non-target findings unmeasured; drawn like
# the bookmarked ones, unbookmarked lesions made the bookmark a coin toss on a fifth of key
# slices (a perfect lesion finder scored 0.86 top-1 on the default PACS).
NON_TARGET_DIAMETER_MM = (4.0, 9.0)
NOISY_RATE = 0.03
SECOND_KEY_SLICE_RATE = 0.35
THIN_SLICE_RATE = 0.2  # 2.5 mm instead of 5 mm
EDGE_KEY_SLICE_RATE = 0.1
MEASUREMENT_NOISE_PX = 0.5

# Sites of each sampling category's primary lesions (`Site.sampling_category`, which
# keeps the pelvis, truly abdominal, among the mixed sites), with their odds.
_PRIMARY_SITES = {
    1: (("liver",), (1.0,)),
    2: (("lung",), (1.0,)),
    3: (("kidney", "abdominal node"), (0.5, 0.5)),
    4: (("mediastinum",), (1.0,)),
    5: (("bone", "soft tissue", "pelvis"), (0.4, 0.3, 0.3)),
}
# By sampling category: "mixed" fits almost anywhere; without a lower weight it would
# crowd out the rest.
_SECONDARY_CATEGORY_WEIGHT = {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0, 5: 0.1}

_SPLIT_FRACTIONS = (0.70, 0.15, 0.15)

# Streams drawn from one patient's SeedSequence([seed, patient_index]).
_ANATOMY, _PLAN = 0, 1
# Tags of the per-item generators (slice noise, bookmark noise, non-target size).
NOISE_TAG, MEASURE_TAG, NON_TARGET_TAG = 101, 102, 103

_LAST_NAMES = ("MARTINEZ", "NGUYEN", "OKAFOR", "JOHANSSON", "KOWALSKI", "TANAKA", "MUELLER",
               "ROSSI", "DUBOIS", "SILVA", "COHEN", "PATEL", "KIM", "OBRIEN", "HASSAN",
               "PETROV", "GARCIA", "WILLIAMS", "CHEN", "MENSAH", "LINDQVIST", "FERREIRA")
_FIRST_NAMES = {
    "F": ("ELENA", "MARIA", "AIKO", "FATIMA", "GRACE", "INGRID", "PRIYA", "CHLOE", "AMARA",
          "SOFIA", "HANNAH", "MEI"),
    "M": ("JAMES", "RAVI", "OLUWASEUN", "LUCAS", "HIROSHI", "AHMED", "PIOTR", "MATEO",
          "DAVID", "SVEN", "KWAME", "WEI"),
}


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


def item_rng(seed: int, patient_index: int, tag: int, *keys: int) -> np.random.Generator:
    """A generator for one item (a slice's noise, a bookmark's error), independent of the rest."""
    return np.random.default_rng(np.random.SeedSequence([seed, patient_index, tag, *keys]))


def _uid(seed: int, *parts) -> str:
    return str(generate_uid(entropy_srcs=["deeplesion-tf synthetic PACS", str(seed)]
                            + [str(p) for p in parts]))


def sop_instance_uid(plan: PatientPlan, study: StudyPlan, slice_index: int) -> str:
    return _uid(plan.seed, plan.patient_index, study.study_index, "instance", slice_index)


def primary_category(seed: int, patient_index: int, study_index: int) -> int:
    """Sampling category (1-5, `Site.sampling_category`) of a study's first lesion.

    Consecutive patients' first two studies cycle through all five categories
    (3p and 3p + 1 modulo 5 cover every residue within five patients), so
    any ten patients hold every sampling category, whatever the seed. A pelvic
    lesion, drawn under mixed (5), is an abdominal lesion (3) in `truth.csv`.
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
        """A lesion of sampling category `category` and its key slice's height.

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
        weights = np.array([_SECONDARY_CATEGORY_WEIGHT[phantom.SITES[s].sampling_category.id]
                            for s in sites])
        while sites:
            i = int(self.rng.choice(len(sites), p=weights / weights.sum()))
            lesion = self.place(sites[i], z, interval_mm, existing)
            if lesion is not None:
                return lesion
            del sites[i]
            weights = np.delete(weights, i)
        return None


def _non_target(lesion: phantom.Lesion, key_z: float, rng: np.random.Generator
                ) -> phantom.Lesion:
    """An unbookmarked lesion shrunk about its centre to a non-target size.

    Its long axis becomes `NON_TARGET_DIAMETER_MM` at most; it stays inside its
    host and clear of the others (it only shrinks), and the key slice still
    cuts it at least 1 mm from its pole.
    """
    a, b, c = lesion.semi_axes_mm
    scale = min(1.0, 0.5 * float(rng.uniform(*NON_TARGET_DIAMETER_MM)) / a)
    scale = max(scale, min(1.0, (abs(key_z - lesion.center_mm[2]) + 1.0) / c))
    return lesion._replace(semi_axes_mm=(a * scale, b * scale, c * scale))


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
                rng = item_rng(self.args.seed, self.args.patient_index, MEASURE_TAG,
                                self.study_index, number)
                coords = _measure(lesion, key_z, self.args.grid, noisy, rng)
            else:
                # Shrunk after every placement, so the plan's draws are unchanged.
                lesion = _non_target(lesion, key_z, item_rng(
                    self.args.seed, self.args.patient_index, NON_TARGET_TAG, self.study_index,
                    number))
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
