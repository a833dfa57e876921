"""The Algonauts 2023 reader: a valid layout opens; every kind of bad input fails with one line naming the file."""

from __future__ import annotations

import os

import numpy as np
import pytest

from core.cli import main
from core.algonauts2023.dataset import ALL_VERTICES, open_dataset, parse_subject, roi_class_of
from core.util.errors import DatasetError
from tests.conftest import make_tiny_dataset


def _fmri(root, hemi="lh"):
    return root / "subj01" / "training_split" / "training_fmri" / f"{hemi}_training_fmri.npy"


def _roi(root, name):
    return root / "subj01" / "roi_masks" / name


def _expect_error(root, fragment: str, path=None):
    with pytest.raises(DatasetError) as info:
        open_dataset(root)
    msg = str(info.value)
    assert "\n" not in msg
    assert fragment in msg
    if path is not None:
        assert str(path) in msg
    return msg


def test_valid_dataset_reads(tiny_dataset):
    ds = open_dataset(tiny_dataset)
    assert ds.subjects == [1]
    s = ds.subject("subj01")
    assert s is ds.subject(1)
    assert (s.n_train, s.n_test) == (6, 2)
    assert s.n_vertices == {"lh": 30, "rh": 40}
    assert s.train_images[0].name == "train-0001_nsd-00100.png"
    lh = s.fmri("lh")
    assert isinstance(lh, np.memmap) and lh.shape == (6, 30) and lh.dtype == np.float32
    assert s.fsaverage_mask("lh").sum() == 30
    assert s.roi_mapping("prf-visualrois")[7] == "hV4"
    assert s.rois("lh") == {"prf-visualrois": ["V1v", "hV4"]}
    assert s.roi_mask("lh", "V1v").sum() == 5
    assert s.roi_mask("lh", "hV4", space="fsaverage").sum() == 4
    # An ROI that does not exist in this subject is empty, not an error.
    assert not s.roi_mask("lh", "V2d").any()
    assert not s.roi_mask("lh", "FFA-1").any()
    masks = s.roi_masks("rh")
    assert set(masks) == {ALL_VERTICES, "V1v", "hV4"} and masks[ALL_VERTICES].all()
    assert s.noise_ceiling("lh") is None
    summary = s.summary()
    assert summary["n_vertices"] == {"lh": 30, "rh": 40} and summary["noise_ceiling"] is False


def test_noise_ceiling_is_read_and_checked(tiny_dataset):
    nc_dir = tiny_dataset / "noise_ceiling" / "subj01"
    nc_dir.mkdir(parents=True)
    np.save(nc_dir / "lh.npy", np.linspace(0, 90, 30, dtype=np.float32))
    np.save(nc_dir / "rh.npy", np.linspace(0, 90, 40, dtype=np.float32))
    s = open_dataset(tiny_dataset).subject(1)
    assert s.noise_ceiling("rh").shape == (40,)
    np.save(nc_dir / "rh.npy", np.ones(39, dtype=np.float32))
    _expect_error(tiny_dataset, "expected 40 values", nc_dir / "rh.npy")


def test_missing_fmri_file(tiny_dataset):
    _fmri(tiny_dataset, "rh").unlink()
    _expect_error(tiny_dataset, "missing file", _fmri(tiny_dataset, "rh"))


def test_missing_all_vertices_mask(tiny_dataset):
    path = _roi(tiny_dataset, "lh.all-vertices_fsaverage_space.npy")
    path.unlink()
    _expect_error(tiny_dataset, "missing file", path)


def test_missing_image_folder(tiny_dataset):
    folder = tiny_dataset / "subj01" / "test_split" / "test_images"
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()
    _expect_error(tiny_dataset, "missing test image folder", folder)


def test_row_count_must_match_images(tiny_dataset):
    imgs = sorted((tiny_dataset / "subj01" / "training_split" / "training_images").iterdir())
    imgs[-1].unlink()
    _expect_error(tiny_dataset, "has 6 rows but there are 5 training images", _fmri(tiny_dataset))


def test_image_numbering_gap(tiny_dataset):
    imgs = sorted((tiny_dataset / "subj01" / "training_split" / "training_images").iterdir())
    imgs[2].unlink()
    _expect_error(tiny_dataset, "not numbered")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values(tiny_dataset, bad):
    arr = np.load(_fmri(tiny_dataset))
    arr[3, 7] = bad
    np.save(_fmri(tiny_dataset), arr)
    _expect_error(tiny_dataset, "NaN or infinite values (first at index (3, 7))", _fmri(tiny_dataset))


def test_wrong_dtype(tiny_dataset):
    np.save(_fmri(tiny_dataset), np.ones((6, 30), dtype=np.int32))
    _expect_error(tiny_dataset, "expected float32 values, found dtype int32", _fmri(tiny_dataset))


def test_wrong_dimensionality(tiny_dataset):
    np.save(_fmri(tiny_dataset), np.ones((6, 30, 2), dtype=np.float32))
    _expect_error(tiny_dataset, "expected a 2-D array", _fmri(tiny_dataset))


def test_challenge_roi_mask_length(tiny_dataset):
    path = _roi(tiny_dataset, "lh.prf-visualrois_challenge_space.npy")
    np.save(path, np.zeros(31, dtype=np.float32))
    _expect_error(tiny_dataset, "expected 30 values (challenge space, lh)", path)


def test_fsaverage_roi_mask_length(tiny_dataset):
    path = _roi(tiny_dataset, "rh.prf-visualrois_fsaverage_space.npy")
    np.save(path, np.zeros(10242, dtype=np.float32))
    _expect_error(tiny_dataset, "expected 163842 values", path)


def test_all_vertices_count_must_match_fmri(tiny_dataset):
    path = _roi(tiny_dataset, "lh.all-vertices_fsaverage_space.npy")
    mask = np.load(path)
    mask[np.flatnonzero(mask == 0)[0]] = 1
    np.save(path, mask)
    _expect_error(tiny_dataset, "marks 31 vertices but lh_training_fmri.npy has 30", path)


def test_truncated_npy(tiny_dataset):
    data = _fmri(tiny_dataset).read_bytes()
    _fmri(tiny_dataset).write_bytes(data[: len(data) - 50])
    _expect_error(tiny_dataset, "unreadable .npy file", _fmri(tiny_dataset))


def test_not_an_npy_at_all(tiny_dataset):
    _fmri(tiny_dataset, "rh").write_bytes(b"hello, I am not an array")
    _expect_error(tiny_dataset, "unreadable .npy file", _fmri(tiny_dataset, "rh"))


def test_mapping_with_code_is_refused(tiny_dataset):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > /tmp/bes-pwned",))

    path = _roi(tiny_dataset, "mapping_prf-visualrois.npy")
    np.save(path, np.array({1: Evil()}, dtype=object), allow_pickle=True)
    msg = _expect_error(tiny_dataset, "refused to unpickle", path)
    assert "system" in msg


def test_mapping_must_be_label_dict(tiny_dataset):
    path = _roi(tiny_dataset, "mapping_prf-visualrois.npy")
    np.save(path, np.array([["a", "b"]], dtype=object), allow_pickle=True)
    _expect_error(tiny_dataset, "expected a dict", path)


def test_unknown_subject(tiny_dataset):
    with pytest.raises(DatasetError, match="unknown subject 3 \\(available: 1\\)"):
        open_dataset(tiny_dataset, subjects=[3])
    ds = open_dataset(tiny_dataset)
    with pytest.raises(DatasetError, match="unknown subject"):
        ds.subject(2)
    with pytest.raises(DatasetError):
        parse_subject("subjXY")


def test_not_a_dataset(tmp_path):
    with pytest.raises(DatasetError, match="no subject folders"):
        open_dataset(tmp_path)
    with pytest.raises(DatasetError, match="not found"):
        open_dataset(tmp_path / "nowhere")


def test_roi_class_lookup():
    assert roi_class_of("PPA") == "floc-places"
    with pytest.raises(DatasetError, match="unknown ROI 'XYZ'"):
        roi_class_of("XYZ")


def test_several_subjects(tmp_path):
    root = make_tiny_dataset(tmp_path / "d", subjects=(1, 5))
    ds = open_dataset(root)
    assert ds.subjects == [1, 5]
    assert [s.name for s in ds] == ["subj01", "subj05"]
    assert open_dataset(root, subjects=["subj05"]).subjects == [5]


def test_cli_info(tiny_dataset, capsys):
    assert main(["info", "--data", str(tiny_dataset)]) == 0
    out = capsys.readouterr().out
    assert "subj01: 6 training images, 2 test images, vertices lh 30 / rh 40" in out
    assert "prf-visualrois: V1v, hV4" in out


def test_cli_info_bad_input_is_one_line(tiny_dataset, capsys):
    _fmri(tiny_dataset).unlink()
    assert main(["info", "--data", str(tiny_dataset)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and "lh_training_fmri.npy: missing file" in err
