"""The embedded video demo: a synthetic Algonauts 2021 look-alike with real structure.

``generate_demo2021(out)`` writes the organisers' layout (see :mod:`core.algonauts2021.dataset`)::

    OUT/AlgonautsVideos268_All_30fpsmax/0001_demo-xxxxxx.mp4 ...   train clips first, then test
    OUT/participants_data_v2021/mini_track/subXX/<ROI>.pkl          {"train": (n_train, reps, voxels)}
    OUT/participants_data_v2021/full_track/subXX/WB.pkl             {"train": ..., "voxel_mask": (78, 93, 71)}
    OUT/demo_metadata/                                              the simulation's ground truth
    OUT/DEMO_README.txt                                             marker

with ``n_train + n_test`` clips: the reader's rule "the last clips beyond the ``train`` rows are
test" picks the test clips, as it does for the real 1,000 + 102. ``ensure_demo2021()`` generates
it once into ``core.util.paths.cache_dir() / "demo2021"``. Same parameters -> byte-identical files.

What is simulated:

* **Clips.** ``seconds`` at ``fps`` (H.264 ``.mp4``, ``size`` x ``size``): the 2023 demo's
  backgrounds (scenes and rooms count as *places*) and 0-3 of its faces, bodies, words and
  objects, each drawn once as a sprite and moved along a straight path (some stand still).
* **Brain.** Voxels are grey-matter voxels (nilearn's bundled MNI152 grey-matter mask) of
  occipital and posterior temporal / parietal cortex in the real 78 x 93 x 71 grid and affine
  (``core.viz.volumes.AFFINE_2021``); the anterior and upper cuts vary per subject. V1-V3 are
  bands around the calcarine, V4, LOC, EBA, FFA, PPA and the posterior STS are balls around
  literature MNI coordinates (jittered per subject); ROIs are disjoint, the rest of the
  volume is "REST" (whole-brain track only).
* **Responses.** V1-V4 voxels: a Gaussian pRF (retinotopic: contralateral field, dorsal = lower
  field, eccentricity growing anteriorly) over the clip's mean local contrast energy and its
  motion energy (mean absolute frame difference), with a compressive exponent. FFA / EBA /
  PPA: selectivity for faces / bodies / places with the 2023 demo's cross-talk; LOC: objects
  of every kind; STS: moving faces and bodies. REST: a weak random mixture. Every voxel has
  an SNR; each of ``n_reps`` repetitions is ``snr * signal + N(0, 1)``, so the split-half
  reliability across repetitions estimates the known noise ceiling
  ``100 * snr^2 / (snr^2 + 1 / n_reps)`` (written to ``demo_metadata``).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from core.algonauts2023 import demo
from core.util.atomicdir import staging_dir
from core.algonauts2021.dataset import FMRI_DIR, MINI_ROIS, VIDEO_DIR, VOLUME_SHAPE
from core.util.errors import UserError
from core.util.fileio import write_text
from core.util.progress import Progress, report
from core.features.video import write_video
from core.viz.volumes import AFFINE_2021

GENERATOR_VERSION = 1
MARKER = "DEMO_README.txt"
REST = "REST"  # whole-brain voxels in none of the mini-track ROIs
GRID = 24  # resolution of the low-level energy maps
PICKLE_PROTOCOL = 4  # numpy arrays pickle through numpy's _reconstruct (what core.util.safe_pickle accepts)

# Ball ROIs: left-hemisphere MNI centre (mm), radius (mm); the right hemisphere mirrors x.
_BALLS = {
    "V4": ((-30, -78, -14), 8.0),
    "LOC": ((-42, -80, -2), 9.0),
    "EBA": ((-48, -70, 6), 7.5),
    "FFA": ((-40, -54, -18), 7.0),
    "PPA": ((-26, -46, -8), 7.5),
    "STS": ((-52, -48, 10), 8.5),
}
_EV_BANDS = (("V1", 7.0), ("V2", 12.0), ("V3", 17.0))  # outer radius (mm) around the calcarine axis
_CALCARINE = (10.0, 2.0, -106.0, -68.0)  # |x|, z of the axis; its y range (posterior .. anterior)
_PRF = {"V1": (0.06, 0.12), "V2": (0.09, 0.18), "V3": (0.12, 0.26), "V4": (0.35, 0.3)}  # sigma = a + b * ecc
# pRF drive: (contrast weight, motion weight, compressive exponent)
_LOWLEVEL = {"V1": (1.0, 0.5, 0.8), "V2": (1.0, 0.7, 0.7), "V3": (0.8, 1.0, 0.6), "V4": (0.7, 0.6, 0.5)}
# What the category ROIs answer to: rows over (face, body, place, word, object) and biological motion.
_SELECTIVITY = {
    "FFA": (demo._CROSSTALK["face"], 0.2),
    "EBA": (demo._CROSSTALK["body"], 0.3),
    "PPA": (demo._CROSSTALK["place"], 0.0),
    "LOC": ({"object": 1.0, "face": 0.6, "body": 0.6, "word": 0.6}, 0.1),
    "STS": ({"face": 0.3, "body": 0.3}, 1.0),
}


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoConfig:
    """What to generate (all deterministic from ``seed``)."""

    subjects: tuple[int, ...] = (1, 2, 3)
    n_train: int = 120
    n_test: int = 12
    n_reps: int = 3
    size: int = 128
    fps: int = 15
    seconds: float = 1.0
    seed: int = 0

    @property
    def n_frames(self) -> int:
        return int(round(self.fps * self.seconds))

    def checked(self) -> "DemoConfig":
        """This config with its values validated (``UserError`` with one line if wrong)."""
        try:
            subjects = tuple(int(s) for s in self.subjects)
            ints = [int(getattr(self, k)) for k in ("n_train", "n_test", "n_reps", "size", "fps", "seed")]
            seconds = float(self.seconds)
        except (TypeError, ValueError):
            raise UserError("demo2021: subjects, counts, repetitions, size, fps and seed must be integers") from None
        n_train, n_test, n_reps, size, fps, seed = ints
        if not subjects or any(not 1 <= s <= 99 for s in subjects) or len(set(subjects)) != len(subjects):
            raise UserError(f"demo2021: subjects must be distinct numbers 1..99, got {list(subjects)}")
        if n_train < 10 or n_test < 1:
            raise UserError(f"demo2021: need at least 10 training and 1 test clip (got {n_train} and {n_test})")
        if n_train + n_test > 9999:
            raise UserError(f"demo2021: at most 9999 clips (got {n_train + n_test})")
        if n_reps < 2:
            raise UserError(f"demo2021: need at least 2 repetitions for a split-half noise ceiling (got {n_reps})")
        if not 32 <= size <= 512 or size % 2:
            raise UserError(f"demo2021: the frame size must be even and between 32 and 512 pixels (got {size})")
        if not 1 <= fps <= 60 or not 2 <= round(fps * seconds) <= 600:
            raise UserError(f"demo2021: need 1-60 fps and 2-600 frames per clip (got {fps} fps x {seconds:g} s)")
        if seed < 0:
            raise UserError(f"demo2021: seed must be >= 0 (got {seed})")
        return DemoConfig(subjects, n_train, n_test, n_reps, size, fps, seconds, seed)


def generate_demo2021(out: str | os.PathLike, config: DemoConfig = DemoConfig(),
                      progress: Optional[Progress] = None) -> Path:
    """Write the video demo to ``out`` (new or empty directory); returns ``out``.

    Everything is written into a staging folder renamed onto ``out`` at the end, so an
    interrupted run leaves no half dataset.
    """
    cfg = config.checked()
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: already exists and is not empty; choose a new directory")
    with staging_dir(out) as tmp:
        _generate_into(tmp, cfg, progress)
    report(progress, 1.0, "video demo ready")
    return out


def ensure_demo2021(path: Optional[Path] = None, config: DemoConfig = DemoConfig(),
                    progress: Optional[Progress] = None) -> Path:
    """The video demo at ``path`` (default ``core.util.paths.demo2021_dir()``), generated once if absent (or outdated)."""
    if path is None:
        from core.util.paths import demo2021_dir

        path = demo2021_dir()
    path = Path(path).expanduser()
    if is_demo2021(path):
        return path
    if (path / MARKER).is_file():  # a demo of an older generator version: replaced
        shutil.rmtree(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UserError(f"{path}: exists but is not a video demo (no {MARKER}); move it away to regenerate")
    generate_demo2021(path, config, progress)
    return path


def is_demo2021(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a complete video demo of this generator version."""
    try:
        text = (Path(path) / MARKER).read_text(encoding="utf-8")
    except OSError:
        return False
    return f"video_generator_version: {GENERATOR_VERSION}\n" in text


def video_name(index: int, seed: int) -> str:
    """File name of clip ``index`` (0-based): numbered from 0001 so that sorting keeps the order."""
    tag = hashlib.sha256(f"{seed}:{index}".encode()).hexdigest()[:10]
    return f"{index + 1:04d}_demo-{tag}.mp4"


# ---------------------------------------------------------------------------------------------
# Clips
# ---------------------------------------------------------------------------------------------
@dataclass
class ClipInfo:
    """What a clip shows (boxes at mid-clip in the 2023 demo's 425-pixel units) and its energies."""

    index: int
    image: demo.ImageInfo  # background and objects at mid-clip: category drives
    speeds: list[float]  # per object: path length over the clip, in image widths
    contrast: np.ndarray  # (GRID, GRID) mean local contrast energy
    motion: np.ndarray  # (GRID, GRID) mean absolute frame difference

    def drives(self) -> np.ndarray:
        return self.image.drives()

    def biological_motion(self) -> float:
        """How much moving face and body there is (size x speed)."""
        s = float(demo.IMAGE_SIZE)
        return float(sum(np.sqrt((o["x1"] - o["x0"]) * (o["y1"] - o["y0"])) / s * v
                         for o, v in zip(self.image.objects, self.speeds) if o["category"] in ("face", "body")))


_DRAW = {"face": demo._draw_face, "body": demo._draw_body, "word": demo._draw_word, "object": demo._draw_object}


def render_clip(index: int, cfg: DemoConfig) -> tuple[np.ndarray, ClipInfo]:
    """Frames (T, size, size, 3) uint8 of clip ``index`` and what it shows."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng([cfg.seed, 501, index])
    S, T, f = demo.IMAGE_SIZE, cfg.n_frames, cfg.size / demo.IMAGE_SIZE
    kind = str(rng.choice(["scene", "room", "texture", "gradient"], p=[0.3, 0.15, 0.3, 0.25]))
    background = demo._background(rng, kind)
    if kind == "scene":
        demo._draw_scene(ImageDraw.Draw(background), rng)
    elif kind == "room":
        demo._draw_room(ImageDraw.Draw(background), rng)
    background = background.resize((cfg.size, cfg.size), Image.BOX)
    sprites, objects, speeds = [], [], []
    for _ in range(int(rng.choice(4, p=[0.1, 0.45, 0.3, 0.15]))):
        category = str(rng.choice(["face", "body", "word", "object"], p=[0.3, 0.3, 0.15, 0.25]))
        canvas = Image.new("RGBA", (S, S), (0, 0, 0, 0))
        x0, y0, x1, y1 = (float(np.clip(v, 0, S)) for v in _DRAW[category](ImageDraw.Draw(canvas), rng))
        if x1 - x0 < 4 or y1 - y0 < 4:
            continue
        box = tuple(int(round(v)) for v in (x0, y0, x1, y1))
        w, h = max(2, round((box[2] - box[0]) * f)), max(2, round((box[3] - box[1]) * f))
        sprite = canvas.crop(box).resize((w, h), Image.BOX)
        start = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
        still = rng.random() < 0.25
        step = np.zeros(2) if still else rng.uniform(0.15, 0.6) * S * _unit(rng.uniform(0, 2 * np.pi))
        end = np.clip(start + step, 0, S)
        path = start[None, :] + np.linspace(0, 1, T)[:, None] * (end - start)[None, :]  # centres, 425 units
        sprites.append((sprite, path))
        mid = path[T // 2]
        half = np.array([x1 - x0, y1 - y0]) / 2
        lo, hi = np.clip(mid - half, 0, S), np.clip(mid + half, 0, S)
        objects.append({"category": category, "x0": int(lo[0]), "y0": int(lo[1]), "x1": int(hi[0]), "y1": int(hi[1])})
        speeds.append(float(np.linalg.norm(end - start) / S))
    frames = np.empty((T, cfg.size, cfg.size, 3), dtype=np.uint8)
    for t in range(T):
        frame = background.copy()
        for sprite, path in sprites:
            cx, cy = path[t] * f
            frame.paste(sprite, (int(round(cx - sprite.width / 2)), int(round(cy - sprite.height / 2))), sprite)
        frames[t] = np.asarray(frame)
    info = demo.ImageInfo(nsd_id=index, background=kind, objects=objects)
    contrast, motion = energy_maps(frames)
    return frames, ClipInfo(index, info, speeds, contrast, motion)


def _unit(angle: float) -> np.ndarray:
    return np.array([np.cos(angle), np.sin(angle)])


def energy_maps(frames: np.ndarray, grid: int = GRID) -> tuple[np.ndarray, np.ndarray]:
    """Mean local contrast energy (the 2023 demo's map) and mean motion energy, each (grid, grid)."""
    from PIL import Image

    contrast = np.mean([demo.local_contrast_map(Image.fromarray(f), grid) for f in frames], axis=0)
    gray = np.stack([np.asarray(Image.fromarray(f).convert("L").resize((2 * grid, 2 * grid), Image.BOX),
                                dtype=np.float32) / 255.0 for f in frames])
    diff = np.abs(np.diff(gray, axis=0)).mean(axis=0)
    return contrast.astype(np.float32), diff.reshape(grid, 2, grid, 2).mean(axis=(1, 3)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Brain model
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _grey_matter() -> np.ndarray:
    """nilearn's bundled MNI152 grey-matter mask sampled (nearest) at the 2021 grid's voxel centres."""
    from nilearn import datasets

    gm = datasets.load_mni152_gm_mask(resolution=2)
    src = np.asarray(gm.dataobj) > 0
    ijk = np.rint((_voxel_centres() - gm.affine[:3, 3]) @ np.linalg.inv(gm.affine[:3, :3]).T).astype(np.int64)
    inside = np.all((ijk >= 0) & (ijk < np.array(src.shape)), axis=1)
    out = np.zeros(ijk.shape[0], dtype=bool)
    out[inside] = src[tuple(ijk[inside].T)]
    return out.reshape(VOLUME_SHAPE)


@functools.lru_cache(maxsize=1)
def _voxel_centres() -> np.ndarray:
    """MNI coordinates (mm) of every voxel of the grid, C order, (n, 3)."""
    ijk = np.indices(VOLUME_SHAPE).reshape(3, -1).T.astype(np.float64)
    return ijk @ AFFINE_2021[:3, :3].T + AFFINE_2021[:3, 3]


@dataclass
class VolumeModel:
    """Ground truth of one subject: which voxels, their ROI and their tuning (WB voxel order)."""

    subject: int
    mask: np.ndarray  # (78, 93, 71) bool
    xyz: np.ndarray  # (n, 3) MNI mm
    roi: np.ndarray  # (n,) ROI name or "REST"
    rf_x: np.ndarray  # pRF centre, image units (-1 left .. 1 right)
    rf_y: np.ndarray  # (-1 top .. 1 bottom)
    rf_sigma: np.ndarray
    contrast_weight: np.ndarray  # pRF drive = contrast_weight * contrast + motion_weight * motion
    motion_weight: np.ndarray
    exponent: np.ndarray
    lowlevel_weight: np.ndarray
    category_weights: np.ndarray  # (n, len(demo.CATEGORIES))
    biomotion_weight: np.ndarray
    snr: np.ndarray

    @property
    def n_voxels(self) -> int:
        return int(self.roi.shape[0])

    def roi_indices(self, roi: str) -> np.ndarray:
        return np.flatnonzero(self.roi == roi)

    def noise_ceiling(self, n_reps: int) -> np.ndarray:
        return demo.noise_ceiling(self.snr, n_reps)


def build_volume_model(subject: int, seed: int) -> VolumeModel:
    """The brain of one subject (deterministic from ``seed`` and ``subject``)."""
    rng = np.random.default_rng([seed, 601, subject])
    xyz_all = _voxel_centres()
    front, top = -40 + rng.uniform(-3, 3), 30 + rng.uniform(-3, 3)  # subject-specific cuts (mm)
    keep = _grey_matter().ravel() & (xyz_all[:, 1] < front) & (xyz_all[:, 2] < top)
    mask = keep.reshape(VOLUME_SHAPE)
    xyz = xyz_all[keep]
    n = xyz.shape[0]
    ax, az, y_post, y_ant = _CALCARINE
    ax, az = ax + rng.normal(0, 1.0), az + rng.normal(0, 1.5)
    lateral = np.abs(xyz[:, 0]) - ax
    above = xyz[:, 2] - az
    axis_dist = np.hypot(lateral, above)
    along = (xyz[:, 1] - y_post) / (y_ant - y_post)  # 0 at the pole .. 1 anterior end
    roi = np.full(n, REST, dtype=object)
    scale = rng.uniform(0.9, 1.1)
    ev = (along > -0.1) & (along < 1.0)
    for name, radius in reversed(_EV_BANDS):
        roi[ev & (axis_dist < radius * scale)] = name
    best = np.full(n, np.inf)
    for name, (centre, radius) in _BALLS.items():
        for sign in (1.0, -1.0):
            c = np.array([sign * centre[0], centre[1], centre[2]]) + rng.normal(0, 2.5, 3)
            d = np.linalg.norm(xyz - c, axis=1) / (radius * rng.uniform(0.85, 1.15))
            take = (d < 1) & (d < best) & ~np.isin(roi, [b[0] for b in _EV_BANDS])
            roi[take] = name
            best[take] = d[take]

    # Retinotopy: left hemisphere sees the right field; dorsal bank = lower field.
    hemifield = np.where(xyz[:, 0] < 0, 1.0, -1.0)
    ecc = np.clip(0.05 + 1.1 * np.clip(along, 0, 1) ** 1.5, 0.05, 1.2)
    angle = np.arctan2(above, np.maximum(np.abs(lateral), 1.0))  # -pi/2 (ventral) .. pi/2 (dorsal)
    angle = np.clip(angle * rng.uniform(0.9, 1.1), -np.pi / 2, np.pi / 2)
    rf_x = hemifield * ecc * np.cos(angle)
    rf_y = ecc * np.sin(angle)
    a, b = np.array([_PRF.get(r, (0.6, 0.3)) for r in roi]).T
    rf_sigma = (a + b * ecc) * rng.lognormal(0, 0.1, n)
    is_v4 = roi == "V4"
    rf_x[is_v4] = hemifield[is_v4] * rng.uniform(0.05, 0.5, is_v4.sum())
    rf_y[is_v4] = rng.uniform(-0.5, 0.5, is_v4.sum())
    low = np.array([_LOWLEVEL.get(r, (0.6, 0.6, 0.4)) for r in roi])
    early = np.isin(roi, list(_LOWLEVEL))
    lowlevel_weight = np.where(early, 1.0, np.where(roi == REST, 0.3, 0.25))

    cats = demo.CATEGORIES
    category_weights = np.zeros((n, len(cats)))
    biomotion = np.zeros(n)
    for name, (row, bio) in _SELECTIVITY.items():
        sel = roi == name
        strength = rng.uniform(0.7, 1.0, sel.sum())
        for cat, w in row.items():
            category_weights[sel, cats.index(cat)] = w * strength
        biomotion[sel] = bio * strength
    rest = roi == REST
    category_weights[rest] = 0.3 * np.clip(rng.normal(0, 1, (rest.sum(), len(cats))), 0, None)
    biomotion[rest] = 0.2 * np.clip(rng.normal(0, 1, rest.sum()), 0, None)

    # SNR: high in early visual cortex, good in category ROIs, low in the rest; a few dead voxels.
    level = np.select([early, rest], [1.0, 0.25], default=0.8)
    snr = level * rng.lognormal(0, 0.3, n)
    snr[rng.random(n) < 0.03] *= 0.1
    return VolumeModel(
        subject=subject, mask=mask, xyz=xyz, roi=roi.astype(str), rf_x=rf_x, rf_y=rf_y, rf_sigma=rf_sigma,
        contrast_weight=low[:, 0], motion_weight=low[:, 1], exponent=low[:, 2], lowlevel_weight=lowlevel_weight,
        category_weights=category_weights, biomotion_weight=biomotion, snr=np.clip(snr, 0.0, 2.0),
    )


def simulate_signal(model: VolumeModel, clips: list[ClipInfo]) -> np.ndarray:
    """Noise-free responses (clips x voxels), each voxel scaled to unit variance."""
    z = demo._zscore
    w = demo.prf_weights(model.rf_x, model.rf_y, model.rf_sigma, GRID)  # (GRID^2, n)
    contrast = np.stack([c.contrast.ravel() for c in clips]) @ w
    motion = np.stack([c.motion.ravel() for c in clips]) @ w
    prf = model.contrast_weight * z(contrast.astype(np.float64)) + model.motion_weight * z(motion.astype(np.float64))
    prf = np.power(np.maximum(prf - prf.min(axis=0), 0), model.exponent)
    drives = z(np.stack([c.drives() for c in clips]))
    bio = z(np.array([[c.biological_motion()] for c in clips]))
    raw = model.lowlevel_weight * z(prf) + drives @ model.category_weights.T + bio * model.biomotion_weight
    return z(raw)


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------
def _generate_into(root: Path, cfg: DemoConfig, progress: Optional[Progress]) -> None:
    vdir = root / VIDEO_DIR
    vdir.mkdir()
    meta = root / "demo_metadata"
    meta.mkdir()
    n_clips = cfg.n_train + cfg.n_test
    clips: list[ClipInfo] = []
    for i in range(n_clips):
        frames, info = render_clip(i, cfg)
        write_video(vdir / video_name(i, cfg.seed), frames, cfg.fps)
        clips.append(info)
        report(progress, 0.8 * (i + 1) / n_clips, f"clips {i + 1}/{n_clips}")
    _write_clip_table(meta / "clips.csv", clips, cfg)
    for k, s in enumerate(cfg.subjects):
        report(progress, 0.8 + 0.2 * k / len(cfg.subjects), f"sub{s:02d}: simulating fMRI")
        model = build_volume_model(s, cfg.seed)
        signal = simulate_signal(model, clips[: cfg.n_train])
        rng = np.random.default_rng([cfg.seed, 701, s])
        noise = rng.standard_normal((cfg.n_train, cfg.n_reps, model.n_voxels))
        train = (model.snr * signal[:, None, :] + noise).astype(np.float32)
        name = f"sub{s:02d}"
        _write_pickle(root / FMRI_DIR / "full_track" / name / "WB.pkl",
                      {"train": train, "voxel_mask": model.mask.astype(np.uint8)})
        for roi in MINI_ROIS:
            idx = model.roi_indices(roi)
            _write_pickle(root / FMRI_DIR / "mini_track" / name / f"{roi}.pkl",
                          {"train": np.ascontiguousarray(train[:, :, idx])})
        _write_voxel_table(meta / f"{name}_voxels.csv", model, cfg.n_reps)
        write_text(meta / f"{name}_rois.json", json.dumps(
            {roi: model.roi_indices(roi).tolist() for roi in (*MINI_ROIS, REST)}) + "\n")
    _write_marker(root, cfg)


def _write_pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=PICKLE_PROTOCOL))


def _write_clip_table(path: Path, clips: list[ClipInfo], cfg: DemoConfig) -> None:
    cats = demo.CATEGORIES
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video", "split", "background", *[f"n_{c}" for c in cats], *[f"drive_{c}" for c in cats],
                    "biological_motion", "mean_contrast", "mean_motion"])
        for c in clips:
            w.writerow([video_name(c.index, cfg.seed), "train" if c.index < cfg.n_train else "test", c.image.background,
                        *[c.image.count(k) for k in cats], *(f"{v:.4f}" for v in c.drives()),
                        f"{c.biological_motion():.4f}", f"{c.contrast.mean():.5f}", f"{c.motion.mean():.5f}"])


def _write_voxel_table(path: Path, m: VolumeModel, n_reps: int) -> None:
    cols = {"wb_index": np.arange(m.n_voxels), "x": m.xyz[:, 0], "y": m.xyz[:, 1], "z": m.xyz[:, 2], "roi": m.roi,
            "rf_x": m.rf_x, "rf_y": m.rf_y, "rf_sigma": m.rf_sigma,
            **{f"w_{c}": m.category_weights[:, i] for i, c in enumerate(demo.CATEGORIES)},
            "w_biological_motion": m.biomotion_weight, "snr": m.snr, "noise_ceiling": m.noise_ceiling(n_reps)}
    text = [list(map("{:.5g}".format, v.tolist())) if v.dtype.kind == "f" else list(map(str, v.tolist()))
            for v in cols.values()]
    write_text(path, ",".join(cols) + "\n" + "".join(",".join(row) + "\n" for row in zip(*text)))


def _write_marker(root: Path, cfg: DemoConfig) -> None:
    write_text(
        root / MARKER,
        "Brain Encoding Studio video demo dataset (synthetic; not real fMRI data)\n"
        "\n"
        "Procedurally generated clips and simulated voxel responses in the Algonauts 2021 layout\n"
        f"({VIDEO_DIR}/, {FMRI_DIR}/{{mini_track,full_track}}/subXX/) with the simulation's\n"
        "ground truth in demo_metadata/. Voxels lie in MNI space in the challenge's 78 x 93 x 71 grid;\n"
        "ROIs are placed plausibly but are not any person's anatomy. Regenerate with:\n"
        "python -m core demo2021 --out DIR\n"
        "\n"
        f"video_generator_version: {GENERATOR_VERSION}\n"
        f"seed: {cfg.seed}\n"
        f"subjects: {' '.join(str(s) for s in cfg.subjects)}\n"
        f"n_train: {cfg.n_train}\n"
        f"n_test: {cfg.n_test}\n"
        f"n_reps: {cfg.n_reps}\n"
        f"clip: {cfg.size}x{cfg.size} px, {cfg.fps} fps, {cfg.n_frames} frames\n",
    )
