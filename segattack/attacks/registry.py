"""The attack registry: one :class:`AttackSpec` per attack, declared beside the attack's function.

Everything that needs to know about an attack (the CLI's choices, the profiles' step counts, the
studies' budget rule, the report's labels and readings, the notebooks) reads its spec here, so an
attack is one module plus one :func:`register` call. Attacks from other packages join the same
way: call :func:`register` at import, or declare an entry point in the group ``segattack.attacks``
whose object is an :class:`AttackSpec` (or a function that registers some), the convention pytest
plugins use::

    [project.entry-points."segattack.attacks"]
    my_attack = "my_package.attacks:SPEC"

Entry points are loaded the first time the registry is read, in every process (Dask workers and
notebook kernels included), so a registered attack runs in the report grid like a shipped one.

A *family* builds specs from a name with arguments: ``ATTACKS["ensemble:pgd,segpgd"]`` asks the
``ensemble`` family (:func:`register_family`) for the spec of that worst case. Built specs are
looked up and run like registered ones, but are not listed (the CLI's choices, the studies).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ._common import AttackResult

ENTRY_POINT_GROUP = "segattack.attacks"
DEFAULT_ATTACK = "pgd"  # a run's attack when none is named (RunConfig, the CLI, the notebooks)
Params = dict[str, Any]


def _no_params(backbone: str) -> Params:
    return {}


def _describe(params: Params) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items() if k not in ("attack", "iterations", "steps"))


@dataclass(frozen=True)
class AttackSpec:
    """What the study needs to know about one attack.

    ``fn(model, images, labels, *, steps, progress, ...)`` is the attack itself; calling the spec
    calls it. ``paper_params(backbone)``: the keywords a study run uses by default (the paper's
    section-5 values where the paper has them). ``paper_steps``: iterations in the ``paper``
    profile; ``default_steps``: in the ``default`` profile (the paper's when None). ``budget(eps,
    steps, backbone)``: keywords giving the attack the L-inf budget ``eps`` ([0,1] pixels) over
    ``steps`` in the studies, None when it has no budget rule. ``kind``: a ``"budget"`` attack works
    inside a given radius, a ``"minimal_norm"`` attack looks for the smallest perturbation that
    succeeds. ``compared``: whether the studies compare it; ``security_curve``: whether success
    versus epsilon means something for it. ``in_paper``: one of the paper's Table 1 attacks (the
    grid's default runs). ``describe(params)``: the readings behind a result, for tables;
    ``notes(params, image_size, images)``: a paragraph for the report's discussion, or None.
    """

    name: str
    fn: Callable[..., AttackResult]
    label: str
    paper_params: Callable[[str], Params] = _no_params
    paper_steps: int = 50
    default_steps: int | None = None
    budget: Callable[[float, int, str], Params] | None = None
    kind: Literal["budget", "minimal_norm"] = "budget"
    compared: bool = False
    security_curve: bool = True
    in_paper: bool = False
    searchable: bool = True  # its radius is an input, so the budget axis can bisect it (ASMA's is not)
    describe: Callable[[Params], str] = _describe
    notes: Callable[[Params, int, int], str | None] | None = None
    source: str = field(default="segattack", compare=False)

    def __call__(self, *args: Any, **kwargs: Any) -> AttackResult:
        return self.fn(*args, **kwargs)

    def steps_for(self, profile_steps: Literal["paper", "default"]) -> int:
        """Iterations in the ``paper`` or ``default`` profile."""
        if profile_steps == "default" and self.default_steps is not None:
            return self.default_steps
        return self.paper_steps

    def budget_params(self, eps: float, steps: int, backbone: str) -> Params:
        """The studies' keywords for budget ``eps`` over ``steps`` iterations."""
        if self.budget is None:
            raise ValueError(f"attack {self.name!r} has no budget rule, so the studies cannot compare it")
        return self.budget(eps, steps, backbone)


class Registry(Mapping[str, AttackSpec]):
    """Name -> :class:`AttackSpec`, in registration order; entry points load on first read."""

    def __init__(self) -> None:
        self._specs: dict[str, AttackSpec] = {}
        self._families: dict[str, Callable[[str], AttackSpec]] = {}
        self._built: dict[str, AttackSpec] = {}
        self._loaded = False

    def register(self, spec: AttackSpec, replace: bool = False) -> AttackSpec:
        if not isinstance(spec, AttackSpec):
            raise TypeError(f"register() takes an AttackSpec, got {type(spec).__name__}")
        if not spec.name or not spec.name.replace("_", "").isalnum():
            raise ValueError(f"attack names are letters, digits and underscores (they name folders), got {spec.name!r}")
        if spec.name in self._specs and self._specs[spec.name] is not spec and not replace:
            raise ValueError(
                f"an attack named {spec.name!r} is already registered (from "
                f"{self._specs[spec.name].source}); pass replace=True to override it"
            )
        if spec.budget is None and spec.compared:
            raise ValueError(f"attack {spec.name!r} is compared in the studies but has no budget rule")
        self._specs[spec.name] = spec
        return spec

    def unregister(self, name: str) -> None:
        self._specs.pop(name, None)
        self._built.clear()  # a built spec may name it

    def register_family(self, prefix: str, build: Callable[[str], AttackSpec]) -> None:
        """Names ``PREFIX:ARGS`` resolve to ``build(ARGS)`` (a ValueError there says what is wrong)."""
        if not prefix.isidentifier() or prefix in self._families:
            raise ValueError(f"family prefixes are identifiers, registered once; got {prefix!r}")
        self._families[prefix] = build

    def _build(self, name: str) -> AttackSpec:
        prefix, colon, args = name.partition(":")
        if not colon or prefix not in self._families:
            raise KeyError(
                f"unknown attack {name!r}; registered: {', '.join(self._specs)}"
                + "".join(f", {family}:..." for family in self._families)
            )
        if name not in self._built:
            self._built[name] = self._families[prefix](args)
        return self._built[name]

    def _load_entry_points(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                obj = entry.load()
            except Exception as exc:
                raise ImportError(f"the attack plugin {entry.name!r} ({entry.value}) failed to load: {exc}") from exc
            if isinstance(obj, AttackSpec):
                self.register(obj)
            elif callable(obj):
                obj()  # a registration function
            else:
                raise TypeError(
                    f"the entry point {entry.name!r} ({entry.value}) in {ENTRY_POINT_GROUP!r} is "
                    f"neither an AttackSpec nor a registration function"
                )

    def __getitem__(self, name: str) -> AttackSpec:
        self._load_entry_points()
        spec = self._specs.get(name)
        return spec if spec is not None else self._build(name)

    def __iter__(self) -> Iterator[str]:
        self._load_entry_points()
        return iter(list(self._specs))

    def __len__(self) -> int:
        self._load_entry_points()
        return len(self._specs)

    def __contains__(self, name: object) -> bool:
        """Registered, or a well-formed family name."""
        self._load_entry_points()
        if not isinstance(name, str) or name in self._specs:
            return name in self._specs
        try:
            self._build(name)
        except (KeyError, ValueError):
            return False
        return True

    def check(self, name: str) -> AttackSpec:
        """The spec of ``name``, or one ValueError saying why there is none."""
        try:
            return self[name]
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None

    def compared(self) -> list[AttackSpec]:
        """The attacks the studies compare, in registration order."""
        return [s for s in self.values() if s.compared]

    def minimal_norm(self) -> tuple[str, ...]:
        """The minimal-norm attacks, by name, in registration order."""
        return tuple(s.name for s in self.values() if s.kind == "minimal_norm")

    def in_paper(self) -> tuple[str, ...]:
        """The paper's Table 1 attacks (the grid's default runs), by name."""
        return tuple(sorted(s.name for s in self.values() if s.in_paper))


ATTACKS = Registry()


def register(spec: AttackSpec, replace: bool = False) -> AttackSpec:
    """Add ``spec`` to :data:`ATTACKS` (refused if its name is taken, unless ``replace``)."""
    return ATTACKS.register(spec, replace)


def register_family(prefix: str, build: Callable[[str], AttackSpec]) -> None:
    """Let :data:`ATTACKS` resolve ``PREFIX:ARGS`` names with ``build(ARGS)``."""
    ATTACKS.register_family(prefix, build)
