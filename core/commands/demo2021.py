"""``python -m core demo2021``: generate the synthetic video demo dataset (Algonauts 2021 layout)."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.util import outdir


def add_parser(sub) -> None:
    from core.algonauts2021.demo import DemoConfig

    d = DemoConfig()
    p = sub.add_parser(
        "demo2021",
        help="generate the synthetic video demo dataset (Algonauts 2021 layout)",
        description=(
            "Generate the video demo: short procedural clips with moving faces, bodies, words and objects, "
            "and simulated voxel responses in the Algonauts 2021 layout (AlgonautsVideos268_All_30fpsmax/, "
            "participants_data_v2021/{mini_track,full_track}/subXX/*.pkl), with the simulation's ground truth "
            "in demo_metadata/. The last N_TEST clips (sorted by name) are the test clips. Deterministic: "
            "the same settings give identical files."
        ),
    )
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help=f"directory to write; {outdir.RULE}")
    p.add_argument("--force", action="store_true", help=outdir.FORCE_HELP)
    p.add_argument("--subjects", type=int, nargs="+", default=list(d.subjects), metavar="N",
                   help=f"subject numbers (default: {' '.join(map(str, d.subjects))})")
    p.add_argument("--n-train", type=int, default=d.n_train, metavar="N", help=f"training clips (default: {d.n_train})")
    p.add_argument("--n-test", type=int, default=d.n_test, metavar="N", help=f"test clips (default: {d.n_test})")
    p.add_argument("--reps", type=int, default=d.n_reps, metavar="N",
                   help=f"repetitions per clip (default: {d.n_reps})")
    p.add_argument("--size", type=int, default=d.size, metavar="PX", help=f"frame side in pixels (default: {d.size})")
    p.add_argument("--fps", type=int, default=d.fps, help=f"frames per second (default: {d.fps})")
    p.add_argument("--seconds", type=float, default=d.seconds, help=f"clip duration (default: {d.seconds:g})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default: {d.seed})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.algonauts2021.demo import DemoConfig, generate_demo2021
    from core.util.progress import TqdmProgress

    cfg = DemoConfig(tuple(args.subjects), args.n_train, args.n_test, args.reps, args.size, args.fps, args.seconds,
                     args.seed).checked()
    out = outdir.prepare_out(args.out, args.force)
    with TqdmProgress(desc="demo2021") as bar:
        outdir.generate_into(out, lambda d: generate_demo2021(d, cfg, progress=bar))
    print(f"video demo dataset written to {out}")
    return 0
