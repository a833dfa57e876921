"""What fitting needs from a subject: the :class:`FitSubject` protocol.

A subject's responses come in *parts*, each fitted on its own: the two hemispheres of an
Algonauts 2023 subject (``core.algonauts2023.dataset.Subject``), or the tracks of an Algonauts
2021 subject (``core.algonauts2021.dataset.TrackSubject``). :func:`core.encoding.fitting.fit_subject`
takes any object with these members, so the encoding package knows no challenge layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class FitSubject(Protocol):
    """A subject whose responses are fitted part by part (hemispheres, tracks)."""

    @property
    def name(self) -> str:
        """The subject's name as results are filed under (``"subj01"``, ``"sub01"``)."""

    @property
    def root(self) -> Path:
        """The dataset's root directory (recorded with the results)."""

    @property
    def n_train(self) -> int:
        """Number of training stimuli (rows of ``responses``)."""

    @property
    def n_test(self) -> int:
        """Number of test stimuli (rows of the test predictions)."""

    @property
    def parts(self) -> tuple[str, ...]:
        """The parts fitted by default, in order."""

    def responses(self, part: str) -> np.ndarray:
        """Training responses of ``part``: ``(n_train, n_targets)``, may be memory-mapped."""

    def roi_masks(self, part: str) -> dict[str, np.ndarray]:
        """Boolean mask over ``part``'s targets per ROI (for per-ROI summaries)."""

    def noise_ceiling(self, part: str) -> np.ndarray | None:
        """Noise ceiling per target in percent, or ``None`` when the data has none."""
