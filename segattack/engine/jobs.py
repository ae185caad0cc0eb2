"""One shape for every unit of the study: a :class:`Job` is split into units, each computed anywhere.

A job (a backbone x attack run, :class:`segattack.study.runner.RunJob`; the studies,
:class:`segattack.study.studies.StudiesJob`) owns a folder. Its units are pure functions of the job's
configuration and the unit's name (:meth:`Job.compute`), so they run in any order on any worker
with the same numbers; each finished unit's record is written under ``<units>/<config hash>/`` as
it arrives; once every unit is in, :meth:`Job.finish` assembles the records into the job's
document and replaces the folder with it whole; then the job's notebook renders it. The grid
(:mod:`segattack.engine.grid`) runs any list of jobs this way without knowing their kinds, and
:meth:`Job.run_here` runs one in this process (the CLI, the notebooks, the API).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from tqdm.auto import tqdm

from segattack.engine.store import (
    atomic_save,
    claim,
    json_matches,
    locked,
    no_space_named,
    output_folder,
    replace_folder,
)


class TaskState(str, Enum):
    """Where a job stands in the grid (equal to, and hashed as, its text: ``TaskState.DONE == "done"``)."""

    PENDING = "pending"  # units or assembly left to do
    RENDER = "render"  # results there, notebook missing or failed (a stop between the two)
    SKIPPED = "skipped"  # results and notebook there from an earlier grid
    DONE = "done"
    FAILED = "failed"

    __hash__ = str.__hash__

    def __str__(self) -> str:
        return self.value


class Record(Protocol):
    """A unit's output: stored with ``torch.save`` as plain containers, read back with ``weights_only``."""

    def to_dict(self) -> dict[str, Any]: ...


class Job(ABC):
    """A folder of results computed in units; subclasses say what a unit is and how records assemble."""

    notebook: ClassVar[str | None]  # the notebook (in notebooks/) that renders the job's folder, if any
    document: ClassVar[str]  # the assembled results file in the folder
    unit_folder: ClassVar[str]  # where unit records wait to be assembled
    kind: ClassVar[str] = "run"  # the folder's kind in its marker (segattack.store.KINDS)
    results_version: ClassVar[int]  # the format version the document must carry to count as finished

    def __init__(self, name: str, path: str | os.PathLike, digest: str) -> None:
        self.name, self.digest = name, digest
        self.given = Path(path).expanduser().absolute()  # as named (a symlink not followed): the grid checks it
        self.path = output_folder(path, kind=self.kind)
        self._units: list[str] | None = None

    @abstractmethod
    def list_units(self) -> list[str]:
        """Every unit's name, in order (checks the inputs the units will read)."""

    @abstractmethod
    def compute(self, unit: str) -> Record:
        """Compute one unit; runs on a worker, so it reads only the job's configuration."""

    @abstractmethod
    def decode(self, stored: dict[str, Any]) -> Record:
        """A unit record from what :meth:`Record.to_dict` stored."""

    @abstractmethod
    def write_outputs(self, records: list[Any], staging: Path) -> None:
        """Assemble the unit records into the job's document (and images) inside ``staging``."""

    @abstractmethod
    def notebook_parameters(self) -> dict[str, Any]:
        """The papermill parameters that make :attr:`notebook` read this job's folder."""

    def units(self) -> list[str]:
        """:meth:`list_units`, listed once per job object."""
        if self._units is None:
            self._units = self.list_units()
        return self._units

    def prepare(self) -> None:  # noqa: B027 (a hook: most jobs need nothing)
        """Load what every unit needs (a model) before any unit runs, so that a bad input fails
        before any progress is shown. Nothing by default."""

    def model_specs(self) -> tuple[str, ...]:
        """The model specs (or study backbones) the units load: a worker imports their backends before
        its task threads start. None by default."""
        return ()

    def prepare_worker(self) -> None:  # noqa: B027 (a hook: most jobs need nothing)
        """Run once in each worker process before its task threads start (import what the units
        load: transformers' lazy imports are not thread-safe). Nothing by default."""

    @property
    def unit_dir(self) -> Path:
        return self.path / self.unit_folder / self.digest

    def _file(self, unit: str) -> Path:
        return self.unit_dir / (unit.replace("/", "-") + ".pt")

    def complete(self) -> bool:
        """True when the folder holds finished results for exactly this configuration."""
        return json_matches(self.path / self.document, config_hash=self.digest, results_version=self.results_version)

    def state(self) -> TaskState:
        """PENDING, RENDER (results there, the notebook not rendered) or SKIPPED. A notebook is
        written only once it has run, and a failed one has ``failed.json`` beside it."""
        if not self.complete():
            return TaskState.PENDING
        if self.notebook is None:
            return TaskState.SKIPPED
        rendered = (self.path / self.notebook).is_file() and not (self.path / "failed.json").is_file()
        return TaskState.SKIPPED if rendered else TaskState.RENDER

    def pending(self) -> list[str]:
        """The units without a record on disk."""
        return [u for u in self.units() if not self._file(u).is_file()]

    def write(self, unit: str, record: Record) -> None:
        claim(self.path, self.kind)
        atomic_save(record.to_dict(), self._file(unit))

    def records(self) -> list[Any]:
        return [self.decode(torch.load(self._file(u), map_location="cpu", weights_only=True)) for u in self.units()]

    def finish(self) -> None:
        """Assemble the unit records and replace the folder with the result whole (its records kept);
        refused, with nothing written, unless every unit's record is on disk."""
        missing = self.pending()
        if missing:
            raise RuntimeError(
                f"{self.name}: {len(missing)} of {len(self.units())} units have no record in "
                f"{self.unit_dir} (first: {missing[0]}); not assembled from the rest, run it again"
            )
        records = self.records()

        def build(staging: Path) -> None:
            self.write_outputs(records, staging)
            (staging / self.unit_folder).mkdir()
            os.replace(self.unit_dir, staging / self.unit_folder / self.digest)

        with no_space_named(self.path):
            replace_folder(self.path, build, self.kind)

    def run_here(self, progress: bool = True) -> None:
        """Compute the units not on disk in this process, then assemble (nothing to do when complete)."""
        with locked(self.path):
            if self.complete():
                return
            pending = self.pending()
            if pending:
                self.prepare()
            for unit in tqdm(pending, desc=self.name, unit="unit", disable=not progress):
                self.write(unit, self.compute(unit))
            self.finish()
