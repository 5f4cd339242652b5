"""The synthetic PACS, checked against its own phantom, value by value.

One 10-patient PACS at 128x128 (with the release layout) is generated per module;
a second with one worker and a third with another seed test determinism.
"""

import collections
import csv
import hashlib
import pathlib
import subprocess
import sys

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut
from pydicom.uid import ExplicitVRLittleEndian

from deeplesion_tf.data import bookmarks
from deeplesion_tf.data import ct_reader
from deeplesion_tf.data import lesion_categories
from deeplesion_tf.data import phantom
from deeplesion_tf.data import png16
from deeplesion_tf.data import release_format
from deeplesion_tf.data import synthetic_pacs
from deeplesion_tf.data import synthetic_plan

SEED = 0
NUM_PATIENTS = 10
SIZE = 128
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _coords(row):
    return tuple(float(row[c]) for c in bookmarks.COORDINATE_NAMES)


def _tree_hashes(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pacs") / "out"
    summary = synthetic_pacs.make_synthetic_pacs(root, NUM_PATIENTS, SEED, image_size=SIZE,
                                                 write_release=True, num_workers=2)
    return root, summary


@pytest.fixture(scope="module")
def truth(pacs):
    return _csv(pacs[0] / "truth.csv")


@pytest.fixture(scope="module")
def marks(pacs):
    return {r["lesion_id"]: r for r in _csv(pacs[0] / "bookmarks.csv")}


@pytest.fixture(scope="module")
def plans():
    return {i: synthetic_pacs.plan_patient(SEED, i, SIZE) for i in range(1, NUM_PATIENTS + 1)}


def test_summary_counts_what_was_written(pacs, truth, marks):
    root, summary = pacs
    assert summary.num_patients == NUM_PATIENTS
    assert summary.num_lesions == len(truth)
    assert summary.num_bookmarks == len(marks) == sum(r["bookmarked"] == "1" for r in truth)
    assert summary.num_unbookmarked == sum(r["bookmarked"] == "0" for r in truth)
    assert summary.num_slices == len(list((root / "dicom").rglob("*.dcm")))
    counts = collections.Counter(int(r["category"]) for r in truth)
    assert summary.lesions_per_category == {c: counts[c] for c in range(1, 6)}
    assert 2 * NUM_PATIENTS <= summary.num_studies <= 3 * NUM_PATIENTS


def test_every_category_and_every_imperfection_is_present(truth):
    assert {int(r["category"]) for r in truth} == {c.id for c in lesion_categories.CATEGORIES}
    counts = collections.Counter(int(r["category"]) for r in truth)
    assert max(counts.values()) <= 3 * min(counts.values())  # roughly balanced
    per_slice = collections.Counter(r["relative_path"] for r in truth if r["bookmarked"] == "1")
    assert max(per_slice.values()) >= 2  # two bookmarks on one key slice
    # A lesion left unbookmarked on a slice that carries a bookmark (missing annotation).
    assert any(r["bookmarked"] == "0" and per_slice[r["relative_path"]] for r in truth)


def test_unbookmarked_lesions_are_non_target_sized(truth):
    """Radiologists measure target lesions; the unmeasured ones are sub-centimetre."""
    unbookmarked = [float(r["long_diameter_mm"]) for r in truth if r["bookmarked"] == "0"]
    bookmarked = [float(r["long_diameter_mm"]) for r in truth if r["bookmarked"] == "1"]
    assert unbookmarked and max(unbookmarked) <= synthetic_plan.NON_TARGET_DIAMETER_MM[1] + 2.0
    assert np.median(unbookmarked) < 8.0 < 15.0 < np.median(bookmarked)
    assert min(unbookmarked) > 2.0  # still seen on the key slice


def test_non_target_shrinks_about_the_centre_and_keeps_the_key_slice():
    lesion = phantom.Lesion("liver", (10.0, -5.0, 101.0), (15.0, 11.0, 12.0), 0.3, 40.0, 40.0)
    for seed in range(20):
        small = synthetic_plan._non_target(lesion, 100.0, np.random.default_rng(seed))
        a, b, c = small.semi_axes_mm
        assert small.center_mm == lesion.center_mm and small.angle == lesion.angle
        assert a / 15.0 == pytest.approx(b / 11.0) == pytest.approx(c / 12.0)
        assert 2.0 <= 2 * a <= 9.0
        assert small.cross_section(100.0) is not None
    # A lesion whose centre lies 1.6 mm off the key slice keeps at least 1 mm beyond it.
    off = lesion._replace(center_mm=(10.0, -5.0, 101.6), semi_axes_mm=(15.0, 11.0, 3.0))
    small = synthetic_plan._non_target(off, 100.0, np.random.default_rng(0))
    assert small.semi_axes_mm[2] == pytest.approx(2.6)


@pytest.mark.parametrize("seed", [1, 2, 17])
def test_every_category_at_other_seeds(seed):
    categories = set()
    for patient in range(1, NUM_PATIENTS + 1):
        plan = synthetic_pacs.plan_patient(seed, patient, SIZE)
        categories |= {phantom.SITES[p.lesion.site].category.id
                       for s in plan.studies for p in s.series.lesions}
    assert categories == {1, 2, 3, 4, 5}


def test_pelvic_lesions_are_abdominal_in_truth_and_drawn_as_mixed(truth):
    pelvis = [r for r in truth if r["site"] == "pelvis"]
    assert pelvis
    assert {(r["category"], r["category_name"], r["short_name"]) for r in pelvis} == {
        ("3", "abdominal lesion", "AB")}
    # Each primary-site group holds the sites drawn under that category, pelvis among mixed.
    groups = {category: set(sites)
              for category, (sites, _) in synthetic_plan._PRIMARY_SITES.items()}
    assert groups == {c.id: {name for name, site in phantom.SITES.items()
                             if site.sampling_category == c}
                      for c in lesion_categories.CATEGORIES}
    assert "pelvis" in groups[lesion_categories.MIXED.id]


def test_truth_rows_describe_the_planted_lesions(truth, plans):
    rows = {r["lesion_id"]: r for r in truth}
    for plan in plans.values():
        for study in plan.studies:
            series = study.series
            for planned in series.lesions:
                row = rows.pop(planned.lesion_id)
                site = phantom.SITES[planned.lesion.site]
                assert int(row["category"]) == site.category.id
                assert row["short_name"] == site.category.short_name
                assert int(row["coarse_type"]) == site.coarse_type
                assert row["coarse_type"] in {str(k) for k in release_format.COARSE_TYPES}
                index = int(row["slice_index"])
                assert int(row["instance_number"]) == series.first_instance + index
                assert row["relative_path"].endswith(f"/{int(row['instance_number']):04d}.dcm")
                # The key slice is the slice nearest the lesion's centre.
                distances = np.abs(np.array(series.z_mm) - planned.lesion.center_mm[2])
                assert index == int(np.argmin(distances))
                assert row["release_file_name"] == release_format.key_slice_file_name(
                    plan.patient_index, study.study_index, 1, int(row["instance_number"]))
    assert not rows  # no row without a lesion


def test_lesions_lie_inside_their_organ_and_apart(truth, plans):
    for plan in plans.values():
        for study in plan.studies:
            series = study.series
            for planned in series.lesions:
                z = series.z_mm[planned.slice_index]
                labels = phantom.label_slice(plan.anatomy, z, plan.grid)
                mask = phantom.lesion_mask(planned.lesion, z, plan.grid)
                hosts = {t for h in phantom.SITES[planned.lesion.site].hosts for t in h.tissues}
                assert set(np.unique(labels[mask])) <= hosts, planned.lesion_id
                for other in series.lesions:
                    if other is not planned:
                        assert not phantom.lesions_overlap(planned.lesion, other.lesion)


def _inner_and_ring(hu, row):
    y0, x0, y1, x1 = (float(row[k]) for k in ("ymin", "xmin", "ymax", "xmax"))
    cy, cx, hy, hx = (y0 + y1) / 2, (x0 + x1) / 2, (y1 - y0) / 2, (x1 - x0) / 2
    yy, xx = np.mgrid[:hu.shape[0], :hu.shape[1]]
    inner = ((yy - cy) / max(0.4 * hy, 0.5)) ** 2 + ((xx - cx) / max(0.4 * hx, 0.5)) ** 2 <= 1
    near, far = 1.5, 1.5 + max(2.0, 0.3 * max(hy, hx))
    box = lambda g: (yy >= y0 - g) & (yy <= y1 + g) & (xx >= x0 - g) & (xx <= x1 + g)
    return hu[inner].mean(), np.median(hu[box(far) & ~box(near)])


def test_lesions_stand_out_where_truth_says(pacs, truth):
    root, _ = pacs
    contrast = collections.defaultdict(list)
    for row in truth:
        hu = ct_reader.read_ct(root / row["relative_path"]).hu
        inner, ring = _inner_and_ring(hu, row)
        contrast[row["short_name"]].append(inner - ring)
    median = {k: float(np.median(v)) for k, v in contrast.items()}
    assert max(contrast["LV"]) < -15.0  # hypodense in liver
    assert min(contrast["LN"]) > 500.0  # solid in aerated lung
    assert median["CL"] > 60.0  # soft tissue in mediastinal fat
    assert abs(median["AB"]) > 20.0 and abs(median["MX"]) > 30.0


def test_bookmarks_measure_their_lesion(truth, marks, plans):
    rows = {r["lesion_id"]: r for r in truth}
    for lesion_id, mark in marks.items():
        row = rows[lesion_id]
        assert mark["relative_path"] == row["relative_path"]
        coords = _coords(mark)
        points = np.array(coords).reshape(4, 2)
        assert np.all(points >= 0.0) and np.all(points <= SIZE - 1)
        assert all(round(v, 3) == v for v in coords)
        y0, x0, y1, x1 = (float(row[k]) for k in ("ymin", "xmin", "ymax", "xmax"))
        inside = ((points[:, 0] >= x0 - 2) & (points[:, 0] <= x1 + 2)
                  & (points[:, 1] >= y0 - 2) & (points[:, 1] <= y1 + 2))
        if row["noisy"] == "1":
            assert not inside.all(), lesion_id  # deliberately off the lesion
            continue
        assert inside.all(), lesion_id
        spacing = plans[int(row["patient_index"])].grid.spacing_mm
        geometry = bookmarks.measure(bookmarks.Bookmark(lesion_id, coords, SIZE, SIZE,
                                                        (spacing, spacing)))
        # Each coordinate's jitter is at most 1.5 px, so a length moves by at most 3 sqrt(2).
        slack = 3.0 * np.sqrt(2.0) * spacing
        assert geometry.long_diameter_mm == pytest.approx(float(row["long_diameter_mm"]), abs=slack)
        assert geometry.short_diameter_mm == pytest.approx(float(row["short_diameter_mm"]),
                                                           abs=slack)
        if geometry.short_diameter_px > 8.0:  # jitter dominates the angle of tiny lesions
            long_axis, short_axis = points[1] - points[0], points[3] - points[2]
            cosine = np.dot(long_axis, short_axis) / np.hypot(*long_axis) / np.hypot(*short_axis)
            assert abs(cosine) < 0.35


@pytest.mark.slow
def test_noisy_bookmarks_are_rare_but_exist_in_a_larger_pacs():
    noisy = total = 0
    for patient in range(1, 26):
        for study in synthetic_pacs.plan_patient(5, patient, SIZE).studies:
            for planned in study.series.lesions:
                total += planned.bookmarked
                noisy += planned.noisy
    assert 1 <= noisy <= 0.1 * total


def test_dicom_files_are_ct_with_identifiers(pacs):
    root, _ = pacs
    rescales = set()
    by_series = collections.defaultdict(list)
    for path in sorted((root / "dicom").rglob("*.dcm")):
        raw = path.read_bytes()
        assert raw[128:132] == b"DICM" and raw[:128] == bytes(128)
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.Modality == "CT" and ds.SOPClassUID == ct_reader.CT_IMAGE_STORAGE
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber",
                        "PatientSex", "PatientAge", "StudyDate", "BodyPartExamined",
                        "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
            assert str(ds.get(keyword, "")).strip(), (path, keyword)
        assert "^" in str(ds.PatientName) and len(ds.PatientBirthDate) == 8
        assert path.parts[-4] == ds.PatientID
        assert path.name == f"{int(ds.InstanceNumber):04d}.dcm"
        assert ds.RescaleType == "HU" and float(ds.RescaleSlope) == 1.0
        rescales.add((int(ds.PixelRepresentation), float(ds.RescaleIntercept)))
        assert float(ds.ImagePositionPatient[2]) == float(ds.SliceLocation)
        assert list(ds.ImageOrientationPatient) == [1, 0, 0, 0, 1, 0]
        assert ds.Rows == ds.Columns == SIZE
        by_series[ds.SeriesInstanceUID].append(
            (int(ds.InstanceNumber), float(ds.SliceLocation), float(ds.SliceThickness)))
    assert rescales == {(0, -1024.0), (1, 0.0)}  # both storage conventions occur
    for slices in by_series.values():
        numbers, positions, thickness = zip(*sorted(slices))
        assert 8 <= len(numbers) <= 14
        assert numbers == tuple(range(numbers[0], numbers[0] + len(numbers)))
        np.testing.assert_allclose(-np.diff(positions), thickness[0], atol=1e-6)
        assert thickness[0] in (2.5, 5.0)


def test_dicom_hu_is_the_phantom_plus_noise(pacs, plans, marks):
    root, _ = pacs
    for patient in (1, 2, 3, 4):
        plan = plans[patient]
        for study in plan.studies:
            series = study.series
            for planned in series.lesions:
                if not planned.bookmarked:
                    continue
                assert _coords(marks[planned.lesion_id]) == planned.coords
                path = root / synthetic_pacs.dicom_relative_path(plan, study, planned.slice_index)
                ds = pydicom.dcmread(path)
                hu = apply_modality_lut(ds.pixel_array, ds)
                np.testing.assert_array_equal(hu, ct_reader.read_ct(path).hu)
                z = series.z_mm[planned.slice_index]
                expected = phantom.render_slice(plan.anatomy, [p.lesion for p in series.lesions],
                                                z, plan.grid).hu
                window, _ = phantom.lesion_window(planned.lesion, z, plan.grid)
                rows = slice(max(window[0].start - 4, 0), window[0].stop + 4)
                cols = slice(max(window[1].start - 4, 0), window[1].stop + 4)
                residual = hu[rows, cols] - expected[rows, cols]
                assert abs(residual.mean()) < 0.5 * series.noise_hu
                assert 0.5 * series.noise_hu < residual.std() < 1.6 * series.noise_hu
                spacing = [float(v) for v in ds.PixelSpacing]
                assert spacing == [plan.grid.spacing_mm] * 2


@pytest.mark.slow
def test_same_seed_same_bytes_whatever_the_workers(pacs, tmp_path):
    root, _ = pacs
    again = tmp_path / "again"
    synthetic_pacs.make_synthetic_pacs(again, NUM_PATIENTS, SEED, image_size=SIZE,
                                       write_release=True, num_workers=1)
    assert _tree_hashes(again) == _tree_hashes(root)


def test_another_seed_gives_another_pacs(pacs, tmp_path):
    root, _ = pacs
    other = tmp_path / "other"
    synthetic_pacs.make_synthetic_pacs(other, 2, SEED + 1, image_size=SIZE, num_workers=1)
    ours, theirs = _tree_hashes(root), _tree_hashes(other)
    assert not set(ours.values()) & set(theirs.values())
    assert _csv(other / "bookmarks.csv")[0]["lesion_id"] == "P0001-S1-L1"


def test_release_pngs_hold_the_dicom_hu(pacs, truth):
    root, _ = pacs
    dicoms = {}
    for row in truth:
        folder = pathlib.PurePosixPath(row["relative_path"]).parent
        series = row["release_file_name"][:12]
        dicoms[series] = root / folder
    folders = sorted((root / "Images_png").iterdir())
    assert [f.name for f in folders] == sorted(dicoms)
    for folder in folders:
        pngs = sorted(folder.iterdir())
        dcms = sorted(dicoms[folder.name].iterdir())
        assert [p.stem for p in pngs] == [f"{int(d.stem):03d}" for d in dcms]
        for png, dcm in zip(pngs, dcms):
            data = png.read_bytes()
            assert png16.is_hu_png(png16.read_header(data))  # 16-bit grayscale
            np.testing.assert_array_equal(png16.decode_hu(data), ct_reader.read_ct(dcm).hu)


def test_dl_info_rows_follow_the_release(pacs, truth, marks):
    root, _ = pacs
    with open(root / "DL_info.csv", newline="") as f:
        assert tuple(next(csv.reader(f))) == release_format.DL_INFO_COLUMNS
    rows = _csv(root / "DL_info.csv")
    assert [r["File_name"] for r in rows] == sorted(r["File_name"] for r in rows)
    truth_by_id = {r["lesion_id"]: r for r in truth}
    expected = collections.Counter()
    for lesion_id, mark in marks.items():
        release_coords = bookmarks.to_release_coordinates(_coords(mark))
        expected[(truth_by_id[lesion_id]["release_file_name"],
                  release_format.format_numbers(release_coords))] += 1
    written = collections.Counter((r["File_name"], r["Measurement_coordinates"]) for r in rows)
    assert written == expected
    by_file = collections.defaultdict(list)
    for r in truth:
        by_file[r["release_file_name"]].append(r)
    for row in rows:
        coords = bookmarks.from_release_coordinates(release_format.parse_numbers(
            row["Measurement_coordinates"]))
        geometry = bookmarks.measure(bookmarks.Bookmark("x", coords, SIZE, SIZE),
                                     padding=bookmarks.RELEASE_PADDING_PX)
        np.testing.assert_allclose(release_format.parse_numbers(row["Bounding_boxes"]),
                                   bookmarks.box_to_release(geometry.box), atol=2e-3)
        np.testing.assert_allclose(release_format.parse_numbers(row["Lesion_diameters_Pixel_"]),
                                   (geometry.long_diameter_px, geometry.short_diameter_px),
                                   rtol=1e-5)
        location = release_format.parse_numbers(row["Normalized_lesion_location"])
        assert len(location) == 3 and all(0.0 <= v <= 1.0 for v in location)
        first, last = (int(v) for v in release_format.parse_numbers(row["Slice_range"]))
        assert first <= int(row["Key_slice_index"]) <= last
        assert row["Image_size"] == f"{SIZE}, {SIZE}"
        spacing = release_format.parse_numbers(row["Spacing_mm_px_"])
        key = ct_reader.read_ct(root / by_file[row["File_name"]][0]["relative_path"])
        np.testing.assert_allclose(spacing, (key.pixel_spacing_mm[1], key.pixel_spacing_mm[0],
                                             key.slice_thickness_mm), rtol=1e-5)
        center, width = key.windows[0]
        np.testing.assert_allclose(release_format.parse_numbers(row["DICOM_windows"]),
                                   (center - width / 2, center + width / 2))
        lesions = by_file[row["File_name"]]
        if row["Train_Val_Test"] == "1":
            assert row["Coarse_lesion_type"] == "-1"
        else:
            assert row["Coarse_lesion_type"] in {r["coarse_type"] for r in lesions}
        assert row["Possibly_noisy"] in {r["noisy"] for r in lesions if r["bookmarked"] == "1"}
        assert row["Patient_gender"] in ("F", "M") and 30 <= int(row["Patient_age"]) <= 95


def test_splits_are_disjoint_by_patient(pacs):
    root, _ = pacs
    splits = collections.defaultdict(set)
    for row in _csv(root / "DL_info.csv"):
        splits[int(row["Patient_index"])].add(int(row["Train_Val_Test"]))
    assert all(len(s) == 1 for s in splits.values())  # no patient in two splits
    expected = synthetic_pacs.patient_splits(NUM_PATIENTS, SEED)
    assert {p: s.pop() for p, s in splits.items()} == {p: expected[p] for p in splits}
    assert set(expected.values()) == {1, 2, 3}
    counts = collections.Counter(synthetic_pacs.patient_splits(100, 3).values())
    assert counts == {1: 70, 2: 15, 3: 15}


def test_refuses_a_directory_with_files(tmp_path):
    (tmp_path / "leftover.txt").write_text("x")
    with pytest.raises(FileExistsError):
        synthetic_pacs.make_synthetic_pacs(tmp_path, 1, SEED, image_size=64, num_workers=1)


def test_binary_writes_what_the_library_writes(tmp_path):
    args = ["--num_patients=2", "--seed=4", "--image_size=64", "--format=pacs", "--num_workers=1"]
    subprocess.run([sys.executable, str(REPO_ROOT / "bin" / "make_synthetic_pacs"),
                    f"--output_dir={tmp_path / 'cli'}", *args], check=True, cwd=tmp_path,
                   capture_output=True)
    synthetic_pacs.make_synthetic_pacs(tmp_path / "lib", 2, 4, image_size=64, num_workers=1)
    assert _tree_hashes(tmp_path / "cli") == _tree_hashes(tmp_path / "lib")
