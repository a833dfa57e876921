"""Progress reporting shared by the CLI (tqdm) and the dashboard (Streamlit bars, run store).

A progress callback is any ``fn(fraction: float, message: str) -> None`` with
``fraction`` in [0, 1]. Library functions accept ``progress: Progress | None``.
"""

from __future__ import annotations

from typing import Callable, Optional

Progress = Callable[[float, str], None]


def report(progress: Optional[Progress], fraction: float, message: str = "") -> None:
    """Call ``progress`` if given, clamping the fraction to [0, 1]."""
    if progress is not None:
        progress(min(1.0, max(0.0, float(fraction))), message)


def scaled(progress: Optional[Progress], start: float, stop: float) -> Optional[Progress]:
    """A callback that maps [0, 1] onto [start, stop] of ``progress`` (for sub-steps)."""
    if progress is None:
        return None
    return lambda f, msg="": report(progress, start + (stop - start) * f, msg)


class TqdmProgress:
    """A progress callback that drives one tqdm bar (for the CLI)."""

    def __init__(self, desc: str = "", total: int = 1000):
        from tqdm import tqdm

        self._total = total
        self._bar = tqdm(total=total, desc=desc, unit="‰", bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}")

    def __call__(self, fraction: float, message: str = "") -> None:
        n = int(round(fraction * self._total))
        self._bar.update(max(0, n - self._bar.n))
        if message:
            self._bar.set_postfix_str(message, refresh=False)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> "TqdmProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
