"""``python -m core info [--data DIR]``: subjects, image and vertex counts, ROIs per hemisphere.

Without ``--data``: the dashboard's data directory (``$BES_DATA_DIR``, else the embedded demo,
generated on first use).

An Algonauts 2021 (videos) dataset prints clip counts and voxel counts per ROI instead.
"""

from __future__ import annotations

import argparse
import json
import sys

from core.algonauts2023.dataset import HEMIS, open_dataset


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="summarise an Algonauts 2023 or 2021 dataset (validates it)")
    p.add_argument("--data", default=None,
                   help="data directory (subj01 ... subj08, or the 2021 layout); default: as the dashboard, "
                        "$BES_DATA_DIR, else the embedded demo (generated on first use, about a minute)")
    p.add_argument("--subjects", nargs="*", help="only these subjects (default: all found)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=run)


def format_summary(summary: dict) -> str:
    """The human-readable block for one subject (shared with the dashboard's Dataset page)."""
    lines = [
        f"{summary['subject']}: {summary['n_train']} training images, {summary['n_test']} test images, "
        f"vertices lh {summary['n_vertices']['lh']} / rh {summary['n_vertices']['rh']}, "
        f"noise ceiling {'yes' if summary['noise_ceiling'] else 'no'}"
    ]
    for hemi in HEMIS:
        rois = summary["rois"][hemi]
        lines.append(f"  {hemi} ROIs:")
        if not rois:
            lines.append("    (no ROI files)")
        for cls, names in rois.items():
            lines.append(f"    {cls}: {', '.join(names)}")
    return "\n".join(lines)


def format_summary_2021(summary: dict) -> str:
    """The human-readable block for one subject of an Algonauts 2021 dataset."""
    lines = [f"{summary['subject']}: {summary['n_train']} training clips, {summary['n_test']} test clips"]
    for track, rois in summary["tracks"].items():
        voxels = ", ".join(f"{r} {summary['n_voxels'][r]} ({summary['n_reps'][r]} reps)" for r in rois)
        lines.append(f"  {track}: {voxels}")
    return "\n".join(lines)


def _default_data() -> str:
    """The dashboard's default data directory; the demo is generated first if that is it and it is missing."""
    from core.algonauts2023 import demo
    from core.util import paths
    from core.util.progress import TqdmProgress

    path = paths.default_data_dir()
    if path == paths.demo_dir() and not demo.is_demo(path):
        print(f"creating the demo dataset in {path} (first start only)", file=sys.stderr)
        with TqdmProgress(desc="demo") as bar:
            demo.ensure_demo(path, progress=bar)
    return str(path)


def run(args: argparse.Namespace) -> int:
    from core.algonauts2021.dataset import is_2021_layout, open_dataset2021

    if args.data is None:
        args.data = _default_data()
    if is_2021_layout(args.data):
        ds, fmt, kind = open_dataset2021(args.data, args.subjects or None), format_summary_2021, "Algonauts 2021"
    else:
        ds, fmt, kind = open_dataset(args.data, args.subjects or None), format_summary, "Algonauts 2023"
    summaries = [s.summary() for s in ds]
    if args.json:
        print(json.dumps({"data": str(ds.root), "kind": kind, "subjects": summaries}, indent=2))
    else:
        print(f"dataset: {ds.root} ({kind}, {len(summaries)} subjects)")
        for s in summaries:
            print(fmt(s))
    return 0
