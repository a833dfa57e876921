"""The trained multi-subject encoder: model parts, training end to end, resume, CLI, run kind."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch

from core.cli import main
from core.runs import artifacts, kinds
from core.training.model import Ensemble, FactorizedReadout, GroupEncoder, group_pca, pool_factor
from core.training.trainer import TrainConfig, blend, train, train_task
from core.util.errors import UserError
from tests.conftest import make_tiny_dataset, page_file

TINY = dict(model="mobilenet_v2", layers=["features.3", "features.6"], resolution=32, epochs=2, batch_size=8,
            latents=8, embedding_dim=8, subject_rank=2, val_fraction=0.25, device="cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("data"), subjects=(1, 2), n_train=16, n_test=3)


@pytest.fixture
def cache(tmp_path_factory, monkeypatch):
    root = tmp_path_factory.getbasetemp() / "train-cache"
    monkeypatch.setenv("BES_CACHE_DIR", str(root))
    return root


def test_readout_is_rank_one_per_latent():
    r = FactorizedReadout(channels=3, positions=5, latents=2).eval()
    x = torch.randn(4, 3, 5)
    y = r(x)
    manual = torch.einsum("bcs,cd,ds->bd", x, r.channel, r.spatial)
    torch.testing.assert_close(y, r.norm(manual))


def test_large_square_maps_are_pooled_before_the_readout():
    assert [pool_factor(s, 196) for s in (784, 3136, 196, 49, 197, 1)] == [2, 4, 1, 1, 1, 1]
    assert pool_factor(25, 4) == 3  # 5x5 -> 2x2 (ceil mode)
    r = FactorizedReadout(channels=3, positions=16, latents=2, max_positions=4).eval()
    assert r.spatial.shape == (2, 4)
    x = torch.randn(5, 3, 16)
    pooled = torch.nn.functional.avg_pool2d(x.reshape(5, 3, 4, 4), 2).flatten(2)
    torch.testing.assert_close(r(x), r.norm(torch.einsum("bcs,cd,ds->bd", pooled, r.channel, r.spatial)))


def test_group_pca_is_orthonormal_and_subjects_read_their_vertices():
    rng = np.random.default_rng(0)
    index = [np.array([0, 1, 2, 3]), np.array([2, 3, 4])]
    responses = [rng.standard_normal((20, 4)).astype(np.float32), rng.standard_normal((15, 3)).astype(np.float32)]
    comp = group_pca(responses, index, n_group=5, n_components=4)
    assert comp.shape == (4, 5)
    np.testing.assert_allclose(comp @ comp.T, np.eye(4), atol=1e-5)
    model = GroupEncoder([(3, 5)], comp, index, latents=6, subject_rank=2)
    acts = [torch.randn(7, 3, 5)]
    assert model(acts, 0).shape == (7, 4) and model(acts, 1).shape == (7, 3)
    single = GroupEncoder([(3, 5)], comp, index[:1], latents=6, subject_rank=2)
    assert single.rank == 0  # one subject: only the shared map


def test_ensemble_members_learn_as_they_would_alone():
    comp = np.linalg.qr(np.random.default_rng(0).standard_normal((6, 4)))[0].T.astype(np.float32)
    torch.manual_seed(0)
    members = [GroupEncoder([(3, 5)], comp, [np.arange(6)], latents=4, dropout=0.0) for _ in range(2)]
    ens = Ensemble(members)
    acts, y = [torch.randn(8, 3, 5)], torch.randn(8, 6)
    pred = ens(acts, 0)
    assert pred.shape == (2, 8, 6)
    torch.nn.functional.mse_loss(pred, y.expand_as(pred)).backward()
    alone = GroupEncoder([(3, 5)], comp, [np.arange(6)], latents=4, dropout=0.0)
    alone.load_state_dict(members[1].state_dict())
    torch.nn.functional.mse_loss(alone(acts, 0), y).backward()
    grads = [(name, p.grad, q.grad) for (name, p), q in zip(members[1].named_parameters(), alone.parameters())
             if q.grad is not None]  # one subject: the subject maps have rank 0 and no gradient
    assert {name for name, _, _ in grads} >= {"shared.weight", "readouts.0.channel", "readouts.0.spatial"}
    for name, g, g_alone in grads:
        torch.testing.assert_close(2 * g, g_alone, msg=name)  # the 1/N scale only
    ens.eval()
    torch.testing.assert_close(ens(acts, 0), (members[0].eval()(acts, 0) + members[1].eval()(acts, 0)) / 2)


@pytest.mark.slow
def test_best_state_is_chosen_by_the_noise_normalised_score(tmp_path, cache):
    ds = make_tiny_dataset(tmp_path / "d", subjects=(1,), n_train=24, n_test=2)
    rng = np.random.default_rng(1)
    (ds / "noise_ceiling" / "subj01").mkdir(parents=True)
    for hemi, n in (("lh", 30), ("rh", 40)):
        np.save(ds / "noise_ceiling" / "subj01" / f"{hemi}.npy", rng.uniform(1, 60, n).astype(np.float32))
    cfg = TrainConfig(data=str(ds), subjects=[1], **{**TINY, "epochs": 4, "ensemble": 2}).checked()
    metrics = train(cfg, tmp_path / "run")
    curve, best = metrics["training"]["curve"], metrics["training"]["best"]
    assert {c["val_metric"] for c in curve} == {"noise-normalised"} and best["metric"] == "noise-normalised"
    assert best["score"] == max(c["val_score"] for c in curve)
    assert best["epoch"] == max(curve, key=lambda c: c["val_score"])["epoch"]
    # the network's score is the best state's, the same number early stopping compared; the reported one the blend's
    head = metrics["training"]["ridge_head"]
    assert head["network"] == pytest.approx(best["score"], abs=1e-4) and head["metric"] == "noise-normalised"
    assert metrics["subj01"]["noise_normalized"] == pytest.approx(head["blend"], abs=1e-4)
    assert {k.split(".")[1] for k in artifacts.read_checkpoint(tmp_path / "run")["head"]} == {"0", "1"}  # members


@pytest.mark.slow
def test_train_writes_pipeline_layout_submission_and_curve(data, cache, tmp_path):
    cfg = TrainConfig(data=str(data), subjects=[1, 2], **TINY).checked()
    out = tmp_path / "run"
    metrics = train(cfg, out)
    for name in ("subj01", "subj02"):
        m = metrics[name]
        assert set(m) == {"lh_median_r", "rh_median_r", "roi_median_r", "noise_normalized"}
        assert np.isfinite(m["lh_median_r"])
        assert artifacts.read_part(out / name, "lh", "val_r").shape == (30,)
        assert artifacts.read_part(out / name, "rh", "pred_test").shape == (3, 40)
        assert {r["roi"] for r in artifacts.read_roi_table(out / name)} >= {"all vertices", "V1v"}
    curve = artifacts.read_training_curve(out)
    assert [c["epoch"] for c in curve] == [1, 2] and all(np.isfinite(c["train_loss"]) for c in curve)
    assert metrics["training"]["curve"] == curve
    with zipfile.ZipFile(artifacts.submission_file(out)) as z:
        assert any("subj02" in n for n in z.namelist())
    best = json.loads((out / "metrics.json").read_text())["training"]["best"]
    assert best["phase"] == 1 and best["metric"] == "mean r"  # no noise ceilings shipped


def test_blend_scales_ridge_to_the_network_and_weighs_them_equally():
    rng = np.random.default_rng(0)
    net, ridge = rng.normal(size=(20, 5)), 0.1 * rng.normal(size=(20, 5))  # ridge shrunk 10x
    np.testing.assert_allclose(blend(net, ridge), 0.5 * (net + ridge * net.std(0) / ridge.std(0)), rtol=1e-5)
    np.testing.assert_allclose(blend(net, np.zeros_like(net)), 0.5 * net, rtol=1e-6)  # a flat ridge adds nothing


@pytest.mark.slow
def test_ridge_head_is_fitted_without_the_validation_rows_and_its_blend_reported(data, cache, tmp_path, monkeypatch):
    from core.training import trainer

    fitted = []
    real_fit = trainer.RidgeCV.fit

    def fit(self, X, Y, *a, **k):
        fitted.append(np.array(Y))
        return real_fit(self, X, Y, *a, **k)

    monkeypatch.setattr(trainer.RidgeCV, "fit", fit)
    cfg = TrainConfig(data=str(data), subjects=[1, 2], **TINY).checked()
    on = train(cfg, tmp_path / "on")
    subjects, _, _ = trainer._load_subjects(cfg)
    assert len(fitted) == 2  # one per subject, on its own vertices and fit rows only
    for Y, sub in zip(fitted, subjects):
        np.testing.assert_array_equal(Y, sub.responses[sub.fit_rows])
    head = on["training"]["ridge_head"]
    assert head["network"] == pytest.approx(on["training"]["best"]["score"], abs=1e-6) and head["weight"] == 0.5
    val_r = [np.concatenate([artifacts.read_part(tmp_path / "on" / s, h, "val_r") for h in ("lh", "rh")])
             for s in ("subj01", "subj02")]
    assert head["blend"] == pytest.approx(np.mean([np.nanmean(r) for r in val_r]), abs=1e-5)  # reported = blend
    assert head["blend"] != pytest.approx(head["network"], abs=1e-6)
    # off: the same network (the checkpoint is reused, no epoch retrained), its own predictions reported
    logs: list[str] = []
    off = train(TrainConfig(**{**cfg.to_dict(), "ridge_head": False}), tmp_path / "on", log=logs.append)
    assert len(fitted) == 2 and "blend" not in off["training"]["ridge_head"]
    assert not any(m.startswith("phase 1 epoch") for m in logs)
    assert off["training"]["ridge_head"]["network"] == pytest.approx(head["network"], abs=1e-6)
    val_r = [np.concatenate([artifacts.read_part(tmp_path / "on" / s, h, "val_r") for h in ("lh", "rh")])
             for s in ("subj01", "subj02")]
    assert head["network"] == pytest.approx(np.mean([np.nanmean(r) for r in val_r]), abs=1e-5)


def _numbers(curve):
    return [{k: v for k, v in c.items() if k != "seconds"} for c in curve]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(data, cache, tmp_path):
    cfg = TrainConfig(data=str(data), subjects=[1, 2], **{**TINY, "epochs": 3}).checked()
    straight = train(cfg, tmp_path / "a")

    def kill_after_epoch_2(message: str) -> None:
        if message.startswith("phase 1 epoch 2"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "b", log=kill_after_epoch_2)
    assert artifacts.read_checkpoint(tmp_path / "b")["epoch"] == 2
    logs: list[str] = []
    resumed = train(cfg, tmp_path / "b", log=logs.append)
    assert any("resumed phase 1 after epoch 2" in m for m in logs)
    assert _numbers(resumed["training"]["curve"]) == _numbers(straight["training"]["curve"])
    for hemi in ("lh", "rh"):
        np.testing.assert_array_equal(artifacts.read_part(tmp_path / "a" / "subj01", hemi, "pred_test"),
                                      artifacts.read_part(tmp_path / "b" / "subj01", hemi, "pred_test"))
    # a relaunched run (new folder) continues from the old run's checkpoint
    relaunched = train(TrainConfig(**{**cfg.to_dict(), "resume_from": str(tmp_path / "b")}), tmp_path / "c")
    assert _numbers(relaunched["training"]["curve"]) == _numbers(straight["training"]["curve"])


@pytest.mark.slow
def test_phase_two_trains_only_the_last_blocks_of_a_timm_trunk(tmp_path, cache):
    ds = make_tiny_dataset(tmp_path / "d", subjects=(1,), n_train=12, n_test=2)
    cfg = TrainConfig(data=str(ds), subjects=[1], model="timm:vit_tiny_patch16_224", weights="random",
                      layers=["blocks.1", "blocks.2"], resolution=32, epochs=1, finetune_blocks=1, finetune_epochs=1,
                      batch_size=8, latents=8, embedding_dim=4, val_fraction=0.25, device="cpu").checked()
    train(cfg, tmp_path / "run")
    ckpt = artifacts.read_checkpoint(tmp_path / "run")
    assert ckpt["phase"] == 2 and ckpt["trunk"]
    assert all(k.startswith("net.blocks.11.") for k in ckpt["trunk"])
    assert [c["phase"] for c in artifacts.read_training_curve(tmp_path / "run")] == [1, 2]


def test_cli_bad_input_is_one_line_and_writes_nothing(data, tmp_path, capsys):
    out = tmp_path / "out"
    for extra in (["--subjects", "1", "7"], ["--subjects", "1", "--dropout", "3"],
                  ["--subjects", "1", "--finetune-blocks", "99"]):
        rc = main(["train", "--data", str(data), "--model", "mobilenet_v2", "--layers", "features.3",
                   "--out", str(out), *extra])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.startswith("error:") and "\n" not in err
    rc = main(["train", "--data", str(data), "--subjects", "1", "--model", "mobilenet_v2", "--layers", "features.99",
               "--out", str(out)])
    assert rc == 2 and "unknown layer 'features.99'" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_cli_trains_and_moves_results_into_out(data, cache, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["train", "--data", str(data), "--subjects", "1", "2", "--model", "mobilenet_v2", "--layers",
               "features.3", "--out", str(out), "--epochs", "1", "--resolution", "32", "--batch-size", "8",
               "--latents", "4", "--embedding-dim", "4", "--val-fraction", "0.25", "--device", "cpu", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "submission.zip", "training_curve.json"]
    assert not list(tmp_path.glob(".out*"))  # the work folder is gone


def test_cli_defaults_are_the_configs():
    from core.cli import build_parser

    args = build_parser().parse_args(["train", "--data", "d", "--subjects", "1", "--model", "m", "--layers", "l",
                                      "--out", "o"])
    for name, default in TrainConfig.__dataclass_fields__.items():
        if hasattr(args, name) and name not in ("data", "subjects", "model", "layers", "weights", "device"):
            assert getattr(args, name) == default.default, name


def test_train_is_a_run_kind_with_checked_config(data):
    assert kinds.resolve_task("train") is train_task
    cfg = kinds.check_config("train", {"data": str(data), "subjects": ["subj01"], "layers": ["features.3"]})
    assert cfg["subjects"] == [1] and cfg["weights"] == "imagenet-offline" and cfg["epochs"] == TrainConfig.epochs
    with pytest.raises(UserError, match="unknown TrainConfig setting 'epoch'"):
        kinds.check_config("train", {"data": str(data), "subjects": [1], "layers": ["features.3"], "epoch": 3})


@pytest.mark.slow
def test_runs_page_train_form_and_live_curves(demo_root, monkeypatch, tmp_path):
    from streamlit.testing.v1 import AppTest

    from core.runs.store import RunStore

    monkeypatch.setenv("BES_DATA_DIR", str(demo_root))
    monkeypatch.setenv("BES_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BES_WORKSPACE", str(tmp_path / "workspace"))
    store = RunStore(tmp_path / "workspace")
    config = TrainConfig(data=str(demo_root), subjects=[1, 2], layers=["features.6"]).checked().to_dict()
    run = store.create("train", config, label="live")
    artifacts.write_training_curve(run.dir, [
        {"phase": 1, "epoch": 1, "train_loss": 0.9, "val_score": 0.10},
        {"phase": 1, "epoch": 2, "train_loss": 0.8, "val_score": 0.15},
    ])
    at = AppTest.from_file(page_file("Runs"), default_timeout=90).run()
    assert not at.exception, at.exception
    assert any("2 epochs so far; best: phase 1 epoch 2" in c.value for c in at.caption)
    assert len(at.get("vega_lite_chart")) == 2  # loss and validation curves
    at.selectbox(key="runs_kind").select("train").run()
    assert at.multiselect(key="runs_train_subjects").value == [1, 2]
    assert at.multiselect(key="runs_train_layers_mobilenet_v2").value == ["features.6", "features.10", "features.17"]
    at.text_input(key="runs_train_model").set_value("timm:vit_tiny_patch16_224").run()
    assert "blocks.11" in at.multiselect(key="runs_train_layers_timm:vit_tiny_patch16_224").options
    at.text_input(key="runs_train_model").set_value("mobilenet_v2").run()
    at.number_input(key="runs_train_finetune_blocks").set_value(99).run()
    at.button(key="runs_launch").click().run()
    assert any("--finetune-blocks 99: mobilenet_v2 has 19 blocks" in e.value for e in at.error)
    assert len(store.list()) == 1  # nothing queued
