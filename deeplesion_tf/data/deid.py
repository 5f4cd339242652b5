"""De-identification: stable salted pseudonyms in place of patient identifiers.

No patient name, birth date, accession number, MRN or DICOM UID is ever written by
the dataset builder; identifiers are replaced by `pseudonym(salt, kind, value)`.
A site should keep its salt secret (the `DEEPLESION_ID_SALT` environment
variable): with a public salt, an attacker who can enumerate MRNs can re-identify.
"""

from __future__ import annotations

import hashlib
import os

DEFAULT_SALT = "deeplesion-tf"
SALT_ENV_VAR = "DEEPLESION_ID_SALT"

SPLIT_FRACTIONS = (("train", 0.70), ("validation", 0.15), ("test", 0.15))


def site_salt() -> str:
    """The salt from `DEEPLESION_ID_SALT`, or the project's public default."""
    return os.environ.get(SALT_ENV_VAR) or DEFAULT_SALT


def pseudonym(salt: str, kind: str, value: str, length: int = 16) -> str:
    """A stable hex pseudonym of `value`; `kind` keeps patients and studies apart."""
    digest = hashlib.sha256(f"{salt}\x00{kind}\x00{value}".encode("utf-8")).hexdigest()
    return digest[:length]


def patient_split(patient_pseudonym: str) -> str:
    """The split of a patient: deterministic, stable as the data grows, 70/15/15.

    A hash bucket rather than a ranked cut, so that adding patients never moves a
    patient already in the dataset to another split.
    """
    bucket = int(hashlib.sha256(f"split\x00{patient_pseudonym}".encode()).hexdigest(), 16) % 10000
    position = bucket / 10000.0
    total = 0.0
    for name, fraction in SPLIT_FRACTIONS:
        total += fraction
        if position < total:
            return name
    return SPLIT_FRACTIONS[-1][0]
