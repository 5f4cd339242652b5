"""Where a number enters the system: parsed, range-checked, or refused by name.

Every reader (DICOM headers, the bookmark export, `DL_info.csv`, PNG headers,
`bin/detect`'s inputs) turns its raw values into numbers here, so that one bad
value gives one typed error naming the attribute and the value, never a bare
`ValueError` from `float()` deep inside a build.
"""

from __future__ import annotations

import math
from typing import Tuple

# Smallest side of a slice the project accepts, in pixels: one cell of the
# backbone's stride-16 feature map. CT slices have 256 to 1024; a smaller
# "slice" is a thumbnail, a scout line or a broken export, and a detector run on
# it returns boxes squeezed to nothing.
MIN_SLICE_SIDE_PX = 16


class InvalidValue(ValueError):
    """A value that is not what its attribute must hold.

    Attributes:
      attribute: the name of the attribute (a DICOM keyword, a CSV column).
      value: the raw value, as found.
      why: what is wrong with it, in words.
    """

    def __init__(self, attribute: str, value, why: str):
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        super().__init__(f"{attribute} {shown} {why}")
        self.attribute = attribute
        self.value = value
        self.why = why


def _text(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value).strip()


def number(value, attribute: str) -> float:
    """`value` (a number, a numeric string, DICOM DS/IS) as a finite float.

    Raises:
      InvalidValue: not a number, or NaN or infinite.
    """
    try:
        if isinstance(value, (int, float)):
            result = float(value)
        else:
            text = _text(value)
            if "_" in text:  # Python's float() reads "1_000"; no export means 1000 by it.
                raise ValueError(text)
            result = float(text)
    except (TypeError, ValueError, OverflowError):
        raise InvalidValue(attribute, value, "is not a number") from None
    if not math.isfinite(result):
        raise InvalidValue(attribute, value, "is not finite")
    return result


def positive(value, attribute: str) -> float:
    """A finite float > 0 (spacings, thicknesses, window widths)."""
    result = number(value, attribute)
    if result <= 0:
        raise InvalidValue(attribute, value, "must be > 0")
    return result


def nonzero(value, attribute: str) -> float:
    """A finite float other than 0 (a rescale slope of 0 makes every pixel one value)."""
    result = number(value, attribute)
    if result == 0:
        raise InvalidValue(attribute, value, "must not be 0")
    return result


def integer(value, attribute: str) -> int:
    """A finite whole number as an int (`"12"`, `12.0` and DICOM IS pass; `"12.5"` fails)."""
    result = number(value, attribute)
    if result != int(result):
        raise InvalidValue(attribute, value, "is not a whole number")
    return int(result)


def numbers(values, attribute: str, count: int) -> Tuple[float, ...]:
    """Exactly `count` finite floats from a multi-valued attribute.

    Raises:
      InvalidValue: another number of values, or one that is not a finite number.
    """
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        values = [values]
    if len(values) != count:
        raise InvalidValue(attribute, values, f"has {len(values)} values; expected {count}")
    return tuple(number(v, attribute) for v in values)


def slice_size(height, width, attribute: str = "image size") -> Tuple[int, int]:
    """`(height, width)` as ints, each at least `MIN_SLICE_SIDE_PX`.

    Raises:
      InvalidValue: a side below the minimum (or not a whole number).
    """
    height, width = integer(height, attribute), integer(width, attribute)
    if min(height, width) < MIN_SLICE_SIDE_PX:
        raise InvalidValue(attribute, f"{height}x{width}",
                           f"is below the minimum of {MIN_SLICE_SIDE_PX} px per side")
    return height, width
