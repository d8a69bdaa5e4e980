"""The SLICE-3D reader: metadata, the two image layouts, and every bad-input error."""


import numpy as np
import polars as pl
import pytest

from skinground.data.attributes import METADATA_COLUMNS, PAPER_ATTRIBUTES
from skinground.data.images import open_images
from skinground.data.manifest import build_manifest
from skinground.data.metadata import DataError, read_metadata

from conftest import make_rows, run_script, write_slice3d

ATTRS = list(PAPER_ATTRIBUTES)


def test_manifest_has_ids_patients_and_float_attributes(dataset):
    csv_path, images = dataset
    frame, report = build_manifest(csv_path, images, ATTRS, zero_is_missing=[],
                                   verify_decode=True)
    assert frame.columns == ["isic_id", "patient_id", "target", *ATTRS]
    assert frame.height == 60 and report["images"] == 60 and report["patients"] == 12
    assert all(frame[c].dtype == pl.Float64 for c in ATTRS)
    assert report["malignant"] == int(frame["target"].sum()) > 0


def test_hdf5_and_jpeg_folder_give_the_same_images(tmp_path):
    rows = make_rows(6, 2)
    _, h5 = write_slice3d(tmp_path / "a", rows, fmt="hdf5")
    _, folder = write_slice3d(tmp_path / "b", rows, fmt="jpeg")
    with open_images(h5) as a, open_images(folder) as b:
        assert a.ids() == b.ids() == {r["isic_id"] for r in rows}
        for r in rows:
            assert a.read_bytes(r["isic_id"]) == b.read_bytes(r["isic_id"])
            img = a.read(r["isic_id"])
            assert img.mode == "RGB" and img.size[0] == img.size[1]
            assert np.array_equal(np.asarray(img), np.asarray(b.read(r["isic_id"])))


def test_missing_column_names_column_and_file(tmp_path):
    rows = make_rows(4, 2)
    columns = [c for c in rows[0] if c != "tbp_lv_deltaB"]
    csv_path, _ = write_slice3d(tmp_path, rows, columns=columns)
    with pytest.raises(DataError, match=r"train-metadata\.csv.*tbp_lv_deltaB"):
        read_metadata(csv_path, ATTRS)


def test_image_missing_names_first_ids_and_count(tmp_path):
    rows = make_rows(20, 4)
    csv_path, h5 = write_slice3d(tmp_path, rows, images={
        r["isic_id"]: b"" for r in rows[:10]})  # placeholders: only existence is checked
    with pytest.raises(DataError, match=r"10 .* row\(s\) without an image .*ISIC_0000010, "
                                        r".*\(10 in all\)"):
        build_manifest(csv_path, h5, ATTRS, zero_is_missing=[], verify_decode=False)
    # Within data.max_unmatched_images the rows are dropped and counted.
    frame, report = build_manifest(csv_path, h5, ATTRS, zero_is_missing=[],
                                   verify_decode=False, max_unmatched=0.5)
    assert frame.height == 10 and report["images"] == 10
    assert report["rows_without_image"] == 10 and report["images_without_row"] == 0


def test_images_without_a_row_are_counted_or_stop(tmp_path):
    """A metadata file that lost rows (a cut download) while the images are all there."""
    rows = make_rows(20, 4)
    csv_path, h5 = write_slice3d(tmp_path, rows)
    write_slice3d(tmp_path / "short", rows[:12], images={})
    short = tmp_path / "short" / "train-metadata.csv"
    with pytest.raises(DataError, match=r"8 image\(s\) in .* without a row in .*short.*"
                                        r"ISIC_0000012"):
        build_manifest(short, h5, ATTRS, zero_is_missing=[], verify_decode=False)
    frame, report = build_manifest(short, h5, ATTRS, zero_is_missing=[], verify_decode=False,
                                   max_unmatched=0.5)
    assert frame.height == 12 and report["images_without_row"] == 8


@pytest.mark.parametrize("cut", ["mid-line", "mid-value", "mid-quoted"])
def test_a_cut_metadata_file_names_the_line(tmp_path, cut):
    rows = make_rows(20, 4)
    rows[-1][METADATA_COLUMNS[-1]] = "2.798151"  # the value the cut goes through
    csv_path, _ = write_slice3d(tmp_path, rows, images={})
    text = csv_path.read_bytes()
    lines = text.splitlines(keepends=True)
    if cut == "mid-line":  # the last record loses its last fields
        damaged = b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2]
        message = r"line 21 has \d+ field\(s\), the header 55"
    elif cut == "mid-value":  # the last value cut: the fields are all there, no newline
        damaged = text.rstrip(b"\r\n")[:-5]  # 2.798151 -> 2.7
        message = r"the last line \(21\) does not end with a newline"
    else:  # a cell quoted across the cut: the parser would swallow the rest
        damaged = b"".join(lines[:11]) + b'"ISIC_broken,' + b"".join(lines[12:])
        message = r"line 12 opens a double-quoted field that never closes"
    csv_path.write_bytes(damaged)
    with pytest.raises(DataError, match=message):
        read_metadata(csv_path, ATTRS)


@pytest.mark.parametrize("fmt", ["hdf5", "jpeg"])
def test_corrupt_jpeg_names_the_id(tmp_path, fmt):
    rows = make_rows(5, 2)
    from conftest import jpeg_bytes
    images = {r["isic_id"]: jpeg_bytes(64, i) for i, r in enumerate(rows)}
    images["ISIC_0000003"] = images["ISIC_0000003"][:200]  # truncated
    csv_path, img = write_slice3d(tmp_path, rows, fmt=fmt, images=images)
    with pytest.raises(DataError, match="image ISIC_0000003: not a readable image"):
        build_manifest(csv_path, img, ATTRS, zero_is_missing=[], verify_decode=True)
    images["ISIC_0000003"] = b"not a jpeg at all"
    with open_images(write_slice3d(tmp_path / "g", rows, fmt=fmt, images=images)[1]) as store:
        with pytest.raises(DataError, match="image ISIC_0000003: not a readable image"):
            store.read("ISIC_0000003")


def test_duplicated_id_is_named(tmp_path):
    rows = make_rows(6, 2)
    rows[4]["isic_id"] = rows[1]["isic_id"]
    csv_path, _ = write_slice3d(tmp_path, rows, images={})
    with pytest.raises(DataError, match="duplicated isic_id ISIC_0000001"):
        read_metadata(csv_path, ATTRS)


@pytest.mark.parametrize(("damage", "message"), [
    ("latin-1", r"line 5 is not UTF-8 text \(byte 0xe9"),
    ("cr-only", r"line 1 ends with a bare CR"),
    ("inner-quote", r"line 5, column \d+: a double quote inside an unquoted field"),
    ("stray-quote", r"line 5 opens a double-quoted field that never closes"),
    ("quote-then-text", r"line 5: ',' expected after '\"'"),
    ("repeated-column", r"column\(s\) tbp_lv_A appear more than once in the header"),
])
def test_an_unreadable_csv_names_the_file_and_line(tmp_path, damage, message):
    rows = make_rows(6, 2)
    csv_path, _ = write_slice3d(tmp_path, rows, images={})
    lines = csv_path.read_bytes().split(b"\n")
    line = lines[4]  # line 5 of the file
    if damage == "latin-1":
        lines[4] = line.replace(b"IP_", "IP_\u00e9".encode("latin-1"), 1)
    elif damage == "inner-quote":
        lines[4] = line.replace(b"IP_", b'IP"_', 1)
    elif damage == "stray-quote":
        lines[4] = line.replace(b"IP_", b'"IP_', 1)
    elif damage == "quote-then-text":
        lines[4] = line.replace(b",IP_", b',"IP"_', 1)
    elif damage == "repeated-column":
        lines[0] = lines[0].replace(b"tbp_lv_B", b"tbp_lv_A", 1)
    data = b"\n".join(lines)
    if damage == "cr-only":
        data = data.replace(b"\n", b"\r")
    csv_path.write_bytes(data)
    with pytest.raises(DataError, match=str(csv_path.name) + ".*" + message):
        read_metadata(csv_path, ATTRS)


def test_a_padded_duplicate_id_is_a_duplicate(tmp_path):
    """ " ISIC_1 " under another patient is ISIC_1 again: it would sit in train and test."""
    rows = make_rows(6, 2)
    rows[4]["isic_id"] = f" {rows[1]['isic_id']} "
    csv_path, _ = write_slice3d(tmp_path, rows, images={})
    with pytest.raises(DataError, match="duplicated isic_id ISIC_0000001"):
        read_metadata(csv_path, ATTRS)


@pytest.mark.parametrize(("value", "what"), [
    ("12,5", "non-numeric"), ("inf", "infinite"), ("-inf", "infinite"),
    ("Infinity", "infinite"), ("1e400", "infinite"),  # no measurement is infinite
])
def test_a_bad_number_names_column_and_line(tmp_path, value, what):
    rows = make_rows(6, 2)
    rows[3]["tbp_lv_A"] = value
    csv_path, _ = write_slice3d(tmp_path, rows, images={})
    with pytest.raises(DataError, match=rf"{what} value in column tbp_lv_A: line 5: '{value}'"):
        read_metadata(csv_path, ATTRS)


def test_empty_patient_is_named(tmp_path):
    rows = make_rows(6, 2)
    rows[2]["patient_id"] = ""
    csv_path, _ = write_slice3d(tmp_path, rows, images={})
    with pytest.raises(DataError, match="empty patient_id on line.* 4"):
        read_metadata(csv_path, ATTRS)


@pytest.mark.parametrize("spelled", ["nan", "NaN", " NA ", "None", "null"])
@pytest.mark.parametrize("column", ["patient_id", "isic_id"])
def test_an_id_spelled_as_missing_is_refused(tmp_path, column, spelled):
    """``patient_id = nan`` on rows of several patients would make them one patient, whose
    images could then land in both splits: refused, naming the line."""
    rows = make_rows(6, 6)
    rows[2][column] = spelled
    csv_path, _ = write_slice3d(tmp_path, rows, images={})
    with pytest.raises(DataError, match=rf"{column} spelled as a missing value: line 4: "):
        read_metadata(csv_path, ATTRS)


@pytest.mark.parametrize("column", ["tbp_lv_areaMM2", "tbp_lv_perimeterMM",
                                    "clin_size_long_diam_mm"])
def test_a_negative_size_is_refused(tmp_path, column):
    rows = make_rows(6, 2)
    rows[4][column] = "-3.5"
    csv_path, _ = write_slice3d(tmp_path, rows, images={})
    with pytest.raises(DataError, match=rf"negative value in column {column}, a length or "
                                        r"area: line 6: -3.5"):
        read_metadata(csv_path, ATTRS)
    rows[4][column] = "3.5"
    rows[4]["tbp_lv_deltaB"] = "-3.5"  # a contrast may be negative
    csv_path, _ = write_slice3d(tmp_path / "ok", rows, images={})
    assert read_metadata(csv_path, ATTRS)[0]["tbp_lv_deltaB"][4] == -3.5


def test_an_attribute_without_any_value_is_refused(tmp_path):
    """Empty, NaN or a zero read as missing on every row: nothing to train or evaluate on
    (the probe failed on it hours later)."""
    rows = make_rows(6, 2)
    for i, row in enumerate(rows):
        row["tbp_lv_stdLExt"] = ("", "NaN", "0")[i % 3]
    csv_path, _ = write_slice3d(tmp_path, rows, images={})
    with pytest.raises(DataError, match=r"no value at all in column\(s\) tbp_lv_stdLExt"):
        read_metadata(csv_path, ATTRS, zero_is_missing=["tbp_lv_stdLExt"])
    rows[0]["tbp_lv_stdLExt"] = "1.5"
    csv_path, _ = write_slice3d(tmp_path / "one", rows, images={})
    assert read_metadata(csv_path, ATTRS, zero_is_missing=["tbp_lv_stdLExt"])[0].height == 6


def test_missing_values_policy_and_counts(tmp_path):
    rows = make_rows(10, 2)
    rows[0]["tbp_lv_areaMM2"] = ""
    rows[1]["tbp_lv_areaMM2"] = "0"
    rows[2]["tbp_lv_areaMM2"] = "NaN"
    rows[3]["tbp_lv_deltaB"] = "0.0"  # 0 is a real value for a contrast
    csv_path, _ = write_slice3d(tmp_path, rows, images={})
    frame, report = read_metadata(csv_path, ATTRS, zero_is_missing=["tbp_lv_areaMM2"])
    area = frame["tbp_lv_areaMM2"]
    assert area[:3].is_null().all() and area[3:].is_not_null().all()
    assert frame["tbp_lv_deltaB"][3] == 0.0
    assert report["missing"]["tbp_lv_areaMM2"] == {"empty_or_nan": 2, "zero": 1, "total": 3}
    assert report["missing"]["tbp_lv_deltaB"]["total"] == 0
    # Without the policy, the zero stays a value.
    frame, _ = read_metadata(csv_path, ATTRS, zero_is_missing=[])
    assert frame["tbp_lv_areaMM2"][1] == 0.0


def test_manifest_script_fails_cleanly_and_writes_nothing(tmp_path):
    rows = make_rows(6, 2)
    rows[5]["isic_id"] = rows[0]["isic_id"]
    csv_path, h5 = write_slice3d(tmp_path, rows)
    out = tmp_path / "out"
    proc = run_script("manifest", tmp_path, input={"metadata": csv_path, "images": h5},
                      output={"manifest": out / "manifest.parquet",
                              "report": out / "report.json"},
                      params={"data": {"zero_is_missing": [], "verify_decode": True,
                                       "max_unmatched_images": 0.0},
                              "attributes": ["tbp_lv_A"]})
    assert proc.returncode == 1
    assert "duplicated isic_id ISIC_0000000" in proc.log
    assert "Traceback" not in proc.log + proc.stderr
    assert not out.exists() or not any(out.iterdir())


def test_labels_are_read_as_text_for_the_given_ids(tmp_path):
    from skinground.data.metadata import DataError, read_labels

    csv = tmp_path / "meta.csv"
    csv.write_text("isic_id,target,iddx_1\n ISIC_2 ,0,Benign\nISIC_1,1, Malignant\n"
                   "ISIC_3,0,\n", encoding="utf-8")
    labels = read_labels(csv, ["iddx_1", "target"], ["ISIC_1", "ISIC_2", "ISIC_3"])
    assert labels.to_dicts() == [
        {"isic_id": "ISIC_1", "iddx_1": "Malignant", "target": "1"},
        {"isic_id": "ISIC_2", "iddx_1": "Benign", "target": "0"},
        {"isic_id": "ISIC_3", "iddx_1": None, "target": "0"}]
    assert read_labels(csv, ["iddx_1"], ["ISIC_3"]).height == 1
    with pytest.raises(DataError, match=r"meta.csv: missing column\(s\) iddx_2"):
        read_labels(csv, ["iddx_2"], ["ISIC_1"])
