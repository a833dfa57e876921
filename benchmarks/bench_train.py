"""The trained multi-subject encoder vs the per-subject ridge pipeline, on the same trunk layers (CPU).

    python benchmarks/bench_train.py --data DIR --subjects 1 2 3      # a demo / real dataset
    python benchmarks/bench_train.py --work /tmp/bench_train           # generates what it needs there

Both run as ``python -m core pipeline`` / ``python -m core train`` in fresh processes, each with its
own empty cache (so each pays image decoding and its trunk forward pass), on MobileNetV2
``features.6 features.10 features.17`` (offline ImageNet weights). Reported: mean noise-normalised
score over the subjects, wall time, peak RSS of the process. Targets (issue #16): train >= ridge + 7
points with 3 subjects x 1,000 images, its CPU wall time <= 3x ridge's, memory <= 8 GB; and one
subject with 2,000 images (``--single``, against banded ridge): 80.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["features.6", "features.10", "features.17"]


def run(command: list[str], cache: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS GB) of ``python -m core COMMAND`` in a fresh process."""
    env = {**os.environ, "BES_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "core", *command, "--quiet"], cwd=ROOT, env=env)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: python -m core {' '.join(command)}")
    return wall, usage.ru_maxrss / 2**20


def scores(out: Path, subjects: list[int]) -> list[float]:
    m = json.loads((out / "metrics.json").read_text())
    return [m[f"subj{s:02d}"]["noise_normalized"] for s in subjects]


def compare(data: Path, subjects: list[int], work: Path, train_args: list[str], estimator: str = "ridge") -> dict:
    """``pipeline --estimator ESTIMATOR`` vs ``train`` on ``data``; rows named ``ridge`` and ``train``."""
    common = ["--data", str(data), "--subjects", *map(str, subjects), "--model", "mobilenet_v2",
              "--weights", "imagenet-offline", "--layers", *LAYERS, "--device", "cpu"]
    rows = {}
    work.mkdir(parents=True, exist_ok=True)
    for name, cmd in (("ridge", ["pipeline", *common, "--estimator", estimator, "--out", str(work / "ridge")]),
                      ("train", ["train", *common, "--out", str(work / "train"), *train_args])):
        with tempfile.TemporaryDirectory(dir=work) as cache:
            wall, rss = run(cmd, Path(cache))
        s = scores(work / name, subjects)
        rows[name] = {"scores": s, "mean": sum(s) / len(s), "wall_s": wall, "peak_rss_gb": rss}
        label = name if name == "train" else estimator
        print(f"{label:6s} scores {' '.join(f'{x:.1f}' for x in s)}  mean {rows[name]['mean']:.1f}  "
              f"wall {wall:.0f} s  peak RSS {rss:.2f} GB", flush=True)
    gain = rows["train"]["mean"] - rows["ridge"]["mean"]
    ratio = rows["train"]["wall_s"] / rows["ridge"]["wall_s"]
    print(f"train - {estimator}: {gain:+.1f} points (targets: +7 over ridge; 80 for one subject x 2,000 images); "
          f"time ratio {ratio:.2f}x (target <= 3x); train peak RSS {rows['train']['peak_rss_gb']:.2f} GB (target <= 8)")
    return {**rows, "gain": gain, "time_ratio": ratio}


def demo(work: Path, name: str, subjects: list[int], n_train: int) -> Path:
    path = work / name
    if not (path / "DEMO_README.txt").is_file():
        subprocess.run([sys.executable, "-m", "core", "demo", "--out", str(path), "--subjects", *map(str, subjects),
                        "--n-train", str(n_train), "--n-test", "100"], cwd=ROOT, check=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, help="dataset (default: a 3-subject demo generated under --work)")
    p.add_argument("--subjects", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench_train")
    p.add_argument("--single", action="store_true", help="also one subject with 2,000 training images")
    p.add_argument("--train-args", nargs=argparse.REMAINDER, default=[], help="more `train` options")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min) on {os.cpu_count()} CPUs")
    data = args.data or demo(args.work, "demo3", args.subjects, 1000)
    results = {"multi": compare(data, args.subjects, args.work / "multi", args.train_args)}
    if args.single:
        single = demo(args.work, "demo1_2000", [1], 2000)
        results["single"] = compare(single, [1], args.work / "single", args.train_args, estimator="banded")
    print(f"load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
    (args.work / "bench_train.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
