"""Kaggle CSV readers: formats, validation errors naming file/line/column, skip mode, Ray Data parsing."""
from __future__ import annotations

import bz2
import gzip
import lzma
import zipfile
from pathlib import Path

import numpy as np
import pytest

from facepipe.data import (
    EMOTIONS,
    KAGGLE_KEYPOINT_COLUMNS,
    CSVFormatError,
    KeypointSchema,
    detect_format,
    read_table,
)
from facepipe.data.stats import summarize
from facepipe.data.synth import write_fer_csv, write_keypoints_csv
from tests.conftest import shared_file

RNG = np.random.default_rng(0)


def pix(n: int, values=None) -> str:
    vals = RNG.integers(0, 256, n) if values is None else values
    return " ".join(str(int(v)) for v in vals)


def write(path: Path, text: str) -> Path:
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def fer_text(rows: list[tuple], header: str = "emotion,pixels,Usage") -> str:
    return header + "\n" + "".join(",".join(str(c) for c in r) + "\n" for r in rows)


def good_fer_rows(n: int = 6) -> list[tuple]:
    return [(i % 7, pix(48 * 48), ["Training", "PublicTest", "PrivateTest"][i % 3]) for i in range(n)]


# --- formats ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_fer_plain_and_gzip(tmp_path, suffix):
    rows = good_fer_rows()
    t = read_table(write(tmp_path / f"fer{suffix}", fer_text(rows)))
    assert t.format.name == "fer2013" and len(t) == 6
    assert t.images.shape == (6, 48, 48) and t.images.dtype == np.uint8
    assert t.labels.tolist() == [r[0] for r in rows]
    assert np.array_equal(t.images[2].ravel(), np.array(rows[2][1].split(), dtype=np.uint8))
    assert t.lines.tolist() == [2, 3, 4, 5, 6, 7]


def test_gzip_detected_by_content_not_name(tmp_path):
    path = tmp_path / "fer.csv"  # gzip bytes under a plain name
    with gzip.open(path, "wt") as f:
        f.write(fer_text(good_fer_rows(3)))
    assert len(read_table(path)) == 3


def test_icml_variant_with_spaced_header(tmp_path):
    rows = good_fer_rows(4)
    text = "emotion, Usage, pixels\n" + "".join(f"{e}, {u}, {p}\n".replace(", ", ",") for e, p, u in rows)
    t = read_table(write(tmp_path / "icml_face_data.csv", text))
    assert t.format.columns == ("emotion", "Usage", "pixels")
    assert t.labels.tolist() == [r[0] for r in rows]
    assert t.usage.tolist() == [r[2] for r in rows]


def test_keypoints_training_with_missing_points(tmp_path):
    header = ",".join(KAGGLE_KEYPOINT_COLUMNS) + ",Image\n"
    full = [f"{v:.3f}" for v in RNG.uniform(10, 80, 30)]
    partial = list(full)
    partial[4:8] = ["", "", "", ""]  # left_eye_inner_corner and left_eye_outer_corner missing
    text = header + ",".join(full) + "," + pix(9216) + "\n" + ",".join(partial) + "," + pix(9216) + "\n"
    t = read_table(write(tmp_path / "training.csv", text))
    assert t.format.name == "keypoints" and t.images.shape == (2, 96, 96)
    assert t.keypoints.shape == (2, 15, 2)
    assert t.mask[0].all() and t.mask[1].tolist() == [True, True, False, False] + [True] * 11
    assert np.isnan(t.keypoints[1, 2:4]).all()
    assert t.keypoints[0, 0, 0] == pytest.approx(float(full[0]), abs=1e-3)
    s = summarize(t)
    assert s["missing_per_keypoint"]["left_eye_inner_corner"] == 1 and s["complete_rows"] == 1


def test_keypoints_test_csv(tmp_path):
    text = "ImageId,Image\n1," + pix(9216) + "\n2," + pix(9216) + "\n"
    t = read_table(write(tmp_path / "test.csv", text))
    assert t.format.name == "keypoints_test" and t.columns["image_id"].tolist() == [1, 2]


def test_68_point_schema_from_column_names(tmp_path):
    names = [f"point_{i:02d}" for i in range(68)]
    cols = [f"{n}_{a}" for n in names for a in "xy"]
    text = ",".join(cols) + ",Image\n" + ",".join(f"{v:.2f}" for v in RNG.uniform(0, 95, 136)) + "," + pix(9216) + "\n"
    t = read_table(write(tmp_path / "ibug68.csv", text))
    assert t.schema.num_points == 68 and t.schema.names[5] == "point_05"
    assert t.keypoints.shape == (1, 68, 2)


def test_kaggle_schema_flip_pairs():
    s = KeypointSchema.kaggle()
    perm = s.flip_permutation
    names = s.names
    assert names[perm[names.index("left_eye_center")]] == "right_eye_center"
    assert names[perm[names.index("mouth_left_corner")]] == "mouth_right_corner"
    assert names[perm[names.index("nose_tip")]] == "nose_tip"
    assert (perm[perm] == np.arange(len(names))).all()
    assert len(s.flip_pairs) == 6


def test_flip_unsafe_schema_is_refused():
    s = KeypointSchema.from_columns(["left_ear_x", "left_ear_y", "nose_x", "nose_y"])
    with pytest.raises(ValueError, match="no mirror point 'right_ear'"):
        s.flip_permutation


def test_unknown_header(tmp_path):
    with pytest.raises(CSVFormatError, match=r"line 1.*unknown header"):
        detect_format(write(tmp_path / "x.csv", "a,b,c\n1,2,3\n"))


# --- bad input: each error names file, line, column -----------------------------------------------


def bad_fer(tmp_path, row: tuple, header: str = "emotion,pixels,Usage") -> Path:
    rows = good_fer_rows(3)
    rows.insert(2, row)  # the bad row is on line 4
    return write(tmp_path / "bad.csv", fer_text(rows, header))


@pytest.mark.parametrize(
    "row, column, message",
    [
        ((1, pix(2303), "Training"), "pixels", "expected 2304 pixel values, found 2303"),
        ((1, pix(2305), "Training"), "pixels", "expected 2304 pixel values, found 2305"),
        ((1, pix(4) + " abc " + pix(2299), "Training"), "pixels", "pixel value #5 is 'abc', not an integer"),
        ((1, pix(9) + " 256 " + pix(2294), "Training"), "pixels", "pixel value #10 is 256, outside 0..255"),
        ((1, "", "Training"), "pixels", "pixel string is empty"),
        ((7, pix(2304), "Training"), "emotion", "label '7' is not an emotion 0..6"),
        (("x", pix(2304), "Training"), "emotion", "label 'x' is not an emotion"),
        ((1, pix(2304), "Validation"), "Usage", "unknown Usage 'Validation'"),
    ],
)
def test_bad_rows_name_file_line_column(tmp_path, row, column, message):
    path = bad_fer(tmp_path, row)
    with pytest.raises(CSVFormatError) as e:
        read_table(path)
    assert e.value.path == str(path) and e.value.line == 4 and e.value.column == column
    assert message in str(e.value) and str(path) in str(e.value) and "line 4" in str(e.value)


def test_missing_and_extra_columns_in_a_row(tmp_path):
    path = write(tmp_path / "bad.csv", fer_text(good_fer_rows(2)) + "3," + pix(2304) + "\n" + "1," + pix(2304) + ",Training,extra\n")
    with pytest.raises(CSVFormatError) as e:
        read_table(path)
    assert e.value.line == 4 and "expected 3 columns" in str(e.value) and "found 2" in str(e.value)
    t = read_table(path, skip_bad_rows=True)
    assert len(t) == 2 and [b.line for b in t.skipped] == [4, 5]
    assert "found 4" in t.skipped[1].reason


def test_missing_column_in_header(tmp_path):
    text = ",".join(KAGGLE_KEYPOINT_COLUMNS[:-1]) + ",Image\n"
    with pytest.raises(CSVFormatError, match=r"line 1.*x/y partner.*mouth_center_bottom_lip"):
        read_table(write(tmp_path / "kp.csv", text + "1," * 29 + pix(9216) + "\n"))


def test_extra_column_in_header(tmp_path):
    with pytest.raises(CSVFormatError) as e:
        read_table(write(tmp_path / "f.csv", fer_text([(0, pix(2304), "Training", 1)], "emotion,pixels,Usage,comment")))
    assert e.value.line == 1 and e.value.column == "comment"


def test_non_numeric_keypoint(tmp_path):
    vals = [f"{v:.2f}" for v in RNG.uniform(0, 95, 30)]
    vals[7] = "n/a"
    text = ",".join(KAGGLE_KEYPOINT_COLUMNS) + ",Image\n" + ",".join(vals) + "," + pix(9216) + "\n"
    with pytest.raises(CSVFormatError) as e:
        read_table(write(tmp_path / "kp.csv", text))
    assert e.value.line == 2 and e.value.column == "left_eye_outer_corner_y" and "'n/a' is not a number" in str(e.value)


def test_empty_file_and_header_only(tmp_path):
    with pytest.raises(CSVFormatError, match="empty"):
        read_table(write(tmp_path / "empty.csv", ""))
    with pytest.raises(CSVFormatError, match=r"line 2.*header but no data rows"):
        read_table(write(tmp_path / "header.csv", "emotion,pixels,Usage\n"))


def test_skip_bad_rows_reports_every_line(tmp_path):
    rows = good_fer_rows(5)
    rows[1] = (1, pix(100), "Training")  # line 3
    rows[3] = (9, pix(2304), "Training")  # line 5
    path = write(tmp_path / "f.csv", fer_text(rows) + "\n")  # and a trailing blank line
    with pytest.raises(CSVFormatError, match=r"line 3.*and 1 more bad rows"):
        read_table(path)
    t = read_table(path, skip_bad_rows=True)
    assert len(t) == 3 and t.lines.tolist() == [2, 4, 6]
    assert [(b.line, b.column) for b in t.skipped] == [(3, "pixels"), (5, "emotion")]
    assert summarize(t)["skipped_rows"] == 2


def test_blank_line_in_the_middle_keeps_line_numbers(tmp_path):
    rows = good_fer_rows(3)
    text = fer_text(rows[:1]) + "\n" + fer_text(rows[1:]).split("\n", 1)[1]
    t = read_table(write(tmp_path / "f.csv", text))
    assert t.lines.tolist() == [2, 4, 5] and t.blank_lines == [3]


# --- Ray Data ---------------------------------------------------------------------------------


def test_ray_data_parse_and_split_on_2_cpus(tmp_path, ray_session):
    from facepipe.data.ray_datasets import load_splits

    rows = good_fer_rows(30)
    path = write(tmp_path / "fer.csv.gz", fer_text(rows))
    s = load_splits(path, rows_per_block=7)  # several blocks → several parallel tasks
    assert s.counts == {"PrivateTest": 10, "PublicTest": 10, "Training": 10}
    got = s["Training"].take_all()
    ref = read_table(path)
    by_line = {int(ln): i for i, ln in enumerate(ref.lines)}
    for r in got:
        i = by_line[int(r["line"])]
        assert np.array_equal(r["image"], ref.images[i]) and r["label"] == ref.labels[i]
    assert ray_session.available_resources().get("CPU", 0) <= 2


def test_ray_data_errors_and_skip(tmp_path, ray_session):
    from facepipe.data.ray_datasets import load_splits

    rows = good_fer_rows(12)
    rows[7] = (1, pix(2000), "Training")  # line 9
    path = write(tmp_path / "fer.csv", fer_text(rows))
    with pytest.raises(CSVFormatError, match=r"line 9, column 'pixels': expected 2304 pixel values, found 2000"):
        load_splits(path, rows_per_block=5)
    s = load_splits(path, rows_per_block=5, skip_bad_rows=True)
    assert sum(s.counts.values()) == 11 and [b.line for b in s.skipped] == [9]


def test_ray_keypoints_seeded_split(tmp_path, ray_session):
    from facepipe.data.ray_datasets import load_splits

    header = ",".join(KAGGLE_KEYPOINT_COLUMNS) + ",Image\n"
    text = header + "".join(",".join(f"{v:.2f}" for v in RNG.uniform(0, 95, 30)) + "," + pix(9216) + "\n" for _ in range(20))
    path = write(tmp_path / "kp.csv", text)
    a = load_splits(path, val_fraction=0.25, seed=3)
    b = load_splits(path, val_fraction=0.25, seed=3)
    assert a.counts == {"train": 15, "val": 5}
    assert sorted(r["line"] for r in a["val"].take_all()) == sorted(r["line"] for r in b["val"].take_all())
    r = a["train"].take(1)[0]
    assert r["keypoints"].shape == (15, 2) and r["mask"].dtype == bool


# --- real data from ../shared ------------------------------------------------------------------


def test_real_fer2013_counts():
    t = read_table(shared_file("fer2013/fer2013_trainval.csv.gz"))
    s = summarize(t)
    assert s["rows_per_split"] == {"PublicTest": 3589, "Training": 28709}
    assert [s["class_counts"]["Training"][e] for e in EMOTIONS] == [3995, 436, 4097, 7215, 4830, 3171, 4965]


def test_real_keypoints_file():
    t = read_table(shared_file("keypoints/ytf15_training.csv.gz"))
    assert len(t) == 3462 and int(t.mask.all(axis=1).sum()) == 3435
    # Kaggle naming: the subject's left eye is on the image's right.
    assert np.nanmean(t.keypoints[:, 0, 0]) > np.nanmean(t.keypoints[:, 1, 0])


# --- what users download: zip archives, a byte-order mark, bz2/xz --------------------------------

BOM = b"\xef\xbb\xbf"
WRITERS = {"fer": (write_fer_csv, "fer2013.csv"), "keypoints": (write_keypoints_csv, "training.csv")}


def zip_members(path: Path, members: dict[str, bytes]) -> Path:
    """A real zip archive holding ``members`` (name -> bytes; a name ending in / is a directory)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def assert_same_table(a, b) -> None:
    assert a.format == b.format and a.columns.keys() == b.columns.keys()
    for k in a.columns:
        np.testing.assert_array_equal(a.columns[k], b.columns[k], err_msg=k)


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_zipped_csv_reads_like_the_plain_file(tmp_path, kind):
    writer, member = WRITERS[kind]
    plain = writer(tmp_path / member, 20, seed=1)
    archive = zip_members(tmp_path / "download.zip", {member: plain.read_bytes()})
    t = read_table(archive)
    assert t.path == f"{archive}:{member}" and len(t) == 20
    assert_same_table(read_table(plain), t)
    renamed = tmp_path / "data.csv"  # zip bytes under a CSV name: decided by content
    renamed.write_bytes(archive.read_bytes())
    assert_same_table(t, read_table(renamed))


def test_zip_picks_the_csv_among_readme_folders_and_macosx(tmp_path):
    plain = write_keypoints_csv(tmp_path / "training.csv", 5, seed=2)
    archive = zip_members(tmp_path / "facial-keypoints.zip", {
        "README.txt": b"Facial keypoints detection\nimage data from Kaggle\n",
        "data/": b"",
        "data/training.csv": plain.read_bytes(),
        "__MACOSX/data/._training.csv": plain.read_bytes(),  # Finder's copy: would make two candidates
        "data/preview.png": bytes(range(256)) * 4,
    })
    assert detect_format(archive).name == "keypoints"
    t = read_table(archive)
    assert t.path == f"{archive}:data/training.csv"
    assert_same_table(read_table(plain), t)


def test_zip_with_two_csvs_or_none_names_the_members(tmp_path):
    fer = write_fer_csv(tmp_path / "fer2013.csv", 3).read_bytes()
    kp = write_keypoints_csv(tmp_path / "training.csv", 3).read_bytes()
    two = zip_members(tmp_path / "two.zip", {"fer2013.csv": fer, "training.csv": kp, "README.txt": b"hi\n"})
    with pytest.raises(CSVFormatError) as e:
        read_table(two)
    msg = str(e.value)
    assert e.value.path == str(two) and "'fer2013.csv'" in msg and "'training.csv'" in msg and "unzip" in msg
    assert "README" not in msg
    none = zip_members(tmp_path / "none.zip", {"README.txt": b"hi\n", "notes/todo.md": b"- read\n"})
    with pytest.raises(CSVFormatError) as e:
        detect_format(none)
    assert e.value.path == str(none) and "'README.txt'" in str(e.value) and "'notes/todo.md'" in str(e.value)


def test_bad_row_in_zipped_csv_names_archive_member_and_line(tmp_path):
    plain = bad_fer(tmp_path, (1, pix(2303), "Training"))  # line 4
    archive = zip_members(tmp_path / "archive.zip", {"fer/bad.csv": plain.read_bytes()})
    with pytest.raises(CSVFormatError) as e:
        read_table(archive)
    assert e.value.path == f"{archive}:fer/bad.csv" and e.value.line == 4 and e.value.column == "pixels"
    assert str(e.value).startswith(f"{archive}:fer/bad.csv, line 4, column 'pixels'")
    # A row with a missing cell takes the slow path that re-reads the member to find its line.
    short = fer_text(good_fer_rows(2)) + "3," + pix(2304) + "\n" + fer_text(good_fer_rows(1)).split("\n", 1)[1]
    archive = zip_members(tmp_path / "short.zip", {"short.csv": short.encode()})
    with pytest.raises(CSVFormatError, match=r"short\.zip:short\.csv, line 4: expected 3 columns"):
        read_table(archive)
    t = read_table(archive, skip_bad_rows=True)
    assert t.lines.tolist() == [2, 3, 5] and [b.line for b in t.skipped] == [4]


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_utf8_byte_order_mark_reads_like_without(tmp_path, kind):
    writer, member = WRITERS[kind]
    plain = writer(tmp_path / member, 8, seed=3)
    bom = tmp_path / f"bom_{member}"
    bom.write_bytes(BOM + plain.read_bytes())
    assert detect_format(bom).columns == detect_format(plain).columns
    assert_same_table(read_table(plain), read_table(bom))
    archive = zip_members(tmp_path / "bom.zip", {member: bom.read_bytes()})
    assert_same_table(read_table(plain), read_table(archive))


@pytest.mark.parametrize("module, name", [(bz2, "bz2"), (lzma, "xz")])
def test_bz2_and_xz_are_named_not_decoded(tmp_path, module, name):
    path = tmp_path / "fer.csv"  # by content, whatever the name
    with module.open(path, "wt") as f:
        f.write(fer_text(good_fer_rows(2)))
    with pytest.raises(CSVFormatError) as e:
        read_table(path)
    msg = str(e.value)
    assert "\n" not in msg and f"{name}-compressed" in msg and all(w in msg for w in ("gzip", "zip", "plain CSV"))


def test_keypoint_coordinates_off_the_image_are_bad_rows(tmp_path):
    """inf, 1e6 or -50 are no positions in a 96x96 image: named as bad rows, not trained on."""
    from facepipe.data.synth import write_keypoints_csv

    src = write_keypoints_csv(tmp_path / "kp.csv", 12, seed=2, missing_fraction=0.0)
    lines = Path(src).read_text().splitlines()
    for line, col, value in ((3, 0, "inf"), (5, 1, "1e6"), (7, 2, "-50")):
        cells = lines[line - 1].split(",")
        cells[col] = value
        lines[line - 1] = ",".join(cells)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(CSVFormatError, match=r"line 3, column 'left_eye_center_x': keypoint value inf is outside the 96x96 image"):
        read_table(bad)
    t = read_table(bad, skip_bad_rows=True)
    assert len(t) == 9 and [b.line for b in t.skipped] == [3, 5, 7] and np.isfinite(t.keypoints[t.mask]).all()


def test_truncated_gzip_is_one_line_naming_the_file(tmp_path):
    src = write_fer_csv(tmp_path / "fer.csv.gz", 300, seed=1)
    cut = tmp_path / "cut.csv.gz"
    data = Path(src).read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CSVFormatError, match=r"cut\.csv\.gz: could not read the file \(Truncated compressed stream\)"):
        read_table(cut)


def test_a_header_with_thousands_of_points_is_refused_at_once(tmp_path):
    from facepipe.data.kaggle import MAX_POINTS

    cols = [f"p{i}_{a}" for i in range(MAX_POINTS + 1) for a in "xy"] + ["Image"]
    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(cols) + "\n" + ",".join(["1"] * (len(cols) - 1) + ["0"]) + "\n")
    with pytest.raises(CSVFormatError, match=rf"line 1: {2 * MAX_POINTS + 2} keypoint columns: more than {MAX_POINTS} points"):
        read_table(wide)
