"""The SLICE-3D metadata columns and the quantitative attributes A studied in the paper.

``train-metadata.csv`` of the ISIC 2024 challenge (SLICE-3D) has the 55 columns below. The
paper studies 16 numeric ones (Table 1): ``PAPER_ATTRIBUTES``. Any numeric column of
SLICE-3D may be configured as an attribute (``core.names.NUMERIC_COLUMNS``, beside every column's
name: names a config may use); each configured attribute
a has a question Q(a) and an answer y_a(I), the value written with a fixed number of decimals.
"""

from __future__ import annotations

from skinground.core.names import METADATA_COLUMNS, NUMERIC_COLUMNS

#: The ``attribute`` of a group tuple or answer: ``group:<name>`` (one name everywhere: the
#: rules' questions, the tuples, the answers, the R² of groups).
GROUP_ATTRIBUTE_PREFIX = "group:"

ID_COLUMN = "isic_id"
PATIENT_COLUMN = "patient_id"
TARGET_COLUMN = "target"

#: The 16 attributes of the paper (Table 1), in the order of its figures.
PAPER_ATTRIBUTES: tuple[str, ...] = (
    "tbp_lv_areaMM2", "tbp_lv_minorAxisMM", "tbp_lv_norm_color", "tbp_lv_radial_color_std_max",
    "tbp_lv_deltaB", "tbp_lv_deltaL", "tbp_lv_deltaLB", "tbp_lv_stdLExt",
    "clin_size_long_diam_mm", "tbp_lv_perimeterMM", "tbp_lv_norm_border",
    "tbp_lv_area_perim_ratio", "tbp_lv_A", "tbp_lv_Aext", "tbp_lv_B", "tbp_lv_Bext",
)

assert set(PAPER_ATTRIBUTES) <= set(NUMERIC_COLUMNS) <= set(METADATA_COLUMNS)

#: Lengths and areas, and their ratio: never below 0 (a negative one is a broken export).
NON_NEGATIVE: frozenset[str] = frozenset({
    "tbp_lv_areaMM2", "tbp_lv_minorAxisMM", "clin_size_long_diam_mm", "tbp_lv_perimeterMM",
    "tbp_lv_area_perim_ratio",
})
#: Cells that stand for a missing id: pandas' and R's spellings of "no value" (an id spelled
#: so would join unrelated images into one patient, whose images could then land in both
#: splits).
MISSING_ID_SPELLINGS: frozenset[str] = frozenset({"nan", "na", "n/a", "none", "null", "<na>"})


