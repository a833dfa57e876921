"""Fault catalogue (issue #14): bad inputs and faults thrown at the real commands, run by hand.

    python benchmarks/fault_catalogue.py [--only TEXT [TEXT ...]] [--keep]

On a one-subject demo (80 training + 10 test images) and a small video demo, each case damages a copy
of the data, the cache, the output folder or a running process, runs the real command in a fresh
process (``python -m core ...``), and checks that: the exit status is the expected one (0 = the run went
on, 2 = refused); a refusal is ONE ``error:`` line; no traceback was printed; no partial output or work
folder is left (``.tmp-*``, ``.broken-*``, ``.<out>.pipeline-*``, ``.<out>.work-*``); every cache entry
is whole afterwards; and any case-specific promise (a pickle's code never ran, old results untouched...).
It prints one table row per case. Cases that need root (unreadable folders for user ``nobody``, a tiny
tmpfs for full disks) are marked skipped elsewhere.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORK = Path(tempfile.mkdtemp(prefix="bes-faults-"))
CACHE = WORK / "cache"
MARKER = WORK / "PWNED"  # a malicious pickle's payload would create this file
LEFTOVER = re.compile(r"^\.(tmp-|broken-)|\.(pipeline|work)-|\.tmp-")
EXTRACT = ["--layers", "features.2", "--resolution", "32", "--n-components", "10", "--device", "cpu", "--quiet"]
PIPELINE = ["--model", "mobilenet_v2", "--layers", "features.2", "--resolution", "32", "--n-components", "10",
            "--device", "cpu", "--quiet"]


class Evil:
    """Unpickling this runs ``touch MARKER``."""

    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


@dataclass
class Outcome:
    rc: int
    err: str
    seconds: float
    ok: bool = True  # the case's own promise held
    note: str = ""


@dataclass
class Case:
    name: str
    expect: int  # 0: the run goes on; 2: refused in one line
    run: Callable[[], Outcome]
    needs_root: bool = False
    watch: list[Path] = field(default_factory=list)


# -- running commands -------------------------------------------------------------------------------
def env(**extra: str) -> dict:
    e = {**os.environ, "BES_CACHE_DIR": str(CACHE), "PYTHONPATH": str(ROOT), "BES_WORKSPACE": str(WORK / "ws")}
    e.pop("BES_DATA_DIR", None)
    e.update(extra)
    return e


def cli(*argv: str, timeout: float = 900, **extra: str) -> Outcome:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "core", *map(str, argv)], cwd=ROOT, env=env(**extra),
                       capture_output=True, text=True, timeout=timeout)
    return Outcome(p.returncode, p.stderr, time.perf_counter() - t0)


def snippet(code: str, **extra: str) -> Outcome:
    """Python ``code`` in a fresh process, a ``UserError`` printed and exited as the CLI does."""
    wrapped = ("import sys\nfrom core.util.errors import UserError\ntry:\n"
               + "".join(f"    {line}\n" for line in code.strip().splitlines())
               + "except UserError as e:\n    print(f'error: {e}', file=sys.stderr)\n    sys.exit(2)\n")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", wrapped], cwd=ROOT, env=env(**extra), capture_output=True, text=True)
    return Outcome(p.returncode, p.stderr, time.perf_counter() - t0)


def as_nobody(*argv: str) -> Outcome:
    """``python -m core ARGV`` in a forked child with the uid of ``nobody`` (the interpreter and the modules
    are loaded first: ``nobody`` could not read them from root's home), its stderr captured."""
    import core.algonauts2021.dataset  # noqa: F401
    import core.algonauts2023.dataset  # noqa: F401
    from core.cli import build_parser, main

    build_parser()  # imports every command module

    r, w = os.pipe()
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        rc = 1
        try:
            os.close(r)
            os.dup2(w, 2)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            rc = main(list(argv))
        except SystemExit as exc:
            rc = int(exc.code or 0)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(rc)
    os.close(w)
    with os.fdopen(r) as fh:
        err = fh.read()
    _, status = os.waitpid(pid, 0)
    return Outcome(os.waitstatus_to_exitcode(status), err, time.perf_counter() - t0)


# -- data -----------------------------------------------------------------------------------------
def slug(text: str) -> str:
    return re.sub(r"\W+", "-", text).strip("-")


def copy_data(name: str, src: Path | None = None) -> Path:
    """A copy of the demo (hard links: replace a file before changing it, never write into it)."""
    dst = WORK / "data" / name
    shutil.copytree(src or BASE, dst, copy_function=os.link)
    for d, _dirs, _files in os.walk(dst):
        os.chmod(d, 0o755)
    return dst


def replace(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


def save_replacing(path: Path, array) -> None:
    path.unlink()
    np.save(path, array)


def fmri(d: Path) -> Path:
    return d / "subj01" / "training_split" / "training_fmri" / "lh_training_fmri.npy"


def npy_bytes(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * (1 + 3 * width) * 4))
            + chunk(b"IEND", b""))


def first_image(d: Path) -> Path:
    return sorted((d / "subj01" / "training_split" / "training_images").iterdir())[0]


def entries(kind: str) -> list[Path]:
    folder = CACHE / kind
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


# -- checks ---------------------------------------------------------------------------------------
def broken_cache_entries() -> list[str]:
    from core.algonauts2021.dataset import cached_meta
    from core.features.extraction import entry_intact
    from core.util.npystream import npy_complete

    bad = []
    for kind in ("images", "frames"):
        for e in entries(kind):
            try:
                meta = json.loads((e / "meta.json").read_text())
                ok = npy_complete(e / "images.npy") and meta["n"] == np.load(e / "images.npy", mmap_mode="r").shape[0]
            except Exception:
                ok = False
            if not ok:
                bad.append(f"{kind}/{e.name}")
    for e in entries("features"):
        try:
            meta = json.loads((e / "meta.json").read_text())
            ok = entry_intact(e, meta["n_train"], meta["n_test"])
        except Exception:
            ok = False
        if not ok:
            bad.append(f"features/{e.name}")
    bad += [f"fmri2021/{e.name}" for e in entries("fmri2021") if cached_meta(e) is None]
    return bad


def leftovers() -> list[str]:
    found = []
    for d, dirs, files in os.walk(WORK):
        for name in dirs + files:
            if LEFTOVER.search(name):
                found.append(str(Path(d, name).relative_to(WORK)))
        dirs[:] = [x for x in dirs if not LEFTOVER.search(x)]
    return found


# -- the cases ------------------------------------------------------------------------------------
def data_case(name: str, damage: Callable[[Path], None], command: str = "info", expect: int = 2,
              needs_root: bool = False) -> Case:
    def run() -> Outcome:
        d = copy_data(slug(name))
        damage(d)
        if command == "info":
            return (as_nobody if needs_root else cli)("info", "--data", str(d))
        return cli("extract", "--data", d, "--subject", "1", *EXTRACT)
    return Case(name, expect, run, needs_root)


def chmod000(rel: str) -> Callable[[Path], None]:
    return lambda d: (d / rel).chmod(0o000)


def symlink_loop(d: Path) -> None:
    f = fmri(d)
    f.unlink()
    f.symlink_to(f)


def evil_mapping(d: Path) -> None:
    path = d / "subj01" / "roi_masks" / "mapping_floc-faces.npy"
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": ()})
    replace(path, buf.getvalue() + pickle.dumps(Evil(), protocol=2))


def cache_damage(kind: str, damage: Callable[[Path], None], variant: int) -> Case:
    """Run extract once, damage every ``kind`` entry, run again (pixels: for features not cached yet, so that
    the pixels are needed): it must go on, rebuild the entry and leave whole entries."""
    def run() -> Outcome:
        first = cli("extract", "--data", BASE, "--subject", "1", *EXTRACT)
        if first.rc != 0:
            return Outcome(first.rc, first.err, first.seconds, False, "first run failed")
        for e in entries(kind):  # features: only the entry this case uses (others stay as earlier cases left them)
            if kind == "images" or "-features.2-pca10-" in e.name:
                damage(e)
        again = [*EXTRACT, "--n-components", str(10 + variant)] if kind == "images" else EXTRACT
        out = cli("extract", "--data", BASE, "--subject", "1", *again)
        out.ok = "damaged cache entry" in out.err
        out.note = "repaired" if out.ok else "no repair reported"
        return out
    return Case(f"damaged {kind} cache: {damage.__doc__}", 0, run)


def truncate_all(e: Path) -> None:
    """truncated .npy"""
    for f in e.glob("*.npy"):
        with open(f, "r+b") as fh:
            fh.truncate(os.path.getsize(f) // 2)


def garbage_meta(e: Path) -> None:
    """meta.json garbage"""
    (e / "meta.json").write_text("{not json")


def pipeline_out(name: str) -> Path:
    return WORK / "outs" / name / "out"


def out_case(name: str, prepare: Callable[[Path], None], extra: tuple = (), expect: int = 2,
             check: Callable[[Path], bool] | None = None) -> Case:
    def run() -> Outcome:
        out = pipeline_out(slug(name))
        out.parent.mkdir(parents=True)
        prepare(out)
        before = snapshot(out)
        o = cli("pipeline", "--data", BASE, "--subjects", "1", "--out", out, *PIPELINE, *extra)
        o.ok = check(out) if check else snapshot(out) == before
        return o
    return Case(name, expect, run)


def snapshot(path: Path) -> dict:
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()} if path.is_dir() else {}


def earlier_results(out: Path) -> None:
    out.mkdir()
    (out / "metrics.json").write_text('{"earlier": true}')
    (out / "submission.zip").write_bytes(b"earlier")


def killed_pipeline() -> Outcome:
    out = pipeline_out("killed")
    out.parent.mkdir(parents=True)
    argv = [sys.executable, "-m", "core", "pipeline", "--data", str(BASE), "--subjects", "1", "--out", str(out),
            *PIPELINE, "--seed", "3"]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t_end = time.time() + 120
    while time.time() < t_end and not list(out.parent.glob(".out.pipeline-*/*")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = list(out.parent.glob(".out.pipeline-*"))
    o = cli("pipeline", "--data", BASE, "--subjects", "1", "--out", out, *PIPELINE, "--seed", "3")
    o.ok = bool(left) and not list(out.parent.glob(".out.pipeline-*")) and (out / "metrics.json").is_file()
    o.note = f"killed run left {len(left)} work folder(s); the next run removed them" if o.ok else "not cleaned"
    return o


def killed_extract() -> Outcome:
    cache = CACHE
    argv = [sys.executable, "-m", "core", "extract", "--data", str(BASE), "--subject", "1", *EXTRACT,
            "--resolution", "48"]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t_end = time.time() + 120
    while time.time() < t_end and not list(cache.glob("*/.tmp-*")):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = list(cache.glob("*/.tmp-*"))
    o = cli("extract", "--data", BASE, "--subject", "1", *EXTRACT, "--resolution", "48")
    o.ok = bool(left) and not list(cache.glob("*/.tmp-*"))
    o.note = f"killed run left {len(left)} staging folder(s); the next run removed them" if o.ok else "not cleaned"
    return o


def killed_worker() -> Outcome:
    code = f"""
import os, signal, time
from core.algonauts2023.pipeline import EncodingConfig
from core.runs import workers
from core.runs.store import RunStore
store = RunStore({str(WORK / 'ws')!r})
cfg = EncodingConfig(data={str(BASE)!r}, subjects=[1], model="mobilenet_v2", layers=["features.2"], resolution=32,
                     n_components=10, device="cpu", seed=5).to_dict()
run = workers.launch(store, "fit", cfg)
while store.get(run.id).status == "queued":
    time.sleep(0.05)
os.kill(store.get(run.id).pid, signal.SIGKILL)
time.sleep(0.5)
status = workers.get_run(store, run.id).status
print("status", status, file=__import__("sys").stderr)
assert status == "failed", status
"""
    o = snippet(code)
    o.ok = "status failed" in o.err
    o.err = "\n".join(line for line in o.err.splitlines() if not line.startswith("status"))
    o.note = "the run store marked the killed run failed" if o.ok else "killed run not marked failed"
    return o


def concurrent_pipelines() -> Outcome:
    outs = [pipeline_out(f"concurrent-{i}") for i in range(2)]
    procs = []
    t0 = time.perf_counter()
    for out in outs:
        out.parent.mkdir(parents=True)
        procs.append(subprocess.Popen([sys.executable, "-m", "core", "pipeline", "--data", str(BASE), "--subjects", "1",
                                       "--out", str(out), *PIPELINE, "--resolution", "40"], cwd=ROOT, env=env(),
                                      stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True))
    errs = [p.communicate()[1] for p in procs]
    rc = max(p.returncode for p in procs)
    metrics = [json.loads((o / "metrics.json").read_text()) for o in outs if (o / "metrics.json").is_file()]
    same = len(metrics) == 2 and metrics[0]["subj01"] == metrics[1]["subj01"]
    return Outcome(rc, "\n".join(errs), time.perf_counter() - t0, same,
                   "two runs sharing one cache agree" if same else "results differ")


def small_disk(size: str) -> Path | None:
    mnt = WORK / f"disk-{size}"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        return None
    MOUNTS.append(mnt)
    return mnt


def full_out_disk() -> Outcome:
    mnt = small_disk("64k")
    o = cli("pipeline", "--data", BASE, "--subjects", "1", "--out", mnt / "out", *PIPELINE)
    o.ok = not any(mnt.iterdir())
    return o


def full_cache_disk() -> Outcome:
    mnt = small_disk("1300k")
    o = cli("extract", "--data", BASE, "--subject", "1", *EXTRACT, "--resolution", "64", BES_CACHE_DIR=str(mnt))
    o.ok = not any(LEFTOVER.search(p.name) for p in mnt.rglob("*"))
    return o


def weights_case(name: str, content: Callable[[], bytes]) -> Case:
    def run() -> Outcome:
        path = WORK / "weights" / f"{slug(name)}.pt"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(content())
        o = cli("extract", "--data", BASE, "--subject", "1", *EXTRACT, "--model", "mobilenet_v2", "--weights", path)
        o.ok = not MARKER.exists()
        return o
    return Case(f"weights: {name}", 2, run)


def torch_bytes(obj, cut: int | None = None) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()[:cut] if cut else buf.getvalue()


def submission_case(name: str, entries_of: Callable[[dict], dict], expect: int = 2) -> Case:
    def run() -> Outcome:
        from core.algonauts2023.dataset import open_dataset

        subj = open_dataset(BASE).subject(1)
        good = {f"subj01/{h}_pred_test.npy": npy_bytes(np.zeros((subj.n_test, subj.n_vertices[h]), np.float32))
                for h in ("lh", "rh")}
        path = WORK / "zips" / f"{slug(name)}.zip"
        path.parent.mkdir(exist_ok=True)
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for n, data in entries_of(good).items():
                zf.writestr(n, data)
        o = snippet(f"""
from core.algonauts2023.dataset import open_dataset
from core.algonauts2023.submission import validate_submission
validate_submission({str(path)!r}, open_dataset({str(BASE)!r}), [1])
""")
        o.ok = not (WORK / "evil.npy").exists()
        return o
    return Case(f"2023 zip: {name}", expect, run)


def header(shape, descr="<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def zip2021_case(name: str, payload: Callable[[], bytes]) -> Case:
    def run() -> Outcome:
        path = WORK / "zips" / f"2021-{slug(name)}.zip"
        path.parent.mkdir(exist_ok=True)
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("mini_track.pkl", payload())
        o = snippet(f"""
from core.algonauts2021.dataset import open_dataset2021
from core.algonauts2021.submission import validate_submission2021
validate_submission2021({str(path)!r}, open_dataset2021({str(BASE21)!r}))
""")
        o.ok = not MARKER.exists()
        return o
    return Case(f"2021 zip: {name}", 2, run)


def roi_pickle_case(name: str, obj, raw: bytes | None = None) -> Case:
    def run() -> Outcome:
        d = copy_data(f"2021-{slug(name)}", BASE21)
        target = next((d / "participants_data_v2021" / "mini_track").glob("sub01/V1.pkl"))
        replace(target, raw if raw is not None else pickle.dumps(obj))
        o = cli("info", "--data", d)
        o.ok = not MARKER.exists()
        return o
    return Case(f"2021 ROI file: {name}", 2, run)


def browsable_case() -> Outcome:
    o = snippet(f"""
from core.util.paths import check_browsable
msgs = set()
for p in ("/etc", "/no/such/folder", {str(WORK / 'data')!r}):
    try:
        check_browsable(p)
    except UserError as e:
        msgs.add(str(e).replace(p, "PATH", 1))
assert len(msgs) == 1, msgs
raise UserError(msgs.pop())
""", BES_DATA_ROOTS=str(WORK / "allowed"))
    o.ok = "PATH: outside the folders" in o.err
    o.note = "same words for an existing and a missing path"
    return o


def build_cases() -> list[Case]:
    F = "subj01/training_split/training_fmri/lh_training_fmri.npy"
    return [
        # fMRI arrays and ROI files
        data_case("fMRI truncated", lambda d: replace(fmri(d), fmri(d).read_bytes()[:5000])),
        data_case("fMRI with NaN", lambda d: save_replacing(fmri(d), np.full((80, 5), np.nan, np.float32))),
        data_case("fMRI of dtype int32", lambda d: save_replacing(fmri(d), np.zeros((80, 5), np.int32))),
        data_case("fMRI with too few rows", lambda d: save_replacing(fmri(d), np.zeros((79, 5), np.float32))),
        data_case("fMRI pickled object array", lambda d: replace(fmri(d), npy_bytes(np.array([Evil()], object)))),
        data_case("fMRI header declaring 7 PiB", lambda d: replace(fmri(d), header((2**47, 80)) + b"\0" * 64)),
        data_case("fMRI symlink loop", symlink_loop),
        data_case("fMRI missing", lambda d: fmri(d).unlink()),
        data_case("ROI mask truncated", lambda d: replace(d / "subj01/roi_masks/lh.all-vertices_fsaverage_space.npy",
                                                          b"\x93NUMPY\x01\x00v\x00{'descr'")),
        data_case("ROI mapping: malicious pickle", evil_mapping),
        data_case("ROI mapping: not a dict", lambda d: save_replacing(d / "subj01/roi_masks/mapping_floc-faces.npy",
                                                                       np.array([1, 2]))),
        data_case("training_images unreadable (nobody)", chmod000("subj01/training_split/training_images"),
                  needs_root=True),
        data_case("roi_masks unreadable (nobody)", chmod000("subj01/roi_masks"), needs_root=True),
        data_case("fMRI file unreadable (nobody)", chmod000(F), needs_root=True),
        data_case("data dir is a file", lambda d: (shutil.rmtree(d), d.write_text("x"))),
        data_case("no subject folders", lambda d: [shutil.rmtree(p) for p in d.glob("subj*")]),
        # images
        data_case("PNG truncated", lambda d: replace(first_image(d), first_image(d).read_bytes()[:3000]), "extract"),
        data_case("PNG is text", lambda d: replace(first_image(d), b"hello" * 100), "extract"),
        data_case("PNG bomb 30000x30000", lambda d: replace(first_image(d), png_claiming(30000, 30000)), "extract"),
        Case("BES_MAX_IMAGE_PIXELS=lots", 2, lambda: cli("extract", "--data", BASE, "--subject", "1", *EXTRACT,
                                                         BES_MAX_IMAGE_PIXELS="lots")),
        # caches
        cache_damage("images", truncate_all, 1),
        cache_damage("images", garbage_meta, 2),
        cache_damage("features", truncate_all, 3),
        cache_damage("features", garbage_meta, 4),
        Case("damaged frames + fMRI-2021 caches", 0, damaged_video_caches),
        # processes
        Case("killed pipeline (SIGKILL), then rerun", 0, killed_pipeline),
        Case("killed extract (SIGKILL), then rerun", 0, killed_extract),
        Case("killed worker process", 0, killed_worker),
        Case("two pipelines at once, one cache", 0, concurrent_pipelines),
        # --out
        out_case("--out holds earlier results", earlier_results),
        out_case("--out holds earlier results, --force", earlier_results, ("--force",), 0,
                 lambda o: json.loads((o / "metrics.json").read_text()).get("earlier") is None),
        out_case("--out is a file", lambda o: o.write_text("x")),
        Case("--out on a full disk (64 kB)", 2, full_out_disk, needs_root=True),
        Case("cache on a full disk (1.3 MB)", 2, full_cache_disk, needs_root=True),
        # weights
        weights_case("truncated .pt", lambda: torch_bytes({"a": np.zeros(3)}, 200)),
        weights_case("text file", lambda: b"not weights\n" * 20),
        weights_case("malicious pickle", lambda: pickle.dumps({"w": Evil()}, protocol=2)),
        weights_case("state dict of another model", lambda: torch_bytes({"fc.weight": __import__("torch").zeros(2)})),
        # submissions
        submission_case("valid", lambda g: g, 0),
        submission_case("header declares 7 PiB", lambda g: {**g, "subj01/lh_pred_test.npy": header((2**48, 9)) + b"0"}),
        submission_case("zip bomb (valid header, 50 MB padding)", lambda g: {
            **g, "subj01/lh_pred_test.npy": g["subj01/lh_pred_test.npy"] + b"\0" * (50 << 20)}),
        submission_case("path traversal", lambda g: {**g, "../evil.npy": b"x"}),
        submission_case("wrong dtype", lambda g: {**g, "subj01/lh_pred_test.npy": header((10, 1), "<f8")}),
        submission_case("NaN predictions", lambda g: {**g, "subj01/rh_pred_test.npy": npy_bytes(
            np.full(np.load(io.BytesIO(g["subj01/rh_pred_test.npy"])).shape, np.nan, np.float32))}),
        submission_case("pickled object array", lambda g: {**g, "subj01/lh_pred_test.npy": npy_bytes(
            np.array([Evil()], object))}),
        Case("2023 zip: not a zip", 2, lambda: snippet(f"""
from core.algonauts2023.dataset import open_dataset
from core.algonauts2023.submission import validate_submission
open({str(WORK / 'nozip.zip')!r}, 'wb').write(b'PK' + bytes(100))
validate_submission({str(WORK / 'nozip.zip')!r}, open_dataset({str(BASE)!r}), [1])
""")),
        zip2021_case("malicious pickle", lambda: pickle.dumps({"V1": {"sub01": Evil()}}, protocol=2)),
        zip2021_case("zip bomb (100 MB)", lambda: b"\0" * (100 << 20)),
        zip2021_case("truncated pickle", lambda: pickle.dumps({"V1": {"sub01": np.zeros(3)}})[:20]),
        roi_pickle_case("malicious pickle", {"train": Evil()}),
        roi_pickle_case("truncated pickle", None, pickle.dumps({"train": np.zeros((10, 2, 3))})[:50]),
        roi_pickle_case("NaN responses", {"train": np.full((10, 2, 3), np.nan)}),
        roi_pickle_case("int responses", {"train": np.zeros((10, 2, 3), int)}),
        # the dashboard's data directory
        Case("browser data dir outside BES_DATA_ROOTS", 2, browsable_case),
    ]


def damaged_video_caches() -> Outcome:
    code = f"""
from core.algonauts2021.dataset import open_dataset2021
from core.features.video import build_frame_cache
ds = open_dataset2021({str(BASE21)!r})
build_frame_cache(ds.train_videos, 2, 32)
"""
    first = snippet(code)
    for kind in ("frames", "fmri2021"):
        for e in entries(kind):
            truncate_all(e)
    o = snippet(code)
    o.seconds += first.seconds
    o.ok = first.rc == 0 and o.err.count("damaged cache entry") >= 2
    o.note = "both rebuilt" if o.ok else f"repairs reported: {o.err.count('damaged cache entry')}"
    return o


MOUNTS: list[Path] = []
BASE = WORK / "base"
BASE21 = WORK / "base2021"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", help="run only cases whose name holds one of these texts")
    parser.add_argument("--keep", action="store_true", help=f"keep the work folder ({WORK})")
    args = parser.parse_args()
    WORK.chmod(0o755)
    from core.algonauts2021.demo import DemoConfig, generate_demo2021
    from core.algonauts2023.demo import generate_demo

    t0 = time.perf_counter()
    generate_demo(BASE, subjects=(1,), n_train=80, n_test=10, seed=0)
    generate_demo2021(BASE21, DemoConfig(subjects=(1,), n_train=10, n_test=2, n_reps=2, size=32, fps=5, seconds=1.0))
    for d, _dirs, files in os.walk(WORK):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    print(f"work folder {WORK}; demos ready in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    try:
        for case in build_cases():
            if args.only and not any(text in case.name for text in args.only):
                continue
            if case.needs_root and os.geteuid() != 0:
                rows.append((case.name, case.expect, "-", "-", "-", "-", "-", "skipped (needs root)", 0.0, ""))
                continue
            MARKER.unlink(missing_ok=True)
            try:
                o = case.run()
            except Exception as exc:  # the catalogue's own failure: shown, not hidden
                import traceback as tb

                o = Outcome(-1, f"catalogue error: {type(exc).__name__}: {exc}\n{tb.format_exc()}", 0.0, False)
            errors = [line for line in o.err.splitlines() if line.startswith("error:")]
            traceback = "Traceback" in o.err
            one_line = o.rc != 2 or (len(errors) == 1 and o.err.rstrip().splitlines()[-1] == errors[0])
            left = leftovers()
            broken = broken_cache_entries()
            held = (o.rc == case.expect and not traceback and one_line and not left and not broken and o.ok
                    and not MARKER.exists())
            message = errors[0][7:] if errors else o.note
            message = message.replace(str(WORK), "<work>")
            rows.append((case.name, case.expect, o.rc, "yes" if one_line else "NO", "yes" if traceback else "no",
                         ", ".join(left[:2]) or "none", ", ".join(broken[:2]) or "whole",
                         "held" if held else "FAILED", o.seconds, message[:150]))
            print(f"{rows[-1][7]:6} {case.name} ({o.seconds:.1f} s)", flush=True)
            if not held:
                print("    " + o.err.strip().replace("\n", "\n    ")[-3000:], flush=True)
            for p in left:  # do not let one case's leftovers fail the next
                shutil.rmtree(WORK / p, ignore_errors=True)
    finally:
        for mnt in MOUNTS:
            subprocess.run(["umount", "-l", str(mnt)], check=False)
        if not args.keep:
            for d, _dirs, _files in os.walk(WORK):
                os.chmod(d, 0o755)
            shutil.rmtree(WORK, ignore_errors=True)
    print()
    print("| case | expected rc | rc | one line | traceback | left behind | caches | verdict | s | what the user saw |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(f"{v:.1f}" if isinstance(v, float) else str(v).replace("|", "/") for v in r) + " |")
    held = sum(r[7] == "held" for r in rows)
    print(f"\n{held} of {len(rows)} cases held")
    return 0 if held == len([r for r in rows if r[7] != "skipped (needs root)"]) else 1


if __name__ == "__main__":
    sys.exit(main())
