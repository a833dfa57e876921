"""Whole-brain (Algonauts 2021) voxel maps as volumes, and their nilearn figures (data in, figure out).

A whole-brain vector has one value per voxel of a subject's ``voxel_mask`` (the mask's nonzero
entries in C order, as the devkit writes ``volume[voxel_mask == 1] = values``). The challenge's
volume is 78 x 93 x 71 voxels of 2.5 x 2.5 x 2.75 mm in MNI space, with the affine of the
devkit's ``example.nii`` (:data:`AFFINE_2021`).

Figures are matplotlib ``Figure`` objects built without pyplot (safe in Streamlit's threads):
``glass_brain_figure`` (nilearn's glass brain) and ``slices_figure`` (slices over the MNI152
template that nilearn bundles).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from core.util.errors import UserError

VOLUME_SHAPE: tuple[int, int, int] = (78, 93, 71)  # the Algonauts 2021 volume (voxels)

# sform / qform of the devkit's example.nii (MNI): x = 2.5 i - 96.5, y = 2.5 j - 132.5, z = 2.75 k - 78.5
AFFINE_2021 = np.array([
    [2.5, 0.0, 0.0, -96.5],
    [0.0, 2.5, 0.0, -132.5],
    [0.0, 0.0, 2.75, -78.5],
    [0.0, 0.0, 0.0, 1.0],
])  # fmt: skip


def to_volume(values: np.ndarray, voxel_mask: np.ndarray, fill: float = np.nan) -> np.ndarray:
    """float32 volume of ``voxel_mask``'s shape holding ``values`` at the mask's voxels, ``fill`` elsewhere."""
    mask = np.asarray(voxel_mask) != 0
    values = np.asarray(values)
    if values.ndim != 1 or values.shape[0] != int(mask.sum()):
        raise UserError(f"{values.shape[0] if values.ndim == 1 else values.shape} values for a voxel mask of "
                        f"{int(mask.sum())} voxels")
    out = np.full(mask.shape, fill, dtype=np.float32)
    out[mask] = values
    return out


def from_volume(volume: np.ndarray, voxel_mask: np.ndarray) -> np.ndarray:
    """The values of ``volume`` at the mask's voxels, in whole-brain vector order."""
    return np.asarray(volume)[np.asarray(voxel_mask) != 0]


def to_nifti(values: np.ndarray, voxel_mask: np.ndarray, affine: np.ndarray = AFFINE_2021, fill: float = 0.0):
    """A ``nibabel.Nifti1Image`` (MNI, float32) of a whole-brain vector; ``fill`` outside the mask."""
    import nibabel as nib

    mask = np.asarray(voxel_mask)
    if mask.shape != VOLUME_SHAPE and np.allclose(affine, AFFINE_2021):
        raise UserError(f"voxel mask of shape {mask.shape}: the 2021 affine is for {VOLUME_SHAPE} volumes")
    data = np.nan_to_num(to_volume(values, mask, fill), nan=fill)
    img = nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64))
    img.header.set_sform(affine, code="mni")
    img.header.set_qform(affine, code="mni")
    return img


def _figure(figsize: tuple[float, float]):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, facecolor="white")


def _threshold(threshold: Optional[float]) -> float:
    """Values with ``|v| <= threshold`` are not drawn; zeros (outside the mask) never are."""
    return 1e-6 if threshold is None else max(float(threshold), 1e-6)


def _range(img, vmax: Optional[float]) -> float:
    if vmax is not None:
        return float(vmax)
    data = np.abs(np.asarray(img.dataobj))
    top = float(np.percentile(data[data > 0], 99)) if np.any(data > 0) else 1.0
    return top or 1.0


def glass_brain_figure(img, *, title: Optional[str] = None, threshold: Optional[float] = None,
                       vmax: Optional[float] = None, cmap: str = "cold_hot", display_mode: str = "lyrz",
                       colorbar: bool = True, figsize: tuple[float, float] = (11.0, 3.2), symmetric: bool = True):
    """nilearn's glass brain of a volume (e.g. ``to_nifti(r, mask)``): a matplotlib ``Figure``.

    Values between ``-threshold`` and ``threshold`` (default: zeros only) are not drawn; the colour
    range is symmetric, up to ``vmax`` (default: the 99th percentile of ``|values|``), or from 0
    to ``vmax`` with ``symmetric=False`` (values that cannot be negative, e.g. a noise ceiling).
    """
    from nilearn import plotting

    fig = _figure(figsize)
    plotting.plot_glass_brain(img, figure=fig, display_mode=display_mode, threshold=_threshold(threshold),
                              vmax=_range(img, vmax), vmin=None if symmetric else 0.0,
                              cmap=cmap, colorbar=colorbar, plot_abs=False, symmetric_cbar=symmetric, title=title)
    return fig


def slices_figure(img, *, title: Optional[str] = None, display_mode: str = "z",
                  cut_coords: int | Sequence[float] = (-20, -12, -4, 4, 12, 20), threshold: Optional[float] = None,
                  vmax: Optional[float] = None, cmap: str = "cold_hot", colorbar: bool = True,
                  figsize: tuple[float, float] = (12.0, 3.0), symmetric: bool = True):
    """Slices of a volume over nilearn's bundled MNI152 template: a matplotlib ``Figure``.

    ``display_mode``: ``"x"``, ``"y"``, ``"z"`` (rows of slices at ``cut_coords``, mm or a count)
    or ``"ortho"`` (three orthogonal slices; ``cut_coords`` then a point or ``None``). Colours as
    :func:`glass_brain_figure`'s.
    """
    from nilearn import datasets, plotting

    if display_mode == "ortho" and cut_coords is not None and np.ndim(cut_coords) == 0:
        cut_coords = None
    fig = _figure(figsize)
    plotting.plot_stat_map(img, bg_img=datasets.load_mni152_template(resolution=2), figure=fig,
                           display_mode=display_mode, cut_coords=cut_coords, threshold=_threshold(threshold),
                           vmax=_range(img, vmax), vmin=None if symmetric else 0.0, cmap=cmap, colorbar=colorbar,
                           symmetric_cbar=symmetric, title=title,
                           black_bg=False, draw_cross=False)
    return fig
