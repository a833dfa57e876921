"""Issue #14, case by case: decompression bombs, damaged caches, killed runs' work folders, unreadable
folders and link loops, full disks, hostile submission zips, --out overwritten, corrupt weights, and who
may reach the dashboard; plus #15's CLI defaults (info without --data, pipeline without --weights)."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import core.algonauts2021.dataset as d21
from core.algonauts2023.dataset import open_dataset
from core.algonauts2023.submission import validate_submission
from core.algonauts2021.submission import validate_submission2021
from core.cli import main
from core.features import backbones
from core.features.extraction import ExtractionConfig, extract_features
from core.features.images import build_image_cache
from core.features.video import build_frame_cache, read_frames, write_video
from core.util import fsaccess, outdir, paths
from core.util.atomicdir import HOST
from core.util.errors import DatasetError, UserError
from core.util.npystream import NpyWriter, npy_complete
from tests.conftest import ROOT, make_tiny_dataset, page_file, write_pngs
from tests.test_dataset2021 import make_tiny_2021

FAST = ["--model", "mobilenet_v2", "--layers", "features.6", "--device", "cpu", "--resolution", "64",
        "--n-components", "20", "--quiet"]  # no --weights: the model's default (#15)
TINY = ExtractionConfig(model="mobilenet_v2", weights="imagenet-offline", layers=["features.2"], resolution=32,
                        reduction="pca", n_components=3)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BES_CACHE_DIR", str(tmp_path / "cache"))
    d21._open_roi_file.cache_clear()
    return tmp_path / "cache"


def _truncate(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) // 2)


# -- 1. decompression bombs -------------------------------------------------------------------------
def _png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims ``width x height`` 8-bit RGB (its data: a few zero rows)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    rows = zlib.compress(b"\0" * (1 + 3 * width) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    import pyspng

    images = write_pngs(tmp_path / "imgs", 2, size=16)
    bomb = tmp_path / "imgs" / "img-0002.png"
    bomb.write_bytes(_png_claiming(30000, 30000))  # 2.7 GB of pixels from a ~100 kB file
    decode = pyspng.load

    def guarded(data, **kw):
        if data[16:20] != (16).to_bytes(4, "big"):
            pytest.fail("the bomb was handed to the decoder")
        return decode(data, **kw)

    monkeypatch.setattr(pyspng, "load", guarded)
    with pytest.raises(DatasetError) as exc:
        build_image_cache([*images, bomb], 32, cache_dir=tmp_path / "c", num_workers=0)
    msg = str(exc.value)
    assert msg.startswith(str(bomb)) and "30000 x 30000" in msg and "BES_MAX_IMAGE_PIXELS" in msg and "\n" not in msg
    assert not any((tmp_path / "c" / "images").iterdir())


def test_the_pixel_limit_is_configurable_and_covers_video_frames(tmp_path, monkeypatch):
    images = write_pngs(tmp_path / "imgs", 2, size=16)
    clip = write_video(tmp_path / "clip.mp4", np.zeros((3, 16, 16, 3), np.uint8), fps=3)
    monkeypatch.setenv("BES_MAX_IMAGE_PIXELS", "255")  # one pixel short of 16 x 16
    with pytest.raises(DatasetError, match=r"img-0000.png: image of 16 x 16 pixels .* exceeds the limit"):
        build_image_cache(images, 32, cache_dir=tmp_path / "c", num_workers=0)
    with pytest.raises(DatasetError, match=r"clip.mp4: video frames of 16 x 16 pixels .* exceeds the limit"):
        read_frames(clip, 2)
    monkeypatch.setenv("BES_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(UserError, match="BES_MAX_IMAGE_PIXELS='lots': not a number of pixels"):
        build_image_cache(images, 32, cache_dir=tmp_path / "c", num_workers=0)
    monkeypatch.setenv("BES_MAX_IMAGE_PIXELS", "256")
    assert build_image_cache(images, 32, cache_dir=tmp_path / "c", num_workers=0).n == 2


# -- 2. damaged cache entries are rebuilt -----------------------------------------------------------
def test_a_truncated_pixel_cache_is_rebuilt(tmp_path, caplog):
    images = write_pngs(tmp_path / "imgs", 3, size=16)
    first = build_image_cache(images, 32, cache_dir=tmp_path / "c", num_workers=0)
    pixels = np.array(first.array())
    _truncate(first.file)
    again = build_image_cache(images, 32, cache_dir=tmp_path / "c", num_workers=0)
    assert again.path == first.path and npy_complete(again.file) and np.array_equal(again.array(), pixels)
    assert "damaged cache entry" in caplog.text and str(first.path) in caplog.text
    assert [p.name for p in (tmp_path / "c" / "images").iterdir()] == [first.path.name]  # nothing set aside left


def test_a_damaged_frame_cache_is_rebuilt(tmp_path):
    clips = [write_video(tmp_path / f"{i}.mp4", np.full((3, 16, 16, 3), 40 * i, np.uint8), fps=3) for i in range(2)]
    first = build_frame_cache(clips, 2, 16, cache_dir=tmp_path / "c", num_workers=1)
    frames = np.array(first.array())
    (first.path / "meta.json").write_text("{")  # meta damaged
    again = build_frame_cache(clips, 2, 16, cache_dir=tmp_path / "c", num_workers=1)
    assert json.loads((again.path / "meta.json").read_text())["n"] == 4 and np.array_equal(again.array(), frames)


@pytest.mark.slow
def test_a_truncated_feature_entry_is_rebuilt(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", n_train=8, n_test=2)
    subj = open_dataset(data).subject(1)
    entry = extract_features(subj.train_images, subj.test_images, TINY, cache_dir=tmp_path / "c", device="cpu")
    entry = entry["features.2"]
    train = np.load(entry.train_file)
    _truncate(entry.train_file)
    again = extract_features(subj.train_images, subj.test_images, TINY, cache_dir=tmp_path / "c",
                             device="cpu")["features.2"]
    assert again.path == entry.path and npy_complete(again.train_file, (8, 3), np.float32)
    np.testing.assert_allclose(np.load(again.train_file), train, atol=1e-4)


def test_a_truncated_fmri_cache_of_the_2021_reader_is_rebuilt(tmp_path, cache):
    root = make_tiny_2021(tmp_path / "d")
    v1 = d21.open_dataset2021(root).subject(1).file("V1")
    fmri = np.array(v1.fmri())
    _truncate(v1.cached / "train.npy")
    d21._open_roi_file.cache_clear()  # a new process
    again = d21.open_dataset2021(root).subject(1).file("V1")
    assert np.array_equal(again.fmri(), fmri)


# -- 3 and 7. killed pipelines' work folders; --out is never overwritten silently -----------------
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.slow
def test_pipeline_cleans_dead_work_folders_and_follows_the_out_rule(demo_root, cache, tmp_path, capsys):
    out = tmp_path / "out"
    dead_old = tmp_path / f".out.pipeline-{_dead_pid()}"  # the name killed runs left before
    dead = tmp_path / f".out.pipeline-{HOST}-{_dead_pid()}"
    alive = tmp_path / f".out.pipeline-{HOST}-{os.getppid()}"  # a live process's folder: not ours to remove
    for d in (dead_old, dead, alive):
        (d / "subj01").mkdir(parents=True)
        (d / "metrics.json").write_text("{}")
    argv = ["pipeline", "--data", str(demo_root), "--subjects", "1", "--out", str(out), *FAST]
    assert main(argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, "cache", "out"])
    first = (out / "metrics.json").read_bytes()
    capsys.readouterr()

    assert main(argv) == 2  # earlier results: refused
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{out}: not empty" in err and "--force" in err
    assert (out / "metrics.json").read_bytes() == first
    (out / "notes.txt").write_text("mine")
    assert main([*argv, "--force", "--seed", "1"]) == 0
    assert (out / "metrics.json").read_bytes() != first and (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, "cache", "out"])


def test_every_output_command_has_the_same_rule(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "earlier"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    for argv in (["fit", "--data", str(tiny_dataset), "--subject", "1", "--features", str(tmp_path), "--out", str(out)],
                 ["demo", "--out", str(out)], ["demo2021", "--out", str(out)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err == f"error: {out}: not empty (earlier results?); choose a new --out, or pass --force to replace " \
                      "the files this command writes\n", argv
    assert [p.name for p in out.iterdir()] == ["metrics.json"]
    from core.cli import build_parser

    for command in ("pipeline", "fit", "demo", "demo2021"):
        sub = build_parser()._subparsers._group_actions[0].choices[command]  # noqa: SLF001
        assert "--force" in sub.format_help() and "--out must be a new or empty folder" in " ".join(
            sub.format_help().split()), command


def test_demo_with_force_replaces_its_own_files_only(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "subj01").mkdir()
    (out / "subj01" / "stale.npy").write_bytes(b"old")
    assert main(["demo", "--out", str(out), "--subjects", "1", "--n-train", "10", "--n-test", "1", "--force"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and not (out / "subj01" / "stale.npy").exists()
    assert open_dataset(out).subject(1).n_train == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # no work folder left


# -- 4. unreadable folders and symbolic-link loops ------------------------------------------------
def _as_nobody(fn, *args) -> str:
    """Run ``fn(*args)`` in a forked child with the uid of ``nobody`` (so ``chmod 000`` really bites);
    returns what it raised, as ``"Type: message"``, or ``"ok"``."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop root, run, report
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                fn(*args)
                result = "ok"
            except Exception as exc:
                result = f"{type(exc).__name__}: {exc}"
            os.write(w, result.encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        result = fh.read().decode()
    os.waitpid(pid, 0)
    return result


@pytest.fixture
def shared_tiny(tmp_path):
    """A tiny dataset that user ``nobody`` can reach (pytest's tmp_path is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="bes-rel-"))
    base.chmod(0o755)
    root = make_tiny_dataset(base / "data")
    for d, _dirs, files in os.walk(base):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    yield root
    for d, _dirs, _files in os.walk(base):
        os.chmod(d, 0o755)
    shutil.rmtree(base)


@pytest.mark.parametrize("folder", ["subj01/training_split/training_images", "subj01/roi_masks"])
def test_an_unreadable_folder_is_one_line_naming_it(shared_tiny, folder):
    target = shared_tiny / folder
    target.chmod(0o000)
    if os.geteuid() == 0:
        result = _as_nobody(open_dataset, shared_tiny)
    else:
        try:
            open_dataset(shared_tiny)
            result = "ok"
        except Exception as exc:
            result = f"{type(exc).__name__}: {exc}"
    assert result == f"DatasetError: {target}: permission denied (this user may not read it; check its permissions)"


def test_a_symlink_loop_is_named_as_such_on_the_cli_and_in_the_dashboard(tiny_dataset, monkeypatch, capsys):
    fmri = tiny_dataset / "subj01" / "training_split" / "training_fmri" / "lh_training_fmri.npy"
    fmri.unlink()
    fmri.symlink_to(fmri)
    assert main(["info", "--data", str(tiny_dataset)]) == 2
    assert capsys.readouterr().err == f"error: {fmri}: symbolic link loop (a link that points back at itself)\n"

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("BES_DATA_DIR", str(tiny_dataset))
    at = AppTest.from_file(page_file("Dataset"), default_timeout=60).run()
    assert not at.exception
    assert [e.value for e in at.error] == [f"{fmri}: symbolic link loop (a link that points back at itself)"]


# -- 5. full disks --------------------------------------------------------------------------------
def test_aborting_a_stream_on_a_full_disk_does_not_raise_again():
    w = NpyWriter("/dev/full", (4, 3))  # every write to /dev/full fails with ENOSPC
    w.write(np.zeros((2, 3), np.float32))  # buffered
    w.abort()  # the final flush fails: swallowed, the file is closed
    assert w._fh.closed  # noqa: SLF001


def test_disk_full_messages_use_useful_units(tmp_path, monkeypatch):
    monkeypatch.setattr(fsaccess, "free_bytes", lambda _folder: 1_300_000)
    with pytest.raises(UserError) as exc:
        fsaccess.check_free(tmp_path, 45_000_000, "the feature cache", "set BES_CACHE_DIR to a bigger disk")
    assert str(exc.value) == (f"{tmp_path}: no room for the feature cache on this disk (needs about 45 MB, 1.3 MB "
                              "free); set BES_CACHE_DIR to a bigger disk")
    assert [fsaccess.human_bytes(n) for n in (512, 1_300_000, 2.4e9)] == ["512 bytes", "1.3 MB", "2.4 GB"]


def _mount(folder: Path, size: str) -> Path:
    """A tmpfs of ``size`` at ``folder`` (root only; the test is skipped where mounting is not allowed)."""
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small file system here")
    return folder


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB file system."""
    yield _mount(tmp_path / "small", "3m")
    subprocess.run(["umount", "-l", str(tmp_path / "small")], check=False)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 kB file system."""
    yield _mount(tmp_path / "tiny", "64k")
    subprocess.run(["umount", "-l", str(tmp_path / "tiny")], check=False)


def _leftovers(folder: Path) -> list[str]:
    return [str(p.relative_to(folder)) for p in folder.rglob(".*")]


@pytest.mark.parametrize("resolution, message", [
    (96, "no room for layer features.1's features on this disk (needs about 6.2 MB, "),  # seen before starting
    (64, "no room for the feature cache on this disk (needs about 2.8 MB, "),  # the disk fills up while writing
])
def test_a_full_feature_cache_is_one_line_and_leaves_nothing(tmp_path, small_disk, resolution, message):
    """42 images; at 64 px features.1 is 2.8 MB (fits the 3 MB disk) but the pixel cache's 0.5 MB does not."""
    images = write_pngs(tmp_path / "imgs", 42, size=16)
    cfg = ExtractionConfig(model="mobilenet_v2", weights="imagenet-offline", layers=["features.1"],
                           resolution=resolution, reduction="none")
    with pytest.raises(UserError) as exc:
        extract_features(images[:38], images[38:], cfg, cache_dir=small_disk, device="cpu")
    msg = str(exc.value)
    assert msg.startswith(f"{small_disk / 'features'}: {message}") and "\n" not in msg
    assert not list((small_disk / "features").iterdir()) and not _leftovers(small_disk)


@pytest.mark.slow
def test_a_full_out_disk_is_one_line_and_leaves_nothing(demo_root, cache, tiny_disk, capsys):
    out = tiny_disk / "out"
    assert main(["pipeline", "--data", str(demo_root), "--subjects", "1", "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tiny_disk}: no room for the results on this disk (needs about ") and \
        err.endswith("; free some space or choose another --out\n") and err.count("\n") == 1
    assert list(tiny_disk.iterdir()) == []


# -- 6. submission validators on hostile zips -----------------------------------------------------
def _npy_header(shape, descr="<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def _good_entries(ds) -> dict[str, bytes]:
    subj = ds.subject(1)
    out = {}
    for hemi in ("lh", "rh"):
        buf = io.BytesIO()
        np.save(buf, np.zeros((subj.n_test, subj.n_vertices[hemi]), np.float32))
        out[f"subj01/{hemi}_pred_test.npy"] = buf.getvalue()
    return out


def test_a_header_declaring_petabytes_is_refused_unread(tiny_dataset, tmp_path):
    ds = open_dataset(tiny_dataset)
    entries = _good_entries(ds)
    entries["subj01/lh_pred_test.npy"] = _npy_header((2**48, 30)) + b"\0" * 64  # 7 PiB declared
    with pytest.raises(UserError) as exc:
        validate_submission(_zip(tmp_path / "s.zip", entries), ds, [1])
    assert str(exc.value) == (f"{tmp_path / 's.zip'}: subj01/lh_pred_test.npy: expected shape (2, 30) (test images x "
                              "vertices), the header declares (281474976710656, 30)")


@pytest.mark.parametrize("payload, message", [
    (lambda n: _npy_header((2, 30)) + b"\0" * (50 << 20), "would inflate to 52 MB, more than its (2, 30) float32"),
    (lambda n: _npy_header((2, 30), "<f8") + b"\0" * 480, "expected float32 predictions, found float64"),
    (lambda n: _npy_header((2, 30)) + b"\0" * 100, "holds 100 bytes of data, its header needs 240"),
    (lambda n: b"\x93NUMPY\x01\x00" + b"\xff" * 40, "is not a readable .npy array"),
])  # fmt: skip
def test_zip_bombs_and_malformed_arrays_are_one_line(tiny_dataset, tmp_path, payload, message):
    ds = open_dataset(tiny_dataset)
    entries = {**_good_entries(ds), "subj01/lh_pred_test.npy": payload(None)}
    with pytest.raises(UserError) as exc:
        validate_submission(_zip(tmp_path / "s.zip", entries), ds, [1])
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_a_2021_zip_bomb_is_refused_from_its_declared_size(tmp_path, cache):
    ds = d21.open_dataset2021(make_tiny_2021(tmp_path / "d"))
    bomb = _zip(tmp_path / "mini.zip", {"mini_track.pkl": b"\0" * (20 << 20)})
    with pytest.raises(UserError, match=r"mini_track.pkl would inflate to 21 MB, more than a submission for this "
                                        r"dataset can hold \(1.0 MB\)"):
        validate_submission2021(bomb, ds)


# -- 8. corrupt weights ---------------------------------------------------------------------------
class _Code:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("kind, message", [
    ("truncated", "not a readable state dict (damaged, truncated, or not a PyTorch file)"),
    ("text", "not a readable state dict (damaged, truncated, or not a PyTorch file)"),
    ("code", "not a plain state dict: it holds pickled Python objects besides tensors"),
])
def test_a_corrupt_weights_file_is_one_line(tmp_path, kind, message):
    import torch

    path = tmp_path / "w.pt"
    if kind == "truncated":
        buf = io.BytesIO()
        torch.save({"a": torch.zeros(100)}, buf)
        path.write_bytes(buf.getvalue()[:300])
    elif kind == "text":
        path.write_text("not weights at all\n" * 10)
    else:
        path.write_bytes(pickle.dumps({"a": _Code()}, protocol=2))  # torch.save's protocol
    with pytest.raises(UserError) as exc:
        backbones.load_backbone("mobilenet_v2", str(path))
    assert str(exc.value) == f"{path}: {message}" or str(exc.value).startswith(f"{path}: {message}")
    assert "Weights only load failed" not in str(exc.value) and "\n" not in str(exc.value)


# -- who may reach the dashboard ------------------------------------------------------------------
def test_the_dashboard_listens_on_localhost_only():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"


def test_no_page_takes_a_ray_address_from_the_browser(demo_root, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("BES_DATA_DIR", str(demo_root))
    monkeypatch.setenv("BES_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BES_WORKSPACE", str(tmp_path / "ws"))
    at = AppTest.from_file(page_file("Runs"), default_timeout=90).run()
    at.radio(key="runs_scope").set_value("grid").run()
    assert not at.exception
    assert not [t for t in at.text_input if "ray" in (t.label or "").lower()]


def test_browser_users_open_only_the_allowed_roots(tmp_path, monkeypatch):
    allowed, secret = tmp_path / "data", tmp_path / "secret"
    (allowed / "subj01").mkdir(parents=True)
    secret.mkdir()
    (allowed / "escape").symlink_to(secret)
    monkeypatch.setenv("BES_DATA_ROOTS", f"{allowed}{os.pathsep}{tmp_path / 'more'}")
    assert paths.check_browsable(allowed) == allowed
    assert paths.check_browsable(allowed / "subj01" / "x") == allowed / "subj01" / "x"

    def refusal(p) -> str:
        with pytest.raises(UserError) as exc:
            paths.check_browsable(p)
        return str(exc.value).replace(str(p), "PATH", 1)

    messages = {refusal(p) for p in (secret, tmp_path / "nowhere", "/etc", "/", allowed / ".." / "secret",
                                     allowed / "escape")}
    assert len(messages) == 1  # the same words whether the path exists or not
    assert messages.pop().startswith("PATH: outside the folders this dashboard may open")

    monkeypatch.delenv("BES_DATA_ROOTS")
    monkeypatch.setenv("BES_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BES_DATA_DIR", str(allowed))
    assert paths.allowed_data_roots()[:3] == [tmp_path / "cache" / "demo", tmp_path / "cache" / "demo2021", allowed]


def test_the_sidebar_refuses_other_folders_alike(tiny_dataset, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("BES_DATA_DIR", str(tiny_dataset))
    monkeypatch.setenv("BES_CACHE_DIR", str(tmp_path / "cache"))
    at = AppTest.from_file(page_file("Dataset"), default_timeout=60).run()
    assert not at.exception and not at.error
    seen = []
    for probe in ("/etc", str(tmp_path / "nowhere")):
        at.sidebar.text_input(key="_w_data_dir").set_value(probe).run()
        assert not at.exception and len(at.error) == 1
        seen.append(at.error[0].value.replace(probe, "PATH"))
    assert seen[0] == seen[1] and "outside the folders this dashboard may open" in seen[0]


# -- #15: the CLI's defaults ----------------------------------------------------------------------
def test_info_without_data_uses_the_dashboards_data_dir(tiny_dataset, monkeypatch, capsys):
    monkeypatch.setenv("BES_DATA_DIR", str(tiny_dataset))
    assert main(["info"]) == 0
    assert capsys.readouterr().out.startswith(f"dataset: {tiny_dataset} (Algonauts 2023, 1 subjects)")


def test_info_without_data_generates_the_demo_first(tmp_path, monkeypatch, capsys):
    import functools

    from core.algonauts2023 import demo

    monkeypatch.delenv("BES_DATA_DIR", raising=False)
    monkeypatch.setenv("BES_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(demo, "ensure_demo", functools.partial(demo.ensure_demo, subjects=(1,), n_train=10, n_test=1))
    assert main(["info", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["data"] == str(tmp_path / "cache" / "demo") and out["subjects"][0]["n_train"] == 10


def test_pipeline_and_extract_share_the_weights_rule():
    from core.cli import build_parser

    parser = build_parser()
    for argv in (["pipeline", "--data", "d", "--subjects", "1", "--model", "mobilenet_v2", "--layers", "features.6",
                  "--out", "o"], ["extract", "--model", "mobilenet_v2"]):
        assert parser.parse_args(argv).weights is None  # None = the model's default
    assert backbones.resolve_weights("mobilenet_v2", None).spec == "imagenet-offline"


def test_the_dead_work_folder_rule_ignores_other_hosts(tmp_path):
    from core.util.atomicdir import clean_dead_workdirs

    mine, other = tmp_path / f".o.pipeline-{HOST}-{_dead_pid()}", tmp_path / ".o.pipeline-elsewhere-1"
    mine.mkdir()
    other.mkdir()
    assert clean_dead_workdirs(tmp_path, ".o.pipeline") == [mine]
    assert [p.name for p in tmp_path.iterdir()] == [other.name]


def test_a_published_entry_that_fails_its_check_is_replaced(tmp_path):
    """Not kept as 'someone else published it first', as before; a valid one still is."""
    from core.util.atomicdir import staging_dir

    final = tmp_path / "entry"
    final.mkdir()
    (final / "data").write_text("broken")
    with staging_dir(final, valid=lambda e: (e / "data").read_text() == "good") as tmp:
        (tmp / "data").write_text("good")
    assert (final / "data").read_text() == "good" and [p.name for p in tmp_path.iterdir()] == ["entry"]
    with staging_dir(final, valid=lambda e: (e / "data").read_text() == "good") as tmp:
        (tmp / "data").write_text("other")
    assert (final / "data").read_text() == "good"  # a valid published entry is kept
