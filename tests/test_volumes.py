"""Whole-brain vectors as MNI volumes and their nilearn figures (core.viz.volumes), on the video demo."""

from __future__ import annotations

import io

import nibabel as nib
import numpy as np
import pytest

from core.algonauts2021.dataset import VOLUME_SHAPE, WB, open_dataset2021
from core.util.errors import UserError
from core.viz.volumes import AFFINE_2021, from_volume, glass_brain_figure, slices_figure, to_nifti, to_volume
from tests.conftest import REALDATA

EXAMPLE = REALDATA / "Algonauts2021_devkit" / "example.nii"


@pytest.mark.skipif(not EXAMPLE.is_file(), reason="the devkit's example.nii is not in shared/realdata")
def test_affine_and_grid_are_the_devkits():
    img = nib.load(EXAMPLE)
    assert img.shape == VOLUME_SHAPE
    np.testing.assert_allclose(img.affine, AFFINE_2021)
    assert img.header.get_sform(coded=True)[1] == 4  # MNI


def test_vector_volume_round_trip_in_devkit_order():
    rng = np.random.default_rng(0)
    mask = rng.random(VOLUME_SHAPE) < 0.01
    values = rng.standard_normal(int(mask.sum())).astype(np.float32)
    vol = to_volume(values, mask)
    devkit = np.zeros(VOLUME_SHAPE)
    devkit[mask == 1] = values  # perform_encoding.py's visual_mask_3D[voxel_mask == 1] = score
    np.testing.assert_array_equal(np.nan_to_num(vol), devkit)
    assert np.isnan(vol[~mask]).all()
    np.testing.assert_array_equal(from_volume(vol, mask), values)
    with pytest.raises(UserError, match="values for a voxel mask of"):
        to_volume(values[:-1], mask)


def test_demo_voxels_are_in_mni_grey_matter_of_posterior_cortex(demo2021_root, tmp_path, monkeypatch):
    from nilearn import datasets, image

    monkeypatch.setenv("BES_CACHE_DIR", str(tmp_path))
    s = open_dataset2021(demo2021_root, [1]).subject(1)
    img = to_nifti(np.ones(s.n_voxels(WB)), s.voxel_mask(WB))
    assert img.shape == VOLUME_SHAPE and img.get_data_dtype() == np.float32
    np.testing.assert_allclose(img.affine, AFFINE_2021)
    brain = image.resample_to_img(datasets.load_mni152_brain_mask(resolution=2), img, interpolation="nearest",
                                  force_resample=True, copy_header=True)
    inside = np.asarray(brain.dataobj)[s.voxel_mask(WB)] > 0
    assert inside.mean() > 0.97
    ijk = np.argwhere(s.voxel_mask(WB))
    y = (ijk @ AFFINE_2021[:3, :3].T + AFFINE_2021[:3, 3])[:, 1]
    assert y.max() < -30  # occipital and posterior temporal / parietal only


def test_glass_brain_and_slices_figures_render(demo2021_root, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    monkeypatch.setenv("BES_CACHE_DIR", str(tmp_path))
    s = open_dataset2021(demo2021_root, [2]).subject(2)
    img = to_nifti(s.noise_ceiling(WB) / 100.0, s.voxel_mask(WB))
    for fig in (glass_brain_figure(img, title="noise ceiling", threshold=0.2),
                slices_figure(img, display_mode="z", cut_coords=(-10, 0, 10)),
                slices_figure(img, display_mode="ortho", cut_coords=4)):
        assert isinstance(fig, Figure) and len(fig.axes) >= 3
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=40)
        assert buf.getvalue().startswith(b"\x89PNG")
