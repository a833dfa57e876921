"""``python -m core info --data DIR``: subjects, image and vertex counts, ROIs per hemisphere."""

from __future__ import annotations

import argparse
import json

from core.dataset import HEMIS, open_dataset


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="summarise an Algonauts 2023 dataset (validates it)")
    p.add_argument("--data", required=True, help="data directory holding subj01 ... subj08")
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


def run(args: argparse.Namespace) -> int:
    ds = open_dataset(args.data, args.subjects or None)
    summaries = [s.summary() for s in ds]
    if args.json:
        print(json.dumps({"data": str(ds.root), "subjects": summaries}, indent=2))
    else:
        print(f"dataset: {ds.root} ({len(summaries)} subjects)")
        for s in summaries:
            print(format_summary(s))
    return 0
