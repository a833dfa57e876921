"""Subjects of a dataset by number or name: the lookup both challenge layouts (2023, 2021) share."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Generic, Iterator, TypeVar

from core.util.errors import DatasetError

_S = TypeVar("_S")


class SubjectLookup(Generic[_S]):
    """A dataset's subjects by number or name; a subclass sets ``_parse_subject`` (its name -> number rule)."""

    root: Path
    _subjects: dict[int, _S]
    _parse_subject: Callable[[int | str], int]

    @property
    def subjects(self) -> list[int]:
        return sorted(self._subjects)

    def subject(self, number: int | str) -> _S:
        """Subject by number (``1``) or name (as the layout writes it)."""
        n = self._parse_subject(number)
        if n not in self._subjects:
            have = ", ".join(str(s) for s in self.subjects)
            raise DatasetError(f"{self.root}: unknown subject {number} (available: {have})")
        return self._subjects[n]

    def __iter__(self) -> Iterator[_S]:
        return iter(self._subjects[n] for n in self.subjects)
