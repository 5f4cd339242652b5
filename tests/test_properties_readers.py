"""Properties of the readers, over random CSV files and random damage to PNGs.

The one property: each data row (each key slice, each PNG) ends either parsed
exactly as the input says, or as one counted `Skip` whose detail names the
input. The only exception a reader may raise is the documented file-level
`ValueError` (an undecodable encoding, a missing column), naming the file.

Expected outcomes come from models written here from the specification (a
stack walk for paths, the release's ranges for DL_info cells, TensorFlow's
`decode_png` for PNGs), not from the readers' own code. Each property runs a
few dozen examples here and a few hundred under `@pytest.mark.slow`.
"""

import csv
import io
import math
import os
import pathlib
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deeplesion_tf.data import bookmarks
from deeplesion_tf.data import pacs_source
from deeplesion_tf.data import png16
from deeplesion_tf.data import release_format
from deeplesion_tf.data import release_source
from deeplesion_tf.data import skips

_COMMON = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FAST = settings(max_examples=40, **_COMMON)
MANY = settings(max_examples=400, **_COMMON)

INVALID = object()  # A model's verdict: the reader must refuse this cell.
DUMMY_PNG = (pathlib.Path(__file__).resolve().parents[1] / "tfds_deeplesion" / "deeplesion"
             / "dummy_data" / "Images_png" / "000001_01_01" / "067.png")
# Bytes at the end of a PNG left out of the random damage: none (`png16.decode_hu`
# checks the IEND chunk as TensorFlow does; see
# `test_decode_hu_refuses_a_damaged_iend_like_tensorflow`).
_IEND = 0

# --- The file around the rows: encodings, delimiters, quoting. ---------------------------

files = st.fixed_dictionaries({
    "encoding": st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1"]),
    "delimiter": st.sampled_from([",", ";", "\t"]),
    "quoting": st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]),
    "lineterminator": st.sampled_from(["\r\n", "\n"]),
})


def _write_csv(path, header, rows, fmt):
    """Writes `rows` (lists of cells) under `header`; returns whether the text is ASCII."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=fmt["delimiter"], quoting=fmt["quoting"],
                        lineterminator=fmt["lineterminator"])
    writer.writerow(header)
    writer.writerows(rows)
    text = out.getvalue()
    if fmt["encoding"] == "latin-1":  # Latin-1 has no CJK; any non-ASCII text must be refused.
        text = text.replace("\u4e2d", "\u00e9")
    path.write_bytes(text.encode(fmt["encoding"]))
    return text.isascii()


def _same(a, b):
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a)
                      and math.isnan(b))


def _one_outcome_per_row(rows, skipped, count, prefix):
    """Data rows 1..count: each parsed or skipped exactly once; returns their outcomes."""
    outcomes = {}
    for skip in skipped:
        assert skip.count == 1, skip
        assert skip.detail.startswith(prefix), (skip, prefix)
        number = int(skip.detail[len(prefix):].split(":")[0].split(" ")[0])
        assert number not in outcomes, skip
        outcomes[number] = skip
    for row in rows:
        assert row.number not in outcomes, row
        outcomes[row.number] = row
    assert sorted(outcomes) == list(range(1, count + 1))
    return outcomes


# --- read_bookmarks ------------------------------------------------------------------

_SPECIAL_NUMBERS = {"nan": math.nan, "NaN": math.nan, "inf": math.inf, "-inf": -math.inf,
                    "1e999": math.inf, "-1e999": -math.inf, "Infinity": math.inf}
coordinates = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).flatmap(
        lambda v: st.sampled_from([(repr(v), v), (f" {v!r} ", v)])),
    st.integers(-10**6, 10**6).map(lambda n: (str(n), float(n))),
    st.sampled_from(sorted(_SPECIAL_NUMBERS.items())),
    st.sampled_from(["", " ", "abc", "1,5", "0x10", "--1", "1e", "12px"]).map(
        lambda s: (s, INVALID)),
)
_ABSOLUTE = ["/", "\\", "C:", "c:\\", "\\\\host\\share\\", "//host/"]
paths = st.tuples(
    st.sampled_from(["", "", "", "./", *_ABSOLUTE]),
    st.lists(st.tuples(st.sampled_from(["dicom", "MRN 1", "0001.dcm", "a.b", ".", "..", ""]),
                       st.sampled_from(["/", "\\"])), max_size=5),
    st.sampled_from(["", " ", "  "]),
)
noisy_cells = st.sampled_from([("", False), ("0", False), ("1", True), ("true", True),
                               ("False", False), (" 1 ", True), ("yes", INVALID),
                               ("2", INVALID), ("0.0", INVALID)])
# \r is left out: a writer with "\n" line ends leaves it unquoted, and a reader
# rightly takes it for a line end.
ids = st.text(alphabet=st.sampled_from(list("ab ,;\t\"\n\u00e9\u4e2d\x00")), max_size=6)


def _path_model(prefix, parts, pad):
    """`(raw, verdict)`: the normalised path, "" (blank), "absolute", "outside" or "root"."""
    body = prefix + "".join(name + sep for name, sep in parts[:-1]) + (
        parts[-1][0] if parts else "")
    raw = pad + body + pad
    slashed = body.replace("\\", "/")
    if not body:
        return raw, ""
    if slashed.startswith("/") or prefix in _ABSOLUTE:
        return raw, "absolute"
    stack = []
    for name in slashed.split("/"):
        if name in ("", "."):
            continue
        if name == "..":
            if not stack:
                return raw, "outside"
            stack.pop()
        else:
            stack.append(name)
    return raw, "/".join(stack) if stack else "root"


bookmark_rows = st.fixed_dictionaries({
    "uid": st.sampled_from(["", "1.2.3", "1.2.840.99.4", " 1.2.3 "]),
    "path": paths.map(lambda p: _path_model(*p)),
    "coords": st.lists(coordinates, min_size=8, max_size=8),
    "noisy": noisy_cells,
    "lesion_id": ids,
    "shape": st.sampled_from(["ok"] * 8 + ["extra", "short"]),
})
bookmark_tables = st.fixed_dictionaries({
    "file": files,
    "rows": st.lists(bookmark_rows, min_size=1, max_size=8).flatmap(
        lambda rows: st.lists(st.sampled_from(rows), max_size=3).map(lambda extra: rows + extra)),
    "optional": st.sets(st.sampled_from(["lesion_id", "noisy", "comment"])),
    "drop_required": st.sampled_from([None] * 9 + ["x22"]),
    "order": st.randoms(use_true_random=False),
    "pad_header": st.booleans(),
})


def _bookmark_model(row, number, seen):
    """The expected `BookmarkRow` fields, or the set of acceptable skip reasons."""
    if row["shape"] != "ok" or "\x00" in row["lesion_id"]:
        return {skips.MALFORMED_ROW}
    reasons = set()
    _, path = row["path"]
    uid = row["uid"].strip()
    if path in ("absolute", "outside"):
        reasons.add(skips.OUTSIDE_MANUAL_DIR)
    if path == "root" or (not uid and not path):
        reasons.add(skips.MALFORMED_ROW)
    if any(v is INVALID for _, v in row["coords"]) or row["noisy"][1] is INVALID:
        reasons.add(skips.MALFORMED_ROW)
    if reasons:
        return reasons
    coords = tuple(v for _, v in row["coords"])
    if not any(math.isnan(c) for c in coords):  # NaN never equals NaN: never a repeat.
        signature = (uid or path, tuple(round(c, 3) for c in coords))
        if signature in seen:
            return {skips.DUPLICATE_BOOKMARK}
        seen.add(signature)
    lesion_id = row["lesion_id"].strip() or f"bookmark-{number}"
    return dict(lesion_id=lesion_id, sop_instance_uid=uid, relative_path=path, coords=coords,
                noisy=row["noisy"][1])


def _check_bookmarks(tmp_path, table):
    columns = ["sop_instance_uid", "relative_path", *bookmarks.COORDINATE_NAMES,
               *sorted(table["optional"])]
    if table["drop_required"]:
        columns.remove(table["drop_required"])
    table["order"].shuffle(columns)
    cells = []
    for row in table["rows"]:
        values = {"sop_instance_uid": row["uid"], "relative_path": row["path"][0],
                  "noisy": row["noisy"][0], "lesion_id": row["lesion_id"], "comment": "a;b,c",
                  **{n: text for n, (text, _) in zip(bookmarks.COORDINATE_NAMES, row["coords"])}}
        line = [values[c] for c in columns]
        cells.append(line + ["x"] if row["shape"] == "extra" else
                     line[:-1] if row["shape"] == "short" else line)
    header = [f" {c} " if table["pad_header"] else c for c in columns]
    path = tmp_path / "bookmarks.csv"
    ascii_text = _write_csv(path, header, cells, table["file"])

    if table["file"]["encoding"] == "latin-1" and not ascii_text:
        with pytest.raises(ValueError, match=rf"^{path} line \d+: byte\(s\) 0x.. .*not UTF-8"):
            pacs_source.read_bookmarks(path)
        return
    if table["drop_required"]:
        with pytest.raises(ValueError, match=rf"^{path}: missing columns \['x22'\]"):
            pacs_source.read_bookmarks(path)
        return
    rows, skipped = pacs_source.read_bookmarks(path)
    outcomes = _one_outcome_per_row([_Numbered(r) for r in rows], skipped,
                                    len(table["rows"]), f"{path} row ")
    seen = set()
    for number, row in enumerate(table["rows"], start=1):
        if "noisy" not in table["optional"]:
            row = dict(row, noisy=("", False))
        if "lesion_id" not in table["optional"]:
            row = dict(row, lesion_id="")
        expected, got = _bookmark_model(row, number, seen), outcomes[number]
        if isinstance(expected, set):
            assert isinstance(got, skips.Skip) and got.reason in expected, (row, got)
            if got.reason == skips.OUTSIDE_MANUAL_DIR:
                why = ("is absolute: it leaves" if row["path"][1] == "absolute" else "leaves")
                assert got.detail == (f"{path} row {number}: relative_path {row['path'][0]!r} "
                                      f"{why} the manual_dir")
        else:
            assert isinstance(got, _Numbered), (row, got)
            got = got.row
            assert (got.lesion_id, got.sop_instance_uid, got.relative_path, got.noisy) == (
                expected["lesion_id"], expected["sop_instance_uid"], expected["relative_path"],
                expected["noisy"]), row
            assert all(_same(a, b) for a, b in zip(got.coords, expected["coords"])), row
            assert len(got.coords) == 8


class _Numbered:
    """A parsed row, keyed by its number for `_one_outcome_per_row`."""

    def __init__(self, row):
        self.row, self.number = row, row.row_number


@FAST
@given(table=bookmark_tables)
def test_read_bookmarks_parses_each_row_as_written_or_skips_it_by_name(tmp_path, table):
    _check_bookmarks(tmp_path, table)


@pytest.mark.slow
@MANY
@given(table=bookmark_tables)
def test_read_bookmarks_property_many_examples(tmp_path, table):
    _check_bookmarks(tmp_path, table)


@pytest.mark.parametrize("raw, reason, result", [
    ("dicom\\MRN1\\0001.dcm", None, "dicom/MRN1/0001.dcm"),
    (" ./dicom//MRN1/../MRN2/0001.dcm ", None, "dicom/MRN2/0001.dcm"),
    ("/etc/passwd", skips.OUTSIDE_MANUAL_DIR,
     "row 1: relative_path '/etc/passwd' is absolute: it leaves the manual_dir"),
    ("C:\\dicom\\0001.dcm", skips.OUTSIDE_MANUAL_DIR,
     "row 1: relative_path 'C:\\\\dicom\\\\0001.dcm' is absolute: it leaves the manual_dir"),
    ("\\\\pacs\\share\\0001.dcm", skips.OUTSIDE_MANUAL_DIR,
     "row 1: relative_path '\\\\\\\\pacs\\\\share\\\\0001.dcm' is absolute: it leaves the "
     "manual_dir"),
    ("dicom/../../0001.dcm", skips.OUTSIDE_MANUAL_DIR,
     "row 1: relative_path 'dicom/../../0001.dcm' leaves the manual_dir"),
    ("dicom/..", skips.MALFORMED_ROW, "row 1: relative_path 'dicom/..' names the root, not a file"),
])
def test_relative_paths_are_normalised_or_refused(tmp_path, raw, reason, result):
    path = tmp_path / "bookmarks.csv"
    _write_csv(path, ["relative_path", "sop_instance_uid", *bookmarks.COORDINATE_NAMES],
               [[raw, "", *"10 12 20 16 15 10 16 19".split()]],
               {"encoding": "utf-8", "delimiter": ",", "quoting": csv.QUOTE_MINIMAL,
                "lineterminator": "\n"})
    rows, skipped = pacs_source.read_bookmarks(path)
    if reason is None:
        assert [r.relative_path for r in rows] == [result] and skipped == []
    else:
        assert rows == [] and skipped == [skips.Skip(reason, 1, f"{path} {result}")]


def test_one_bookmark_spelt_two_ways_is_one_bookmark(tmp_path):
    path = tmp_path / "bookmarks.csv"
    coords = "10 12 20 16 15 10 16 19".split()
    _write_csv(path, ["relative_path", "sop_instance_uid", *bookmarks.COORDINATE_NAMES],
               [["dicom\\a\\0001.dcm", "", *coords], ["dicom/./a//0001.dcm", "", *coords],
                ["dicom/a/0001.dcm", "", "1e999", *coords[1:]]],
               {"encoding": "utf-8", "delimiter": ";", "quoting": csv.QUOTE_MINIMAL,
                "lineterminator": "\r\n"})
    rows, skipped = pacs_source.read_bookmarks(path)
    assert skipped == [skips.Skip(skips.DUPLICATE_BOOKMARK, 1, f"{path} row 2: repeats a bookmark")]
    assert [(r.row_number, r.relative_path, r.coords[0]) for r in rows] == [
        (1, "dicom/a/0001.dcm", 10.0), (3, "dicom/a/0001.dcm", math.inf)]


# --- read_dl_info --------------------------------------------------------------------

def _formats(n):
    return st.sampled_from([str(n), f"{n}.0", f" {n} "])


def whole(minimum=1):
    return st.one_of(
        st.integers(minimum, 999).flatmap(lambda n: _formats(n).map(lambda s: (s, n))),
        st.sampled_from(["0", "-2", "1.5", "", "x", "nan", "inf", "1e999"]).map(
            lambda s: (s, INVALID)))


def floats_cell(count, valid, values):
    """A list cell of `count` numbers, valid when `valid(values)`; sometimes another count."""
    def cell(items):
        texts, numbers = zip(*items)
        ok = len(items) == count and not any(v is INVALID for v in numbers) and valid(numbers)
        return ", ".join(texts), (tuple(numbers) if ok else INVALID)
    number = st.one_of(
        values.map(lambda v: (repr(v), v)),
        st.sampled_from(["nan", "inf", "-1e999", "", "x"]).map(lambda s: (s, INVALID)))
    return st.one_of(st.lists(number, min_size=count, max_size=count),
                     st.lists(number, min_size=count - 1, max_size=count - 1)).map(cell)


def choice(valid, invalid):
    return st.one_of(
        st.sampled_from(valid).flatmap(lambda n: _formats(n).map(lambda s: (s, n))),
        st.sampled_from(invalid).map(lambda s: (s, INVALID)))


@st.composite
def dl_info_rows(draw):
    row = {name: draw(whole()) for name in
           ("Patient_index", "Study_index", "Series_ID", "Key_slice_index")}
    key = row["Key_slice_index"][1]
    ids = [row[c][1] for c in ("Patient_index", "Study_index", "Series_ID", "Key_slice_index")]
    if INVALID in ids:
        row["File_name"] = (draw(st.sampled_from(["000001_01_01_001.png", "x"])), None)
    else:
        name = release_format.key_slice_file_name(*ids)
        other = release_format.key_slice_file_name(*ids[:3], ids[3] + 1)
        row["File_name"] = draw(st.sampled_from(
            [(name, name), (name, name), (f" {name} ", name), (other, INVALID),
             (name[:-4] + ".jpg", INVALID)]))
    if key is INVALID:
        row["Slice_range"] = (draw(st.sampled_from(["1, 5", "x"])), None)
    else:
        below, above = draw(st.integers(-2, 3)), draw(st.integers(-2, 3))
        low, high = key - below, key + above
        ok = 1 <= low <= key <= high
        row["Slice_range"] = draw(st.sampled_from(
            [(f"{low}, {high}", (low, high) if ok else INVALID),
             (f"{low}.0, {high}", (low, high) if ok else INVALID),
             (f"{low}", INVALID), (f"{low}.5, {high}", INVALID)]))
    row["Measurement_coordinates"] = draw(floats_cell(
        8, lambda v: True, st.floats(-1e4, 1e4, allow_nan=False)))
    row["Spacing_mm_px_"] = draw(floats_cell(
        3, lambda v: min(v) > 0, st.one_of(st.floats(1e-3, 1e3), st.sampled_from(
            [0.0, -0.5, 1e300])).map(float)))
    row["DICOM_windows"] = draw(floats_cell(
        2, lambda v: v[0] < v[1], st.floats(-3000, 3000, allow_nan=False)))
    row["Coarse_lesion_type"] = draw(choice([-1, 1, 2, 3, 4, 5, 6, 7, 8], ["0", "9", "-2", "x"]))
    row["Possibly_noisy"] = draw(choice([0, 1], ["2", "-1", "true", ""]))
    row["Train_Val_Test"] = draw(choice([1, 2, 3], ["0", "4", "train", ""]))
    junk = st.text(alphabet=st.sampled_from(list("1, ;\"x\u00e9\n")), max_size=6)
    for name in ("Bounding_boxes", "Lesion_diameters_Pixel_", "Normalized_lesion_location",
                 "Image_size", "Patient_gender", "Patient_age"):
        row[name] = (draw(junk), None)  # Not read: anything goes.
    row["shape"] = draw(st.sampled_from(["ok"] * 9 + ["extra", "short"]))
    return row


dl_info_tables = st.fixed_dictionaries({
    "file": files,
    "rows": st.lists(dl_info_rows(), min_size=1, max_size=6),
    "columns": st.permutations(release_format.DL_INFO_COLUMNS),
    "drop": st.sampled_from([None] * 9 + ["Spacing_mm_px_"]),
})


def _check_dl_info(tmp_path, table):
    columns = [c for c in table["columns"] if c != table["drop"]]
    cells = []
    for row in table["rows"]:
        line = [row[c][0] for c in columns]
        cells.append(line + ["x"] if row["shape"] == "extra" else
                     line[:-1] if row["shape"] == "short" else line)
    path = tmp_path / "DL_info.csv"
    ascii_text = _write_csv(path, columns, cells, table["file"])
    if table["file"]["encoding"] == "latin-1" and not ascii_text:
        with pytest.raises(ValueError, match=rf"^{path} line \d+: byte\(s\) 0x.. .*not UTF-8"):
            release_source.read_dl_info(path)
        return
    if table["drop"]:
        with pytest.raises(ValueError, match=rf"^{path}: not a DL_info.csv, missing columns "
                                             r"\['Spacing_mm_px_'\]"):
            release_source.read_dl_info(path)
        return
    rows, skipped = release_source.read_dl_info(path)
    # Data rows are 0-based here (the lesion id); shift to 1-based for the count.
    outcomes = _one_outcome_per_row(
        [_Indexed(r) for r in rows],
        [s._replace(detail=_shift(s.detail, f"{path} data row ")) for s in skipped],
        len(table["rows"]), f"{path} data row ")
    for index, row in enumerate(table["rows"]):
        got = outcomes[index + 1]
        invalid = [c for c in release_format.DL_INFO_COLUMNS if row[c][1] is INVALID]
        if row["shape"] != "ok":
            assert isinstance(got, skips.Skip) and got.reason == skips.MALFORMED_ROW, (row, got)
            assert "fields; the header has 18" in got.detail
        elif invalid:
            assert isinstance(got, skips.Skip) and got.reason == skips.MALFORMED_ROW, (row, got)
            assert any(f": {c} " in got.detail for c in invalid), (invalid, got.detail)
        else:
            assert isinstance(got, _Indexed), (row, got)
            got = got.row
            value = {c: v for c, (_, v) in row.items() if c != "shape"}
            assert got.row_index == index
            assert (got.file_name, got.patient, got.study, got.series, got.key_slice) == (
                value["File_name"], value["Patient_index"], value["Study_index"],
                value["Series_ID"], value["Key_slice_index"])
            assert got.coords == tuple(v - 1.0 for v in value["Measurement_coordinates"])
            assert got.slice_range == value["Slice_range"]
            assert got.spacing_xyz == value["Spacing_mm_px_"]
            assert got.window == value["DICOM_windows"]
            assert (got.coarse_type, got.noisy, got.split) == (
                value["Coarse_lesion_type"], value["Possibly_noisy"] == 1,
                release_format.SPLITS[value["Train_Val_Test"]])


def _shift(detail, prefix):
    number, rest = detail[len(prefix):].split(" ", 1)
    return f"{prefix}{int(number) + 1} {rest}"


class _Indexed:
    def __init__(self, row):
        self.row, self.number = row, row.row_index + 1


@FAST
@given(table=dl_info_tables)
def test_read_dl_info_parses_each_row_as_written_or_skips_it_by_name(tmp_path, table):
    _check_dl_info(tmp_path, table)


@pytest.mark.slow
@MANY
@given(table=dl_info_tables)
def test_read_dl_info_property_many_examples(tmp_path, table):
    _check_dl_info(tmp_path, table)


# --- PNG damage ----------------------------------------------------------------------

def _tf_decode(data):
    """TensorFlow's verdict on a PNG: `[rows, columns]` uint16 values, or None."""
    import tensorflow as tf

    try:
        return tf.io.decode_png(data, channels=0, dtype=tf.uint16).numpy()
    except (tf.errors.InvalidArgumentError, ValueError):
        return None


@st.composite
def damage(draw, size):
    """`(name, function bytes -> bytes)`: a random damage anywhere in the file."""
    end = size - _IEND
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "append"]))
    if kind == "flip":
        edits = draw(st.lists(st.tuples(st.integers(0, end - 1), st.integers(1, 255)),
                              min_size=1, max_size=3))

        def apply(data):
            data = bytearray(data)
            for i, x in edits:
                data[i] ^= x
            return bytes(data)
        return f"flip {edits}", apply
    if kind == "truncate":
        n = draw(st.integers(0, end))
        return f"truncate to {n}", lambda data: data[:n]
    if kind == "insert":
        i, b = draw(st.integers(0, end - 1)), draw(st.binary(min_size=1, max_size=4))
        return f"insert {b!r} at {i}", lambda data: data[:i] + b + data[i:]
    if kind == "delete":
        i, n = draw(st.integers(0, end - 1)), draw(st.integers(1, 4))
        return f"delete {n} at {i}", lambda data: data[:i] + data[i + n:]
    tail = draw(st.binary(min_size=1, max_size=16))
    return f"append {tail!r}", lambda data: data + tail


_RELEASE_PNG = DUMMY_PNG.read_bytes()


def _check_decode_hu(change):
    name, apply = change
    data = apply(_RELEASE_PNG)
    expected = _tf_decode(data)
    try:
        hu = png16.decode_hu(data)
    except ValueError as e:
        assert expected is None, (name, e)
        return
    assert expected is not None, name
    np.testing.assert_array_equal(hu + release_format.HU_OFFSET, expected[..., 0], err_msg=name)


@FAST
@given(change=damage(len(_RELEASE_PNG)))
def test_decode_hu_agrees_with_tensorflow_on_damaged_release_pngs(change):
    _check_decode_hu(change)


@pytest.mark.slow
@MANY
@given(change=damage(len(_RELEASE_PNG)))
def test_decode_hu_agrees_with_tensorflow_many_examples(change):
    _check_decode_hu(change)


def _iend_damaged(data):
    data = bytearray(data)
    data[-1] ^= 0xFF  # the IEND chunk's CRC
    return bytes(data)


def test_decode_hu_refuses_a_damaged_iend_like_tensorflow():
    data = _iend_damaged(_RELEASE_PNG)
    assert _tf_decode(data) is None
    with pytest.raises(ValueError):
        png16.decode_hu(data)


# A tiny release tree: one series of three 32 x 32 slices, the key slice in the middle.
_SIZE = 32
_SLICES = {n: png16.encode_hu(np.random.default_rng(n).integers(-1000, 1000, (_SIZE, _SIZE)))
           for n in (1, 2, 3)}
_ROW = release_source.ReleaseRow(
    row_index=0, file_name="000001_01_01_002.png", patient=1, study=1, series=1, key_slice=2,
    coords=bookmarks.from_release_coordinates((10, 12, 20, 16, 15, 10, 16, 19)),
    coarse_type=-1, noisy=False, slice_range=(1, 3), spacing_xyz=(0.8, 0.8, 5.0),
    window=(-175.0, 275.0), split="train")
_TASK = release_source.KeySliceTask(_ROW.file_name, (_ROW,))
# Whole-file replacements and the reason each must give when it is the key slice.
_REPLACEMENTS = {
    "missing": (None, skips.MISSING_PNG),
    "empty": (b"", skips.NOT_16BIT_PNG),
    "8-bit": (None, skips.NOT_16BIT_PNG),  # written below with Pillow
    "8 x 8": (png16.encode_hu(np.zeros((8, 8))), skips.IMAGE_TOO_SMALL),
}


def _eight_bit():
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.full((_SIZE, _SIZE), 7, np.uint8)).save(out, format="PNG")
    return out.getvalue()


slice_damage = st.one_of(
    damage(min(len(data) for data in _SLICES.values())),  # IEND left intact in each
    st.sampled_from(sorted(_REPLACEMENTS)).map(lambda name: (name, None)),
)


def _check_key_slice(tmp_path, target, change):
    folder = tmp_path / "Images_png" / "000001_01_01"
    folder.mkdir(parents=True, exist_ok=True)
    for number, data in _SLICES.items():
        (folder / release_format.slice_file(number)).write_bytes(data)
    name, apply = change
    path = folder / release_format.slice_file(target)
    if apply is None:
        data, reason = _REPLACEMENTS[name]
        data = _eight_bit() if name == "8-bit" else data
        expected = None
    else:
        data, reason = apply(_SLICES[target]), None
        decoded = _tf_decode(data)
        expected = None if decoded is None or decoded.shape != (_SIZE, _SIZE, 1) else data
    if data is None:
        os.remove(path)
    else:
        path.write_bytes(data)

    outcomes = release_source.process_key_slice(tmp_path / "Images_png", _TASK, 5.0)
    examples = [o for o in outcomes if type(o) is tuple]
    events = [o for o in outcomes if type(o) is not tuple]
    if target == 2 and expected is None:  # The key slice: refused, naming its file.
        assert examples == [] and len(events) == 1, (name, outcomes)
        (skip,) = events
        assert isinstance(skip, skips.Skip) and skip.count == 1, (name, skip)
        assert skip.detail.startswith(f"{path}: "), skip
        allowed = {reason} if reason else {skips.CORRUPT_PNG, skips.NOT_16BIT_PNG}
        assert skip.reason in allowed, (name, skip)
        return
    # Kept: the key slice's bytes as written, its lesion, and each neighbour passed
    # through or replaced by the key slice with a counted repair naming it.
    assert len(examples) == 1, (name, outcomes)
    key, example = examples[0]
    assert key == "000001_01_01_002"
    assert example["image"] == (data if target == 2 else _SLICES[2])
    assert list(example["lesions"]["lesion_id"]) == ["0"]
    assert example["next_slice"] == _SLICES[3]
    if target == 2 or expected is not None:
        assert events == [], (name, events)
        assert example["previous_slice"] == (data if target == 1 else _SLICES[1])
    else:
        assert example["previous_slice"] == _SLICES[2]
        assert [(e.kind, e.detail.startswith(f"{_ROW.file_name}: previous_slice {path}: "))
                for e in events] == [(skips.NEIGHBOR_REPLACED_BY_KEY, True)], (name, events)


@FAST
@given(target=st.sampled_from([1, 2]), change=slice_damage)
def test_process_key_slice_writes_what_decodes_and_names_what_does_not(tmp_path, target, change):
    _check_key_slice(tmp_path, target, change)


@pytest.mark.slow
@MANY
@given(target=st.sampled_from([1, 2]), change=slice_damage)
def test_process_key_slice_property_many_examples(tmp_path, target, change):
    _check_key_slice(tmp_path, target, change)


def test_a_release_png_ends_with_an_empty_iend_chunk():
    tail = _RELEASE_PNG[-12:]
    assert tail == struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))


@pytest.mark.parametrize("target", [1, 2])
def test_a_slice_that_cannot_be_read_is_named_not_raised(tmp_path, target):
    folder = tmp_path / "Images_png" / "000001_01_01"
    folder.mkdir(parents=True)
    for number, data in _SLICES.items():
        if number != target:
            (folder / release_format.slice_file(number)).write_bytes(data)
    path = folder / release_format.slice_file(target)
    path.mkdir()  # exists, and reading it raises IsADirectoryError
    outcomes = release_source.process_key_slice(tmp_path / "Images_png", _TASK, 5.0)
    if target == 2:
        assert outcomes == [skips.Skip(skips.UNREADABLE_FILE, 1,
                                       f"{path}: cannot be read (IsADirectoryError: [Errno 21] "
                                       f"Is a directory: '{path}')")]
    else:
        (repair, (key, example)) = outcomes
        assert repair == skips.Repair(
            skips.NEIGHBOR_REPLACED_BY_KEY,
            f"{_ROW.file_name}: previous_slice {path}: cannot be read (IsADirectoryError: "
            f"[Errno 21] Is a directory: '{path}')")
        assert (key, example["previous_slice"], example["next_slice"]) == (
            "000001_01_01_002", _SLICES[2], _SLICES[3])
