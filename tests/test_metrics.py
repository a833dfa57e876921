"""Metrics: vectorised Pearson r, per-ROI summaries, and the Algonauts 2023 noise-normalised score.

The noise-normalised score is checked against published per-vertex values computed with the
official scoring rule, on the real noise ceilings of the eight NSD subjects
(``../shared/realdata``, see its PROVENANCE.md).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from core.encoding.metrics import (
    ALL_VERTICES, part_metrics, noise_normalized_accuracy, noise_normalized_correlation, noise_normalized_score,
    pearson_r, roi_summary,
)
from tests.conftest import REALDATA

NC_DIR = REALDATA / "uark-cviu+Algonauts2023" / "data" / "noise_ceiling"
ACONSONNI = (REALDATA / "aconsonni19+NeuDo-Project---AlgoNauts-Challenge-2023" / "Outputs" / "Linear_Regression_Models"
             / "baseline_encoding_model" / "encoding_accuracy")
GIOCOAL = (REALDATA / "giocoal+algonauts2023-image-fMRI-encoding-model" / "files" / "0_analysis" / "config_subj1"
           / "global" / "baseline_model" / "ValResults")
SUBJECTS = range(1, 9)


def needs(path: Path):
    return pytest.mark.skipif(not path.exists(), reason=f"reference data not available: {path}")


# ---------------------------------------------------------------------------------------------
# Pearson r
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 3, 5, 17, 500])
def test_pearson_matches_scipy(n):
    rng = np.random.default_rng(n)
    a = rng.standard_normal((n, 40)) * rng.uniform(0.01, 100, 40) + rng.uniform(-1e3, 1e3, 40)
    b = 0.3 * a + rng.standard_normal((n, 40)) * rng.uniform(0.01, 100, 40)
    a, b = a.astype(np.float32), b.astype(np.float32)
    ours = pearson_r(a, b)
    ref = np.array([stats.pearsonr(a[:, v].astype(np.float64), b[:, v].astype(np.float64))[0] for v in range(40)])
    assert ours.dtype == np.float32 and ours.shape == (40,)
    np.testing.assert_allclose(ours, ref, atol=2e-6)


def test_pearson_no_ddof_inflation():
    # the 2021 devkit mixes ddof and returns n/(n-1) for a perfect correlation; we must return 1
    x = np.arange(10, dtype=np.float32)[:, None]
    assert pearson_r(x, 3 * x + 1)[0] == pytest.approx(1.0, abs=1e-7)
    assert pearson_r(x, -x)[0] == pytest.approx(-1.0, abs=1e-7)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((7, 300)), rng.standard_normal((7, 300))
    assert np.all(np.abs(pearson_r(a, b)) <= 1.0)


def test_pearson_edge_cases():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((30, 3))
    b = a.copy()
    b[:, 1] = 5.0  # constant prediction: undefined r, as scipy
    r = pearson_r(a, b)
    assert np.isnan(r[1]) and r[0] == pytest.approx(1.0) and r[2] == pytest.approx(1.0)
    assert pearson_r(a[:, 0], b[:, 0]) == pytest.approx(1.0)  # 1-D input -> scalar
    with pytest.raises(ValueError):
        pearson_r(a, b[:, :2])
    with pytest.raises(ValueError):
        pearson_r(a[:1], b[:1])


def test_pearson_many_columns_chunked():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((50, 100_000)).astype(np.float32)  # several internal chunks
    b = a + rng.standard_normal(a.shape).astype(np.float32)
    r = pearson_r(a, b)
    idx = rng.choice(a.shape[1], 20, replace=False)
    ref = [stats.pearsonr(a[:, i], b[:, i])[0] for i in idx]
    np.testing.assert_allclose(r[idx], ref, atol=2e-6)


# ---------------------------------------------------------------------------------------------
# ROI summaries
# ---------------------------------------------------------------------------------------------
def test_roi_summary():
    r = np.array([0.1, 0.2, 0.3, 0.4, np.nan, -0.1], dtype=np.float32)
    masks = {"A": np.array([1, 1, 1, 0, 0, 0], bool), "B": np.array([0, 0, 0, 1, 1, 1], bool),
             "empty": np.zeros(6, bool)}
    s = roi_summary(r, masks)
    assert list(s) == [ALL_VERTICES, "A", "B", "empty"]
    assert s["A"] == {"median": pytest.approx(0.2), "mean": pytest.approx(0.2), "n_vertices": 3}
    assert s["B"]["median"] == pytest.approx(0.15) and s["B"]["n_vertices"] == 3  # NaN left out of the stats
    assert s[ALL_VERTICES]["median"] == pytest.approx(0.2) and s[ALL_VERTICES]["n_vertices"] == 6
    assert np.isnan(s["empty"]["median"]) and s["empty"]["n_vertices"] == 0
    with pytest.raises(ValueError):
        roi_summary(r, {"bad": np.ones(5, bool)})


def test_hemisphere_metrics_shapes():
    r = np.linspace(-0.2, 0.8, 11)
    nc = np.full(11, 50.0)
    m = part_metrics(r, {"X": r > 0.5}, nc)
    assert m["median_r"] == pytest.approx(0.3)
    assert m["roi_r"]["X"]["n_vertices"] == 3
    assert m["noise_normalized"]["score"] == pytest.approx(noise_normalized_score(r, nc))
    assert part_metrics(r)["noise_normalized"] is None


# ---------------------------------------------------------------------------------------------
# noise-normalised accuracy: the official rule
# ---------------------------------------------------------------------------------------------
def test_noise_normalized_rule():
    r = np.array([0.5, -0.3, 0.9, 0.2, 0.0, 0.1, np.nan])
    nc = np.array([50.0, 40.0, 60.0, 0.0, 0.0, 100.0, 30.0])  # percent
    acc = noise_normalized_accuracy(r, nc)
    assert acc[0] == pytest.approx(100 * 0.25 / 0.5)  # r^2 / (NC / 100), in percent
    assert acc[1] == 0.0  # negative r clipped at 0
    assert acc[2] == 100.0  # r^2 > NC: capped at 100
    assert acc[3] == 100.0 and acc[4] == 0.0  # NC == 0 -> 1e-14: 100 if r > 0 else 0 (official)
    assert acc[5] == pytest.approx(1.0)
    assert np.isnan(acc[6])
    assert noise_normalized_score(r, nc) == pytest.approx(np.mean(acc[:6]))
    with pytest.raises(ValueError):
        noise_normalized_accuracy(r, nc[:3])


@needs(ACONSONNI)
@needs(NC_DIR)
@pytest.mark.parametrize("subject", SUBJECTS)
def test_noise_normalized_reproduces_published_per_vertex_scores(subject):
    """aconsonni19 saved, per vertex of every subject and hemisphere, r^2 (r clipped at 0), the
    noise ceiling as a fraction (NC == 0 replaced by 1e-14) and the noise-normalised accuracy of
    the official scoring. Our function must give exactly their accuracies from r and NC in percent,
    and their NC == 0 vertices must be those of the public noise-ceiling files."""
    ref = np.load(ACONSONNI / f"encoding_accuracy_subj{subject:02d}.npy", allow_pickle=True).item()  # trusted
    for hemi in ("lh", "rh"):
        r2, nc_frac, acc_ref = (np.asarray(ref[f"{hemi}_{k}"], np.float64)
                                for k in ("r2", "noise_ceiling", "noise_normalized_encoding"))
        zero = np.asarray(ref[f"{hemi}_idx_nc_zero"]).ravel()
        public_nc = np.load(NC_DIR / f"subj{subject:02d}" / f"{hemi}.npy")
        assert public_nc.shape == r2.shape and public_nc.dtype == np.float32
        np.testing.assert_array_equal(np.flatnonzero(public_nc == 0), np.sort(zero))
        nc_percent = nc_frac * 100.0
        nc_percent[zero] = 0.0  # undo their 1e-14 substitution: our function must apply it
        acc = noise_normalized_accuracy(np.sqrt(r2), nc_percent)
        np.testing.assert_allclose(acc, acc_ref, rtol=1e-12, atol=1e-9)
        assert noise_normalized_score(np.sqrt(r2), nc_percent) == pytest.approx(acc_ref.mean(), rel=1e-12)
        # vertices with NC == 0 score 100 when r > 0, else 0
        assert set(np.unique(acc[zero])) <= {0.0, 100.0}
        np.testing.assert_array_equal(acc[zero] == 100.0, r2[zero] > 0)


def _read_scores(path: Path) -> dict[str, float]:
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^(.+?):\s*([-0-9.eE]+|nan)\s*$", line.strip())
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


@needs(GIOCOAL)
@needs(NC_DIR)
def test_noise_normalized_reproduces_giocoal_validation_scores():
    """giocoal's AlexNet baseline: per-vertex validation files hold the official noise-normalised
    accuracy as a fraction (min(r^2 / NC, 1), r clipped at 0, NC == 0 -> 1e-14): every value is in
    [0, 1], and exactly 0 or 1 where the public NC is 0. Their reported per-hemisphere and overall
    scores (medians x 100) follow from these files; and r recovered from a value and the real NC
    gives the same accuracy back through our function (NC in percent)."""
    reported = _read_scores(GIOCOAL / "val_scores_subj_hemisphere.txt")  # lh_6, rh_6, ... (subjects 6-8)
    assert reported
    all_values = []
    for key, score in sorted(reported.items()):
        hemi, subj = key.split("_")
        v = np.load(GIOCOAL / "val_correlations" / f"subj{int(subj):02d}" / f"{hemi}_corr_val.npy").astype(np.float64)
        nc = np.load(NC_DIR / f"subj{int(subj):02d}" / f"{hemi}.npy")
        assert v.shape == nc.shape
        all_values.append(v)
        assert np.median(v) * 100 == pytest.approx(score, abs=1e-4)
        assert v.min() >= 0.0 and v.max() <= 1.0
        assert set(np.unique(v[nc == 0])) <= {0.0, 1.0}
        inside = (v > 0) & (v < 1) & (nc > 0)
        r = np.sqrt(v[inside] * nc[inside] / 100.0)
        np.testing.assert_allclose(noise_normalized_accuracy(r, nc[inside]), 100 * v[inside], rtol=1e-5, atol=1e-4)
        capped = (v == 1) & (nc > 0)
        assert np.all(noise_normalized_accuracy(np.sqrt(nc[capped] / 100.0) * 1.01, nc[capped]) == 100.0)
    total = _read_scores(GIOCOAL / "val_scores.txt")["All_vertices"]
    assert np.median(np.concatenate(all_values)) * 100 == pytest.approx(total, abs=1e-4)
    # val_results.csv: per subject, the median over both hemispheres together
    for line in (GIOCOAL / "val_results.csv").read_text().splitlines()[1:]:
        name, _lh, _rh, both = line.split(",")
        s = int(name.removeprefix("Subj"))
        v = np.concatenate([np.load(GIOCOAL / "val_correlations" / f"subj{s:02d}" / f"{h}_corr_val.npy")
                            for h in ("lh", "rh")])
        assert np.median(v) * 100 == pytest.approx(float(both), abs=1e-4)


def test_noise_normalized_correlation_is_the_2021_leaderboards():
    r = np.array([0.5, 0.5, -0.2, 0.3, np.nan])
    rel = np.array([25.0, 100.0, 16.0, 0.0, 50.0])  # percent
    out = noise_normalized_correlation(r, rel)
    assert np.allclose(out[:3], [1.0, 0.5, -0.5]) and np.isnan(out[3:]).all()  # no square, no cap, no clip
    with pytest.raises(ValueError, match="reliabilities"):
        noise_normalized_correlation(r, rel[:3])
