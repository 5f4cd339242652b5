"""The validation layer every reader parses its numbers with (`deeplesion_tf/data/checks.py`)."""

import numpy as np
import pytest

from deeplesion_tf.data import checks


@pytest.mark.parametrize("value, expected", [
    ("0.7", 0.7), (" -12 ", -12.0), (b"3.5", 3.5), (2, 2.0), (np.float32(1.5), 1.5),
    ("1e3", 1000.0)])
def test_numbers_that_parse(value, expected):
    assert checks.number(value, "X") == expected


@pytest.mark.parametrize("value, why", [
    ("abc", "is not a number"), ("", "is not a number"), ("1_000", "is not a number"),
    ("1,5", "is not a number"), (None, "is not a number"), ("nan", "is not finite"),
    ("Infinity", "is not finite"), ("1e999", "is not finite"), (float("-inf"), "is not finite")])
def test_values_that_are_refused_name_the_attribute(value, why):
    with pytest.raises(checks.InvalidValue) as error:
        checks.number(value, "RescaleSlope")
    assert str(error.value) == f"RescaleSlope {value!r} {why}"
    assert (error.value.attribute, error.value.why) == ("RescaleSlope", why)


def test_ranges():
    assert checks.positive("0.5", "PixelSpacing") == 0.5
    with pytest.raises(checks.InvalidValue, match=r"PixelSpacing '0' must be > 0"):
        checks.positive("0", "PixelSpacing")
    with pytest.raises(checks.InvalidValue, match=r"RescaleSlope '-0' must not be 0"):
        checks.nonzero("-0", "RescaleSlope")
    assert checks.nonzero("-1", "RescaleSlope") == -1.0
    assert checks.integer("12", "InstanceNumber") == 12
    assert checks.integer(12.0, "InstanceNumber") == 12
    with pytest.raises(checks.InvalidValue, match="is not a whole number"):
        checks.integer("12.5", "InstanceNumber")
    assert checks.numbers(["0.7", "0.8"], "PixelSpacing", 2) == (0.7, 0.8)
    with pytest.raises(checks.InvalidValue, match="has 1 values; expected 2"):
        checks.numbers("0.7", "PixelSpacing", 2)


def test_slice_size_has_a_minimum():
    assert checks.slice_size(16, 512) == (16, 512)
    with pytest.raises(checks.InvalidValue,
                       match=r"image size '1x512' is below the minimum of 16 px per side"):
        checks.slice_size(1, 512)
