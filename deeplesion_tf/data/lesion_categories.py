"""The five lesion categories planted in the synthetic PACS (paper Table 1 order).

The paper's clustering found four clinically coherent clusters (liver lesions,
lung nodules, abdominal lesions, chest lymph nodes) and a "mixed" remainder.
The synthetic PACS plants exactly these five, so the categorizer's clusters and
the detector's classes can be scored against a known truth. Its abdominal lesions
are kidney lesions and abdominal and pelvic lymph nodes (the paper's "mainly kidney
lesions and lymph nodes"); its mixed lesions are bone and soft tissue lesions
(`phantom.SITES`).
"""

from __future__ import annotations

from typing import Dict, NamedTuple, Tuple


class LesionCategory(NamedTuple):
    """One lesion category.

    Attributes:
      id: 1-based category id, as in `truth.csv`'s `category` column.
      name: the paper's name, lower case.
      short_name: the two-letter code of the paper's figures (LV, LN, ...).
    """

    id: int
    name: str
    short_name: str


LIVER_LESION = LesionCategory(1, "liver lesion", "LV")
LUNG_NODULE = LesionCategory(2, "lung nodule", "LN")
ABDOMINAL_LESION = LesionCategory(3, "abdominal lesion", "AB")
CHEST_LYMPH_NODE = LesionCategory(4, "chest lymph node", "CL")
MIXED = LesionCategory(5, "mixed", "MX")

CATEGORIES: Tuple[LesionCategory, ...] = (
    LIVER_LESION,
    LUNG_NODULE,
    ABDOMINAL_LESION,
    CHEST_LYMPH_NODE,
    MIXED,
)
NUM_CATEGORIES = len(CATEGORIES)
CATEGORIES_BY_ID: Dict[int, LesionCategory] = {c.id: c for c in CATEGORIES}
