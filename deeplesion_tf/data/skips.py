"""Why an input was skipped or repaired while building the dataset.

Nothing is dropped silently: every skipped bookmark is counted under one of these
reasons, the counts are logged at the end of a build and stored in the dataset's
metadata (`builder.info.metadata["skipped_bookmarks"]`).
"""

from __future__ import annotations

import collections
from typing import Dict, Iterable, NamedTuple, Tuple, Union

# Bookmarks (lesions) skipped, by reason.
MALFORMED_ROW = "malformed_row"            # a CSV row that cannot be parsed
DUPLICATE_BOOKMARK = "duplicate_bookmark"  # the same measurement on the same slice again
MISSING_FILE = "missing_file"              # the key slice's file does not exist
UNKNOWN_INSTANCE = "unknown_instance"      # the file exists but holds another SOPInstanceUID
UNREADABLE_FILE = "unreadable_file"        # not DICOM, truncated, undecodable, unsupported
NOT_CT = "not_ct"                          # a DICOM that is not a CT image
MISSING_TAG = "missing_tag"                # a CT without rescale or spacing
NO_PATIENT_ID = "no_patient_id"            # cannot be split by patient
INVALID_GEOMETRY = "invalid_geometry"      # zero-length axis, NaN, endpoint outside the image
MISSING_PNG = "missing_png"                # release: the key slice's PNG does not exist
NOT_16BIT_PNG = "not_16bit_png"            # release: a PNG that cannot hold HU + 32768
CORRUPT_PNG = "corrupt_png"                # release: a PNG header over data that does not decode
INVALID_VALUE = "invalid_value"            # a required header number that is not finite or in range
IMAGE_TOO_SMALL = "image_too_small"        # a slice below checks.MIN_SLICE_SIDE_PX per side
OUTSIDE_MANUAL_DIR = "outside_manual_dir"  # a path that leaves the source's root
DUPLICATE_SLICE = "duplicate_slice"        # a key slice already written, reached another way
# Bookmarks as DICOM SR (`sr_bookmarks`).
MALFORMED_REPORT = "malformed_report"      # an SR file that is not a readable TID 1500 report
UNREFERENCED_MEASUREMENT = "unreferenced_measurement"  # an axis not drawn on an image
NON_LINEAR_MEASUREMENT = "non_linear_measurement"  # not one long and one short 2-point axis

SKIP_REASONS = (
    MALFORMED_ROW, DUPLICATE_BOOKMARK, MISSING_FILE, UNKNOWN_INSTANCE, UNREADABLE_FILE, NOT_CT,
    MISSING_TAG, NO_PATIENT_ID, INVALID_GEOMETRY, MISSING_PNG, NOT_16BIT_PNG, CORRUPT_PNG,
    INVALID_VALUE, IMAGE_TOO_SMALL, OUTSIDE_MANUAL_DIR, DUPLICATE_SLICE, MALFORMED_REPORT,
    UNREFERENCED_MEASUREMENT, NON_LINEAR_MEASUREMENT,
)

# Examples kept with a repair, by kind.
NEIGHBOR_REPLACED_BY_KEY = "neighbor_replaced_by_key"  # an unreadable or missing neighbour slice
# An optional header value (window, thickness, position) present but invalid: treated as absent.
INVALID_OPTIONAL_VALUE = "invalid_optional_value"


class Skip(NamedTuple):
    """`count` bookmarks skipped for `reason`; `detail` names the input for the log."""

    reason: str
    count: int
    detail: str


class Repair(NamedTuple):
    """An example kept after a repair of kind `kind`; `detail` names the input."""

    kind: str
    detail: str


# What a source's unit of work yields: `(key, example)` pairs, skips and repairs.
Outcome = Union[Tuple[str, dict], Skip, Repair]


def tally(events: Iterable, counts: Dict[str, int] = None) -> Dict[str, int]:
    """Adds `Skip` counts (and `Repair`s, one each) into a reason -> count dict."""
    counts = collections.Counter(counts or {})
    for event in events:
        if isinstance(event, Skip):
            counts[event.reason] += event.count
        elif isinstance(event, Repair):
            counts[event.kind] += 1
    return dict(sorted(counts.items()))
