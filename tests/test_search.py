"""``python -m core search`` on the small demo: outputs, resuming, killed trials, bad input, the run kind."""

from __future__ import annotations

import os
import zipfile
from dataclasses import replace

import numpy as np
import optuna
import pytest

from core.cli import main
from core.encoding.kernel import MultipleKernelRidgeCV
from core.runs import artifacts, kinds
from core.search import space, study
from core.util.errors import UserError

BASE = ["--model", "mobilenet_v2", "--weights", "imagenet-offline", "--layers", "features.3", "features.6",
        "--device", "cpu", "--resolution", "64", "--n-components", "20", "--folds", "3", "--quiet",
        "--estimators", "ridge", "kernel", "pls", "elasticnet"]  # banded's primal trials take 5-20 s each: it is tested on its own


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def env(cache, monkeypatch):
    monkeypatch.setenv("BES_CACHE_DIR", str(cache))
    monkeypatch.delenv("BES_RAY_ADDRESS", raising=False)


def _argv(demo_root, out, trials, *extra):
    return ["search", "--data", str(demo_root), "--subjects", "1", "--out", str(out), "--trials", str(trials),
            "--scope", "hemisphere", *BASE, *extra]


@pytest.mark.slow
def test_search_writes_results_and_resumes(demo_root, env, tmp_path):
    out = tmp_path / "out"
    assert main(_argv(demo_root, out, 3, "--jobs", "2")) == 0
    summary = artifacts.read_metrics(out)
    assert summary["subj01"]["noise_normalized"] > 0 and summary["seconds"]["search"] > 0
    assert set(summary["subj01"]["scopes"]) == {"subj01/lh", "subj01/rh"}
    with zipfile.ZipFile(out / "submission.zip") as zf:
        assert any(n.endswith(".npy") for n in zf.namelist())
    pred = artifacts.read_part(out / "subj01", "lh", "pred_test")
    assert pred.shape[0] == 12 and np.isfinite(pred).all()
    rows = artifacts.read_trials(out)
    first = {(r["scope"], r["trial"]): r for r in rows}
    assert {r["scope"] for r in rows} == {"lh", "rh"}
    assert all(r["state"] in ("COMPLETE", "PRUNED") for r in rows) and len(rows) >= 6
    done = [r for r in rows if r["state"] == "COMPLETE"]
    assert all(r["estimator"] in space.ESTIMATORS and r["fit_seconds"] > 0 for r in done)
    assert "response_rank" in rows[0]  # every parameter a trial can take is a column
    lh = artifacts.read_metrics(out / "subj01")["search"]["subj01/lh"]  # each vertex averages up to 5 top trials
    taken = sum(m["n_vertices"] for m in lh["members"])
    assert lh["n_vertices"] < taken <= 5 * lh["n_vertices"] and lh["members"][0]["trial"] >= 0
    averaged = artifacts.read_part(out / "subj01", "lh")  # scored on the average's out-of-fold predictions
    assert np.isfinite(averaged).all() and np.abs(averaged).max() <= 1
    n_lh = artifacts.read_part(out / "subj01", "lh").size
    kept = [artifacts.read_trial_arrays(out, "subj01/lh", r["trial"], n_lh) for r in done if r["scope"] == "lh"]
    assert kept and all(k is not None and np.isfinite(k[0]).all() for k in kept)  # what the assembly reads
    for f in (out / artifacts.TRIAL_ARRAYS).rglob("*.npy"):  # damaged: the assembly runs the CV again
        f.write_bytes(f.read_bytes()[:100])
    # a trial left running by a killed search is failed and redone; finished trials are kept
    st = study.storage(artifacts.study_storage(out))
    optuna.load_study(study_name="subj01/lh", storage=st).ask()
    assert main(_argv(demo_root, out, 4, "--top-trials", "2", "--average-trials", "1")) == 0
    again = artifacts.read_metrics(out / "subj01")  # assembly settings, not the study's
    assert again["estimator"]["top_trials"] == 2 and again["estimator"]["average_trials"] == 1
    lh = again["search"]["subj01/lh"]  # each vertex took one of the top trials, and its CV r
    assert sum(m["n_vertices"] for m in lh["members"]) == lh["n_vertices"]
    assert not np.allclose(artifacts.read_part(out / "subj01", "lh"), averaged)
    rows = artifacts.read_trials(out)
    for key, row in first.items():
        assert {k: rows_by(rows)[key][k] for k in ("state", "cv_score")} == {k: row[k] for k in ("state", "cv_score")}
    lh = [r for r in rows if r["scope"] == "lh"]
    assert sum(r["state"] == "FAIL" for r in lh) == 1
    assert sum(r["state"] in ("COMPLETE", "PRUNED") for r in lh) >= 4
    # a worker whose search process is gone (killed) runs no more trials
    cfg = study.SearchConfig(data=str(demo_root), subjects=[1], model="mobilenet_v2", weights="imagenet-offline",
                             layers=["features.3", "features.6"], resolution=64, n_components=20, folds=3,
                             scope="hemisphere", trials=10, device="cpu").checked()
    layout = study.layout_of(cfg.data, [1])
    spec = {"config": cfg.to_dict(), "subject": 1, "bank": study.bank_sources(cfg, layout, layout.subject(1)),
            "storage": artifacts.study_storage(out), "out": str(out), "worker": 0, "deadline": None,
            "parent": os.getpid()}  # not this process's parent: as if the search had died
    assert study.work(spec) == 0 and artifacts.read_trials(out) == rows
    # another search's settings in the same folder are refused, nothing changed
    assert main(_argv(demo_root, out, 4, "--pool-size", "2")) == 2
    assert artifacts.read_trials(out) == rows


def test_time_limit_is_shared_by_subjects_and_leaves_what_the_assembly_needs(demo_root, env, tmp_path):
    assert study.time_share(None, 2, 100.0) is None
    assert study.time_share(160.0, 2, 100.0) == 130.0 and study.time_share(160.0, 1, 130.0) == 160.0
    assert study.time_share(90.0, 2, 100.0) == 100.0  # past the limit: no time left, not negative
    # a worker started after the deadline on class scopes: one finished trial for each hemisphere, no ROI class
    out = tmp_path
    cfg = study.SearchConfig(data=str(demo_root), subjects=[1], model="mobilenet_v2", weights="imagenet-offline",
                             layers=["features.3", "features.6"], resolution=64, n_components=20, folds=3,
                             scope="class", trials=5, estimators=["ridge"], device="cpu").checked()
    layout = study.layout_of(cfg.data, [1])
    subject = layout.subject(1)
    names = [study.study_name(subject, sc) for sc in study.scopes(subject, "class")]
    url = artifacts.study_storage(out)
    study.prepare_studies(url, names, cfg)
    spec = {"config": cfg.to_dict(), "subject": 1, "bank": study.bank_sources(cfg, layout, subject),
            "storage": url, "out": str(out), "worker": 0, "deadline": 0.0}
    assert study.work(spec) == 2
    done = {r["scope"] for r in study.trial_rows(url) if r["state"] == "COMPLETE"}
    assert done == {"lh", "rh"} and len(names) > 2
    result = study.assemble(cfg, 1, subject, spec["bank"], out)  # ROI classes take their hemisphere's
    assert set(result.info["search"]) == {"subj01/lh", "subj01/rh"}
    both = study.assemble(replace(cfg, jobs=2), 1, subject, spec["bank"], out)  # the hemispheres in two processes
    assert both.info == result.info
    for hemi in ("lh", "rh"):  # the same numbers up to BLAS threads' rounding
        np.testing.assert_allclose(both.parts[hemi].test_pred, result.parts[hemi].test_pred, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(both.parts[hemi].val_r, result.parts[hemi].val_r, rtol=1e-4, atol=1e-4)


def rows_by(rows):
    return {(r["scope"], r["trial"]): r for r in rows}


def with_alphas(params, X, Y, X_pred, alphas):
    """``params``' multiple kernel fitted on ``X`` with each vertex's alpha given (the estimator's own fit,
    one alpha at a time: its CV then has one candidate), predicting ``X_pred``."""
    out = np.zeros((X_pred[0].shape[0], Y.shape[1]), np.float32)
    for a in np.unique(alphas):
        cols = np.flatnonzero(alphas == a)
        est = MultipleKernelRidgeCV(kernel_weights=[space.band_weights(params)], alphas=[float(a)])
        out[:, cols] = est.fit(X, Y[:, cols]).predict(X_pred)
    return out


def test_trials_are_cv_fits_on_bank_slices_and_get_pruned():
    rng = np.random.default_rng(0)
    layers = ["a", "b"]
    train = {("pca", layer): rng.standard_normal((60, 30)).astype(np.float32) for layer in layers}
    bank = space.Bank(layers, train, {k: v[:5] for k, v in train.items()})
    Y = (train["pca", "a"][:, :3] @ rng.standard_normal((3, 8)) + rng.standard_normal((60, 8))).astype(np.float32)
    X = bank.design({"estimator": "ridge", "layer": "a", "n_components": 4}, "train")
    assert np.shares_memory(X, train["pca", "a"]) and X.shape == (60, 4)  # a slice of the one PCA, no copy
    assert [x.shape[1] for x in bank.design({"estimator": "banded", "n_components": 5}, "test")] == [5, 5]
    splits = study.kfold_splits(60, 3, 0)
    good = space.cross_validate({"estimator": "ridge", "layer": "a", "n_components": 4}, bank, Y, splits, None,
                                "numpy", 0)
    bad = space.cross_validate({"estimator": "ridge", "layer": "b", "n_components": 30}, bank, Y, splits, None,
                               "numpy", 0)
    assert good.score > 0.5 > bad.score and good.r.shape == (8,) and good.fit_seconds > 0
    # the multiple kernel: whole layers, one weight each; weighting the informative layer scores better
    on_a = space.cross_validate({"estimator": "kernel", "reduction": "pca", "kernel_weights": [1.0, 1e-3]}, bank, Y,
                                splits, None, "numpy", 0)
    on_b = space.cross_validate({"estimator": "kernel", "reduction": "pca", "kernel_weights": [1e-3, 1.0]}, bank, Y,
                                splits, None, "numpy", 0)
    assert on_a.score > 0.5 > on_b.score and on_a.folds == 3
    # the final fit keeps the trial's alphas and the bank's Gram matrices: the estimator's own fit, without its CV
    five = study.kfold_splits(60, 5, 0)
    params = {"estimator": "kernel", "reduction": "pca", "kernel_weights": [1.0, 0.05]}
    cv = space.cross_validate(params, bank, Y, five, None, "numpy", 0)
    quick = space.final_predictions(params, bank, Y, cv.alphas, "numpy", 0)
    X, X_test = bank.design(params, "train"), bank.design(params, "test")
    full = space.estimator(params, X, 60, "numpy", 0).fit(X, Y)
    np.testing.assert_array_equal(cv.alphas, full.best_alphas_)
    np.testing.assert_allclose(quick, full.predict(X_test), rtol=1e-4, atol=1e-5)
    # out-of-fold predictions: each fold's rows predicted by the trial fitted on the others (Gram matrices from
    # the bank, rows subset) as by the estimator fitted on those rows alone
    oof = space.out_of_fold(params, bank, Y, five, cv.alphas, "numpy", 0)
    tr, va = five[1]
    alone = with_alphas(params, space.rows(X, tr), Y[tr], space.rows(X, va), cv.alphas)
    np.testing.assert_allclose(oof[va], alone, rtol=1e-3, atol=1e-4)
    seen = with_alphas(params, X, Y, space.rows(X, va), cv.alphas)
    assert not np.allclose(oof[va], seen, atol=1e-3)  # not the fit that saw them
    some = np.array([5, 1, 6])  # some columns only: the same numbers, nothing computed for the others
    np.testing.assert_allclose(space.out_of_fold(params, bank, Y, five, cv.alphas, "numpy", 0, cols=some), oof[:, some],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(space.final_predictions(params, bank, Y, cv.alphas, "numpy", 0, cols=some),
                               quick[:, some], rtol=1e-5, atol=1e-6)
    ridge = {"estimator": "ridge", "layer": "a", "n_components": 4}
    Xr = bank.design(ridge, "train")
    np.testing.assert_allclose(space.out_of_fold(ridge, bank, Y, five, None, "numpy", 0)[va], space.estimator(
        ridge, Xr, len(tr), "numpy", 0).fit(Xr[tr], Y[tr]).predict(Xr[va]), rtol=1e-4, atol=1e-5)
    # Optuna drives it: every estimator is tried, and a pruner may stop a trial after its first fold
    s = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1),
                            pruner=optuna.pruners.ThresholdPruner(lower=0.3))

    def objective(trial):
        params = space.suggest(trial, bank, list(space.ESTIMATORS), Y.shape[1])

        def after_fold(k, value):
            trial.report(value, k)
            if trial.should_prune():
                raise optuna.TrialPruned()

        return space.cross_validate(params, bank, Y, splits, None, "numpy", 0, after_fold).score

    s.optimize(objective, n_trials=12)
    states = {t.state.name for t in s.trials}
    assert "COMPLETE" in states and "PRUNED" in states
    assert all(len(t.intermediate_values) == 1 for t in s.trials if t.state.name == "PRUNED")
    assert s.best_value > 0.5


def test_reduced_rank_trials_fit_the_responses_first_components():
    """Responses driven by 2 factors plus noise: fitting their first 2 components scores higher (on the raw
    responses) than fitting each vertex alone; every estimator takes the option; the final fit projects all rows."""
    rng = np.random.default_rng(1)
    layers = ["a", "b"]
    train = {("pca", layer): rng.standard_normal((80, 40)).astype(np.float32) for layer in layers}
    bank = space.Bank(layers, train, {k: v[:6] for k, v in train.items()})
    factors = train["pca", "a"][:, :2] @ rng.standard_normal((2, 2))
    Y = (factors @ rng.standard_normal((2, 200)) + 3.0 * rng.standard_normal((80, 200))).astype(np.float32)
    splits = study.kfold_splits(80, 4, 0)
    kernel = {"estimator": "kernel", "reduction": "pca", "kernel_weights": [1.0, 0.1]}
    bases: dict = {}
    full = space.cross_validate(kernel, bank, Y, splits, None, "numpy", 0)
    low = space.cross_validate({**kernel, "response_rank": 2}, bank, Y, splits, None, "numpy", 0, bases=bases)
    assert low.score > full.score + 0.05
    assert len(bases) == 4 and all(b.shape == (60, 59) for b in bases.values())  # each fold's, for the largest rank
    again = space.cross_validate({**kernel, "response_rank": 3}, bank, Y, splits, None, "numpy", 0, bases=bases)
    assert len(bases) == 4 and again.score != low.score  # the folds' components were reused, sliced to 3
    ridge = {"estimator": "ridge", "layer": "a", "n_components": 8}
    assert (space.cross_validate({**ridge, "response_rank": 2}, bank, Y, splits, None, "numpy", 0).score
            > space.cross_validate(ridge, bank, Y, splits, None, "numpy", 0).score + 0.05)
    # the final fit: every row's responses projected onto their own first 2 components
    pred = space.final_predictions({**kernel, "response_rank": 2}, bank, Y, low.alphas, "numpy", 0)
    Yc = Y - Y.mean(0)
    u, sv, vt = np.linalg.svd(Yc, full_matrices=False)
    target = (u[:, :2] * sv[:2]) @ vt[:2] + Y.mean(0)
    direct = with_alphas(kernel, bank.design(kernel, "train"), target.astype(np.float32), bank.design(kernel, "test"),
                         low.alphas)
    np.testing.assert_allclose(pred, direct, rtol=1e-3, atol=1e-4)
    tr, va = splits[0]  # a fold's predictions: fitted on the fold's own components
    u, sv, vt = np.linalg.svd(Y[tr] - Y[tr].mean(0), full_matrices=False)
    fold_target = (u[:, :2] * sv[:2]) @ vt[:2] + Y[tr].mean(0)
    np.testing.assert_allclose(space.out_of_fold({**kernel, "response_rank": 2}, bank, Y, splits, low.alphas,
                                                 "numpy", 0)[va],
                               with_alphas(kernel, space.rows(bank.design(kernel, "train"), tr),
                                           fold_target.astype(np.float32), space.rows(bank.design(kernel, "train"), va),
                                           low.alphas), rtol=1e-3, atol=1e-4)
    assert space.describe({**kernel, "response_rank": 2}).endswith("rank 2")
    # the space offers it, capped by the scope's size
    ranks = [p.get("response_rank") for p in drawn(bank, ["ridge"], 5, 30)]
    assert None in ranks and {r for r in ranks if r} <= set(range(2, 6)) and any(ranks)


def test_kernel_trials_may_add_the_layers_global_averages():
    """Responses driven by how much of two channels the whole image holds, not where: a kernel trial with the
    layers' global averages as extra bands (weighted as their layers) scores higher than the pooled layers alone
    (whose 49 positions per channel hold the same signal among many more directions); the space offers the bands
    when the bank has them."""
    rng = np.random.default_rng(3)
    layers = ["a", "b"]
    maps = {layer: rng.standard_normal((80, 20, 49)).astype(np.float32) for layer in layers}
    train = {("pool", layer): m.reshape(80, -1) for layer, m in maps.items()}
    train |= {(space.GLOBAL, layer): m.mean(2) for layer, m in maps.items()}
    bank = space.Bank(layers, train, {k: v[:6] for k, v in train.items()})
    assert bank.reductions == ["pool"] and bank.has_global  # a trial's reduction is never the global one
    Y = (maps["a"].mean(2)[:, :2] @ rng.standard_normal((2, 12))
         + 0.1 * rng.standard_normal((80, 12))).astype(np.float32)
    splits = study.kfold_splits(80, 4, 0)
    pooled = {"estimator": "kernel", "reduction": "pool", "kernel_weights": [1.0, 0.01]}
    both = {**pooled, "global_bands": True}
    assert [x.shape[1] for x in bank.design(both, "test")] == [980, 980, 20, 20]
    plain, rich = (space.cross_validate(p, bank, Y, splits, None, "numpy", 0) for p in (pooled, both))
    assert rich.score > plain.score + 0.1
    assert bank.kernels(both) is not bank.kernels(pooled) and bank.kernels(both) is bank.kernels(dict(both))
    assert space.final_predictions(both, bank, Y, rich.alphas, "numpy", 0).shape == (6, 12)
    assert space.describe(both) == "kernel pool + global weights 1:0.01"
    share = space.GLOBAL_SHARE  # each global band weighted as its layer: no more weights to search
    assert space.band_weights(both) == [1.0, 0.01, share * 1.0, share * 0.01]
    flags = [p.get("global_bands") for p in drawn(bank, ["kernel"], 12, 12)]
    assert None in flags and True in flags
    no_global = space.Bank(layers, {k: v for k, v in train.items() if k[0] == "pool"}, {})
    assert not no_global.has_global


def test_global_averages_come_from_the_pooled_layers(tmp_path):
    """The bank derives each pooled layer's global average from its bins: exact when the pool divides the map,
    close otherwise; a video source keeps its frame count (``pool@16`` -> ``global@16``)."""
    import json

    import torch

    from core.features.reduction import pool_features

    gen = torch.Generator().manual_seed(0)  # a fixed draw: the tolerance below is for this draw's noise
    maps = torch.randn(6, 5, 14, 14, generator=gen)
    np.testing.assert_allclose(space.global_average(pool_features(maps, 7).numpy(), 7),
                               maps.mean((2, 3)).numpy(), atol=1e-6)
    odd = torch.randn(6, 5, 16, 16, generator=gen) + torch.linspace(0, 3, 16)  # a gradient across the map
    near = space.global_average(pool_features(odd, 7).numpy(), 7)
    assert np.abs(near - odd.mean((2, 3)).numpy()).max() < 0.1
    entry = tmp_path / "entry"
    entry.mkdir()
    train, test = pool_features(maps, 7).numpy(), pool_features(maps[:2], 7).numpy()
    np.save(entry / "train.npy", train)
    np.save(entry / "test.npy", test)
    (entry / "meta.json").write_text(json.dumps({"layer": "a", "reduction": {"kind": "pool", "pool_size": 7}}))
    bank = space.Bank.open({"pool@16": {"a": str(entry)}})
    assert bank.has_global and bank.reductions == ["pool"] and bank.frames == [16]
    np.testing.assert_allclose(bank.test["global@16", "a"], maps[:2].mean((2, 3)).numpy(), atol=1e-6)
    assert bank.train["global@16", "a"].shape == (6, 5)


def drawn(bank, estimators, n_targets, n):
    """The parameters of ``n`` trials the space draws at random."""
    s = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        trial = s.ask()
        out.append(space.suggest(trial, bank, estimators, n_targets))
        s.tell(trial, 0.0)
    return out


def test_each_vertex_takes_the_best_of_the_top_trials_of_its_scopes(tmp_path):
    """Vertices 0-5 follow layer a, 6-9 layer b; the hemisphere's study has a trial on each layer, a smaller
    scope (6-9) one on layer a. With two top trials per scope each vertex takes its layer's hemisphere trial
    (by the trials' stored CV r, or their CV run again when the arrays are damaged); with one, every vertex
    takes the hemisphere's best or the small scope's, whichever scored better on it."""
    from core.search.layouts import Scope

    rng = np.random.default_rng(2)
    layers = ["a", "b"]
    train = {("pca", layer): rng.standard_normal((60, 20)).astype(np.float32) for layer in layers}
    bank = space.Bank(layers, train, {k: v[:5] for k, v in train.items()})
    Y = np.concatenate([train["pca", "a"][:, :3] @ rng.standard_normal((3, 6)),
                        train["pca", "b"][:, :3] @ rng.standard_normal((3, 4))], 1)
    Y = (Y + 0.5 * rng.standard_normal(Y.shape)).astype(np.float32)
    splits = study.kfold_splits(60, 3, 0)
    hemi, small = Scope("lh", "lh", np.ones(10, bool)), Scope("lh/x", "lh", np.arange(10) >= 6)
    studies = []
    for sc, trial_layers in ((hemi, layers), (small, ["a"])):
        s = optuna.create_study(study_name=f"subj01/{sc.name}", direction="maximize")
        for layer in trial_layers:
            params = {"estimator": "ridge", "layer": layer, "n_components": 10}
            cv = space.cross_validate(params, bank, np.ascontiguousarray(Y[:, sc.mask]), splits, None, "numpy", 0)
            s.add_trial(optuna.trial.create_trial(value=cv.score, user_attrs={"params": params}))
            artifacts.write_trial_arrays(tmp_path, s.study_name, s.trials[-1].number, cv.r, cv.alphas)
        studies.append((sc, s))
    cfg = study.SearchConfig(data="unused", subjects=[1], folds=3, top_trials=2, average_trials=1, device="cpu")

    def taken(chosen):
        return {(m.scope.name, m.params["layer"]): m.cols.tolist() for m in chosen}

    expected = {("lh", "a"): list(range(6)), ("lh", "b"): list(range(6, 10))}
    assert taken(study.members(cfg, studies, tmp_path, bank, Y, splits, None)) == expected
    for f in (tmp_path / artifacts.TRIAL_ARRAYS).rglob("*.npy"):
        f.write_bytes(b"damaged")
    assert taken(study.members(cfg, studies, tmp_path, bank, Y, splits, None)) == expected
    # averaging two: each vertex its best two of the trials holding it, by its own r, half and half
    pairs = study.members(replace(cfg, average_trials=2), studies, tmp_path, bank, Y, splits, None)
    both = {(m.scope.name, m.params["layer"]): m for m in pairs}
    weight, count = np.zeros(10), np.zeros(10)
    for m in pairs:
        weight[np.flatnonzero(m.scope.mask)[m.cols]] += m.share
        count[np.flatnonzero(m.scope.mask)[m.cols]] += 1
    np.testing.assert_allclose(weight, 1.0)
    assert count.tolist() == [2] * 10  # 6-9: the small scope's ridge on a ties the hemisphere's: the larger wins
    assert set(both) == {("lh", "a"), ("lh", "b")}
    assert both[("lh", "a")].cols[:6].tolist() == both[("lh", "b")].cols[:6].tolist() == list(range(6))
    for t in studies[0][1].trials:  # a vertex no trial has an r for still takes one: the largest scope's best
        artifacts.write_trial_arrays(tmp_path, "subj01/lh", t.number, np.r_[np.nan, np.full(9, 0.5)], None)
    assert 0 in sum((m.cols.tolist() for m in study.members(cfg, studies, tmp_path, bank, Y, splits, None)
                     if m.scope.name == "lh"), [])
    one = taken(study.members(replace(cfg, top_trials=1), studies, tmp_path, bank, Y, splits, None))
    best = studies[0][1].best_trial.user_attrs["params"]["layer"]
    assert set(one) <= {("lh", best), ("lh/x", "a")} and sum(map(len, one.values())) == 10
    assert one[("lh", best)][:6] == list(range(6))  # positions in the hemisphere; the small scope's in its own


@pytest.mark.parametrize("change, message", [
    (["--trials", "0"], "--trials must be at least 1"),
    (["--subjects", "7"], "unknown subject 7"),
    (["--layers", "features.66"], "unknown layer 'features.66'"),
    (["--scope", "voxel"], "invalid choice: 'voxel'"),
])
def test_bad_input_one_line_and_nothing_written(demo_root, env, tmp_path, capsys, change, message):
    argv = _argv(demo_root, tmp_path / "out", 2)
    flag = change[0]
    i = argv.index(flag)
    argv[i + 1] = change[1]
    if flag == "--layers":
        del argv[i + 2]
    with pytest.raises(SystemExit) if flag == "--scope" else _nothing() as exc:
        code = main(argv)
    code = exc.value.code if flag == "--scope" else code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert list(tmp_path.iterdir()) == []


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_search_run_kind_and_scopes(demo_root):
    cfg = {"data": str(demo_root), "subjects": [1], "layers": ["features.6"], "trials": 2, "resolution": 64}
    checked = kinds.check_config("search", cfg)
    assert checked["estimators"] == ["ridge", "kernel", "pls", "elasticnet"]  # banded needs two layers
    assert checked["n_components"] == 119  # one PCA of at most n_train - 1 components
    from core.algonauts2023.dataset import open_dataset

    subject = open_dataset(demo_root, [1]).subject(1)
    names = [s.name for s in study.scopes(subject, "class")]
    assert names[0] == "lh" and "lh/prf-visualrois" in names and "rh" in names
    roi = study.scopes(subject, "roi")
    assert all(s.mask.any() for s in roi) and len(roi) > len(names)


@pytest.mark.slow
def test_search_on_ray_local(demo_root, env, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv("BES_RAY_ADDRESS", "local")
    assert main(_argv(demo_root, tmp_path / "out", 2, "--estimators", "ridge", "--pool-size", "0")) == 0
    rows = artifacts.read_trials(tmp_path / "out")
    assert sum(r["state"] in ("COMPLETE", "PRUNED") for r in rows) >= 4


def _view_app(run_dir: str, data: str) -> None:
    from pathlib import Path
    from types import SimpleNamespace

    from core.algonauts2023.dataset import open_dataset
    from ui.search_view import live_view

    live_view(SimpleNamespace(dir=Path(run_dir), config={"scope": "class"}), open_dataset(data, [1]).subject(1))


def _details_app(run_dir: str, data: str) -> None:
    from pathlib import Path
    from types import SimpleNamespace

    from ui.search_view import details

    details(SimpleNamespace(id=1, dir=Path(run_dir), config={"data": data, "subjects": [1], "scope": "roi"}))


def test_live_view_of_a_search(demo_root, tmp_path):
    from streamlit.testing.v1 import AppTest

    rng = np.random.default_rng(0)
    bank = space.Bank(["features.6", "features.10"], {("pca", l): np.zeros((2, 50)) for l in ("features.6", "features.10")}, {})
    st = study.storage(artifacts.study_storage(tmp_path))
    for name in ("subj01/lh", "subj01/lh/prf-visualrois", "subj01/rh"):
        s = optuna.create_study(study_name=name, storage=st, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=len(name)))
        for _ in range(6):
            trial = s.ask()
            trial.set_user_attr("params", space.suggest(trial, bank, ["ridge", "pls"], 50))
            s.tell(trial, float(rng.uniform(10, 60)))
    at = AppTest.from_function(_view_app, args=(str(tmp_path), str(demo_root)), default_timeout=60).run()
    assert not at.exception, at.exception
    best = at.dataframe[0].value
    assert best.loc[best["scope"] == "lh/prf-visualrois", "finished trials"].item() == 6
    assert best.loc[best["scope"] == "lh/streams", "finished trials"].item() == 0  # not started yet
    assert at.selectbox(key="search_view_scope").options[0] == "subj01/lh"
    counts = at.dataframe[-1].value
    assert counts.to_numpy().sum() == sum(at.dataframe[0].value.query("scope in ['lh', 'rh']")["vertices"])
    # an empty folder: the view says the search has not started
    at = AppTest.from_function(_view_app, args=(str(tmp_path / "none"), str(demo_root))).run()
    assert "not started" in at.info[0].value


def test_runs_page_offers_the_search_kind(demo_root, monkeypatch, tmp_path):
    from streamlit.testing.v1 import AppTest

    from tests.test_page_runs import PAGE

    monkeypatch.setenv("BES_DATA_DIR", str(demo_root))
    monkeypatch.setenv("BES_WORKSPACE", str(tmp_path / "workspace"))
    at = AppTest.from_file(PAGE, default_timeout=90).run()
    at.selectbox(key="runs_kind").select("search").run()
    assert not at.exception, at.exception
    assert at.number_input(key="runs_search_trials").value == 30
    assert any(c.value.startswith("60 studies × 30 trials = 1,800 trials") for c in at.caption)  # the demo's ROIs
    at.selectbox(key="runs_search_scope").select("class").run()
    assert any(c.value.startswith("14 studies × 30 trials = 420 trials") for c in at.caption)
    at.multiselect(key="runs_search_estimators").set_value([]).run()
    assert at.button(key="runs_launch").disabled  # nothing can be queued without an estimator
    assert any("at least one layer and one estimator" in c.value for c in at.caption)


@pytest.mark.slow
def test_search_on_the_2021_layout(demo2021_root, env, tmp_path):
    """Videos: scopes are the mini-track ROIs and the whole brain, frames are searched, both track zips written."""
    from core.algonauts2021.dataset import open_dataset2021
    from core.algonauts2021.submission import validate_submission2021

    out = tmp_path / "out"
    argv = ["search", "--data", str(demo2021_root), "--subjects", "1", "--out", str(out), "--trials", "2",
            "--frames", "2", "4", *BASE, "--estimators", "ridge", "kernel", "--pool-size", "0"]
    assert main(argv) == 0
    rows = artifacts.read_trials(out)
    ds = open_dataset2021(demo2021_root)
    rois = ds.subject(1).rois("mini_track")
    assert {r["scope"] for r in rows} == {"full_track", *(f"mini_track/{roi}" for roi in rois)}
    assert {r["frames"] for r in rows} <= {2, 4} and all(r["state"] != "FAIL" for r in rows)
    for track in ("mini_track", "full_track"):
        validate_submission2021(out / f"{track}.zip", ds, subjects=[1])
    summary = artifacts.read_metrics(out)
    assert set(summary["sub01"]["noise_normalized"]) == {"mini_track", "full_track"}
    assert summary["submissions"] == {"mini_track": "mini_track.zip", "full_track": "full_track.zip"}
    # the run's live view: the tracks' scopes, the winning layer as voxel counts per track
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_details_app, args=(str(out), str(demo2021_root)), default_timeout=60).run()
    assert not at.exception, at.exception
    assert set(at.dataframe[0].value["scope"]) == {r["scope"] for r in rows}
    assert list(at.dataframe[-1].value.columns) == ["mini_track", "full_track"]
    # the run kind takes the same settings; a 2023-only scope is refused in one line
    cfg = {"data": str(demo2021_root), "subjects": [1], "layers": ["features.6"], "trials": 2, "frames": [4, 2]}
    assert kinds.check_config("search", cfg)["frames"] == [2, 4]
    with pytest.raises(UserError, match="scope 'class' does not apply"):
        kinds.check_config("search", {**cfg, "scope": "class"})


def test_an_assembly_worker_ends_itself_when_its_search_is_killed():
    """A killed search's assembly worker would block for ever sending its result: ``_end_with`` ends it."""
    import signal
    import subprocess
    import sys
    import time

    child = ("import os, time\nfrom core.search import study\nstudy._end_with(os.getppid())\n"
             "print('watching', flush=True)\ntime.sleep(120)\n")
    middle = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time\n"
                               f"p = subprocess.Popen([sys.executable, '-c', {child!r}])\n"
                               "print(p.pid, flush=True)\ntime.sleep(120)\n"], stdout=subprocess.PIPE, text=True)
    pid = int(middle.stdout.readline())
    time.sleep(3.0)  # the child imports and starts watching

    def alive() -> bool:
        try:
            with open(f"/proc/{pid}/status") as f:
                return "\nState:\tZ" not in f.read()  # a zombie has ended
        except FileNotFoundError:
            return False

    assert alive()
    os.kill(middle.pid, signal.SIGKILL)
    middle.wait()
    deadline = time.time() + 15
    while alive() and time.time() < deadline:
        time.sleep(0.2)
    assert not alive()
