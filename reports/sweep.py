"""DSE sweep files: the YAML schema, strict loading, and the design space they describe.

A sweep names a base workload, axes that map to ``--set`` override keys, constraints, objectives
and a search strategy (docs/dse.md). It is loaded by the same strict machinery as workloads
(:func:`workloads.load.load_document`): unknown and duplicate keys are errors, reported as
``file:line: field.path: message``.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from reports.expr import Expression, ExpressionError
from reports.metrics import AREA_METRICS, METRICS, OBJECTIVES
from workloads.errors import SpecError

__all__ = [
    "SweepFile",
    "Axis",
    "Objective",
    "Constraint",
    "Sweep",
    "load_sweep",
    "point_hash",
    "override_args",
    "PARAM_SEPARATOR",
]

PARAM_SEPARATOR = "."
Scalar = int | float | str | bool
Value = Scalar | dict[str, Any]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


#: Most points one grid or random sweep may list: each is a stored row and a simulation (about
#: 0.1–1 s), so a million is already days of work; nsga2 searches larger spaces.
MAX_SWEEP_POINTS = 1_000_000


class RangeSpec(_Model):
    """An inclusive range: arithmetic with ``step`` or geometric with ``factor``."""

    start: int | float
    stop: int | float
    step: Annotated[int | float, Field(gt=0)] | None = None
    factor: Annotated[int | float, Field(gt=1)] | None = None

    @model_validator(mode="after")
    def _one_rule(self) -> RangeSpec:
        if (self.step is None) == (self.factor is None):
            raise ValueError("give exactly one of 'step' (arithmetic) or 'factor' (geometric)")
        if self.stop < self.start:
            raise ValueError(f"stop={self.stop} is below start={self.start}")
        if self.factor is not None and self.start <= 0:
            raise ValueError(f"a geometric range needs start > 0, got start={self.start}")
        return self

    def values(self) -> list[int | float]:
        out: list[int | float] = []
        integral = all(isinstance(v, int) for v in (self.start, self.stop, self.step or 1))
        integral = integral and (self.factor is None or isinstance(self.factor, int))
        v = self.start
        # A small tolerance keeps float steps (0.1 + 0.2 …) from dropping the stop value.
        while v <= self.stop * (1 + 1e-9) + (1e-12 if not integral else 0):
            out.append(v if integral else round(v, 12))
            v = v + self.step if self.step is not None else v * self.factor
            if len(out) > 100_000:
                raise ValueError("the range has more than 100,000 values")
        return out


class Axis(_Model):
    """One swept parameter.

    ``key`` is a ``--set`` override key (``hardware.array.rows``, ``operations.0.batch``,
    ``sparsity.n``); ``name`` is how constraints, tables and plots call it (default: the last
    part of the key).
    """

    key: str
    name: str | None = None
    values: Annotated[list[Value], Field(min_length=1, strict=False)] | None = None
    range: RangeSpec | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Axis:
        if (self.values is None) == (self.range is None):
            raise ValueError("give exactly one of 'values' (a list) or 'range'")
        return self

    @property
    def label(self) -> str:
        return self.name or self.key.split(PARAM_SEPARATOR)[-1]

    def expand(self) -> list[Value]:
        return list(self.values) if self.values is not None else self.range.values()


class Objective(_Model):
    """A metric to optimize; ``goal`` defaults to the metric's natural direction."""

    metric: Literal[OBJECTIVES]  # type: ignore[valid-type]
    goal: Literal["min", "max"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: object) -> object:
        # `objectives: [cycles, energy_pj]` reads better than a list of one-key mappings.
        return {"metric": data} if isinstance(data, str) else data


class ScreenSpec(_Model):
    """The first stage of a two-stage search (docs/dse.md): every point is estimated
    analytically (``archsim.estimate``), and only the ``keep`` fraction it ranks best is
    simulated exactly and stored."""

    keep: Annotated[float, Field(gt=0, le=1, strict=False)]

    @field_validator("keep", mode="before")
    @classmethod
    def _a_number(cls, value: object) -> object:
        if isinstance(value, bool):  # YAML's true would read as 1.0
            raise ValueError("expected a fraction in (0, 1], got a boolean")
        return value


class GridStrategy(_Model):
    """Every point of the cartesian product of the axes (constraints prune it)."""

    kind: Literal["grid"]
    screen: ScreenSpec | None = None


class RandomStrategy(_Model):
    """``samples`` distinct points drawn uniformly from the product, reproducibly from ``seed``."""

    kind: Literal["random"]
    samples: Annotated[int, Field(gt=0)]
    seed: int = 0
    screen: ScreenSpec | None = None


class NSGA2Strategy(_Model):
    """Optuna's NSGA-II in ask/tell mode: ``trials`` proposals in generations of ``population``.

    Proposals that repeat a known point are answered from the store without simulating.
    """

    kind: Literal["nsga2"]
    trials: Annotated[int, Field(gt=0)]
    population: Annotated[int, Field(ge=2)] = 16
    seed: int = 0
    crossover_prob: Annotated[float, Field(ge=0, le=1, strict=False)] = 0.9
    mutation_prob: Annotated[float, Field(ge=0, le=1, strict=False)] | None = None


Strategy = Annotated[GridStrategy | RandomStrategy | NSGA2Strategy, Field(discriminator="kind")]


class SweepFile(_Model):
    """The top level of a sweep YAML (docs/dse.md lists every field)."""

    version: Literal[1]
    name: str
    workload: str
    hardware: str | None = None
    overrides: Annotated[dict[str, Value], Field(strict=False)] = {}
    compare_dense: bool = False
    axes: Annotated[list[Axis], Field(min_length=1, strict=False)]
    constraints: Annotated[list[str], Field(strict=False)] = []
    objectives: Annotated[list[Objective], Field(min_length=1, strict=False)]
    strategy: Strategy = GridStrategy(kind="grid")


@dataclass(frozen=True)
class Constraint:
    """A parsed constraint. ``stage`` is ``"pre"`` when it reads only parameters (and area
    metrics, which depend on the hardware alone), so it is checked before simulating."""

    expression: Expression
    stage: Literal["pre", "post"]

    @property
    def text(self) -> str:
        return self.expression.text


@dataclass(frozen=True)
class Sweep:
    """A loaded, checked sweep: paths resolved, axes expanded, expressions parsed.

    Attributes
    ----------
    workload_path
        The base workload file (absolute).
    hardware
        Replaces the workload's hardware (a preset name or an absolute path), or None.
    fixed
        ``key=value`` overrides applied to every point, before the axis overrides.
    axes
        The axes with their expanded value lists, in file order.
    axis_lines
        ``file:line`` of each axis's ``key`` (for errors found once the workload is loaded).
    strategy_line
        ``file:line`` of ``strategy`` (likewise).
    """

    spec: SweepFile
    path: Path
    workload_path: Path
    hardware: str | None
    fixed: tuple[str, ...]
    axes: tuple[tuple[Axis, tuple[Value, ...]], ...]
    constraints: tuple[Constraint, ...]
    objectives: tuple[tuple[str, Literal["min", "max"]], ...]
    axis_lines: tuple[str, ...] = ()
    strategy_line: str = ""
    override_lines: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def size(self) -> int:
        """Points in the full cartesian product (before constraints)."""
        return math.prod(len(values) for _, values in self.axes)

    def point(self, index: int) -> dict[str, Value]:
        """The ``index``-th point of the product in grid order (the last axis varies fastest)."""
        params: dict[str, Value] = {}
        for axis, values in reversed(self.axes):
            index, i = divmod(index, len(values))
            params[axis.key] = values[i]
        return {axis.key: params[axis.key] for axis, _ in self.axes}

    def grid(self) -> Iterator[dict[str, Value]]:
        keys = [axis.key for axis, _ in self.axes]
        for combo in itertools.product(*(values for _, values in self.axes)):
            yield dict(zip(keys, combo))

    def names(self, params: dict[str, Value]) -> dict[str, Value]:
        """Parameters keyed by axis name (what constraints and tables see)."""
        return {axis.label: params[axis.key] for axis, _ in self.axes if axis.key in params}

    def describe(self) -> dict[str, Any]:
        """JSON-ready description kept in the results store (the report reads it)."""
        return {
            "name": self.name,
            "sweep_file": str(self.path),
            "workload": str(self.workload_path),
            "hardware": self.hardware,
            "fixed": list(self.fixed),
            "compare_dense": self.spec.compare_dense,
            "axes": [
                {"key": a.key, "name": a.label, "values": list(v)} for a, v in self.axes
            ],
            "constraints": [c.text for c in self.constraints],
            "objectives": [{"metric": m, "goal": g} for m, g in self.objectives],
            "strategy": self.spec.strategy.model_dump(mode="json"),
        }


    def blame_override(self, message: str) -> str:
        """A loader message about one of the sweep's fixed ``overrides`` (``--set k=v: …``),
        placed at that override's line of the sweep file; any other message unchanged."""
        for item, line in self.override_lines.items():
            prefix = f"--set {item}: "
            if message.startswith(prefix):
                return f"{line}: overrides: {item}: {message.removeprefix(prefix)}"
        return message

    def change_from(self, stored: dict[str, Any] | None) -> str | None:
        """How this sweep differs from the one a store holds (its :meth:`describe`), in the
        fields that decide which points it evaluates and how they are judged; None if in none.

        Axis names and file paths may change (points are keyed by override key, and the base
        workload is compared on its own), and so may an ``nsga2`` search's ``trials``: raising
        it and resuming continues the search (docs/dse.md).
        """
        if not isinstance(stored, dict):
            return None
        old, new = _resumable(stored), _resumable(json.loads(json.dumps(self.describe())))
        for key in old:  # a key an older store lacks is not compared
            was, now = old[key], new[key]
            if was == now:
                continue
            if key == "axes" and len(was) == len(now):
                i = next(i for i, (a, b) in enumerate(zip(was, now)) if a != b)
                key, was, now = f"axes[{i}]", was[i], now[i]
            return f"{key}: the store has {_short(was)}, the sweep file {_short(now)}"
        return None


def _resumable(description: dict[str, Any]) -> dict[str, Any]:
    """The parts of a sweep's description that a resumed sweep must keep."""
    parts = {k: description[k] for k in ("name", "compare_dense", "constraints", "objectives")
             if k in description}
    if isinstance(description.get("axes"), list):
        parts["axes"] = [{k: a.get(k) for k in ("key", "values")} if isinstance(a, dict) else a
                         for a in description["axes"]]
    strategy = description.get("strategy")
    if isinstance(strategy, dict):
        # Fields left at None are not compared: a newer archsim may add optional ones.
        parts["strategy"] = {k: v for k, v in strategy.items() if v is not None
                             and not (k == "trials" and strategy.get("kind") == "nsga2")}
    return parts


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def point_hash(params: dict[str, Value]) -> str:
    """Canonical key of a design point: SHA-256 of its parameters as sorted, compact JSON.

    Keyed by override key (not axis name), so renaming an axis keeps finished points.
    """
    return hashlib.sha256(_canonical(params).encode()).hexdigest()[:20]


def override_args(params: dict[str, Value]) -> list[str]:
    """``key=value`` strings for :func:`workloads.load.load_workload`.

    Values are written as JSON, which YAML reads back unchanged (strings stay strings even when
    they look like numbers, mappings stay mappings).
    """
    return [f"{key}={_canonical(value)}" for key, value in params.items()]


def _suggest(name: str, known: list[str]) -> str:
    hint = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean {hint[0]!r}?" if hint else ""


def _resolve_hardware(ref: str | None, base: Path, where: str) -> str | None:
    """The sweep's ``hardware`` as an absolute path or a preset name, checked to exist (an
    error at its line, with the preset it most resembles)."""
    from workloads.load import preset_path

    if ref is None:
        return None
    looks_like_path = ref.endswith((".yaml", ".yml")) or "/" in ref
    if not looks_like_path:
        try:
            preset_path(ref)
        except SpecError as exc:
            raise SpecError(f"{where}: hardware: {exc}") from None
        return ref
    path = (base / ref).resolve()
    if not path.is_file():
        raise SpecError(f"{where}: hardware: file not found: {path}")
    return str(path)


def load_sweep(path: str | Path, area_available: bool | None = None) -> Sweep:
    """Load and check a sweep YAML.

    Parameters
    ----------
    path
        The sweep file. ``workload`` and a ``hardware`` path are relative to it;
        ``workload`` may also be ``example:NAME``, a shipped example.
    area_available
        Whether a fitted area model exists (default: ask :mod:`reports.area`). Area metrics in
        objectives or constraints are an error without one.

    Raises
    ------
    SpecError
        ``file:line: field.path: message`` for the first problem found.
    """
    from workloads.arguments import ExampleError, resolve
    from workloads.load import is_sweep_file, load_document

    path = Path(path)
    spec, where = load_document(path, SweepFile)
    base = path.resolve().parent
    try:  # example:NAME, as on the command line: a sweep outside the package can name one
        workload_ref = resolve(spec.workload)
    except ExampleError as exc:
        raise SpecError(f"{where(('workload',))}: workload: {exc}") from None
    workload_path = (base / workload_ref).resolve()
    if not workload_path.is_file():
        raise SpecError(f"{where(('workload',))}: workload: file not found: {workload_path}")
    if is_sweep_file(workload_path):
        raise SpecError(f"{where(('workload',))}: workload: {workload_path} is a DSE sweep file; "
                        f"name the workload YAML the sweep explores")
    if area_available is None:
        from reports.area import area_model_available

        area_available = area_model_available()

    axes: list[tuple[Axis, tuple[Value, ...]]] = []
    seen_keys: dict[str, int] = {}
    seen_names: dict[str, int] = {}
    for i, axis in enumerate(spec.axes):
        at = ("axes", i)
        if axis.key in seen_keys:
            raise SpecError(f"{where(at + ('key',))}: axes[{i}].key: {axis.key!r} is already "
                            f"swept by axes[{seen_keys[axis.key]}]")
        if not axis.label.isidentifier():
            raise SpecError(f"{where(at)}: axes[{i}].name: {axis.label!r} is not an identifier "
                            f"usable in constraints; give the axis a 'name'")
        if axis.label in seen_names or axis.label in METRICS:
            clash = "a metric" if axis.label in METRICS else f"axes[{seen_names[axis.label]}]"
            raise SpecError(f"{where(at)}: axes[{i}].name: {axis.label!r} is already used by "
                            f"{clash}; give the axis another 'name'")
        if axis.key in spec.overrides:
            raise SpecError(f"{where(at + ('key',))}: axes[{i}].key: {axis.key!r} is also fixed "
                            f"under 'overrides'")
        try:
            values = axis.expand()
        except ValueError as exc:
            raise SpecError(f"{where(at + ('range',))}: axes[{i}].range: {exc}") from None
        if len({_canonical(v) for v in values}) != len(values):
            raise SpecError(f"{where(at)}: axes[{i}].values: duplicate values in {values!r}")
        seen_keys[axis.key], seen_names[axis.label] = i, i
        axes.append((axis, tuple(values)))

    available = [n for n, m in METRICS.items()
                 if not m.needs or (m.needs == "area" and area_available)
                 or (m.needs == "dense" and spec.compare_dense)]
    objectives: list[tuple[str, Literal["min", "max"]]] = []
    for i, obj in enumerate(spec.objectives):
        if obj.metric not in available:
            raise SpecError(f"{where(('objectives', i, 'metric'))}: objectives[{i}].metric: "
                            f"{_unavailable(obj.metric)}")
        if any(obj.metric == m for m, _ in objectives):
            raise SpecError(f"{where(('objectives', i))}: objectives[{i}]: {obj.metric!r} is "
                            f"listed twice")
        objectives.append((obj.metric, obj.goal or METRICS[obj.metric].goal))

    constraints: list[Constraint] = []
    param_names = [a.label for a, _ in axes]
    for i, text in enumerate(spec.constraints):
        at = f"{where(('constraints', i))}: constraints[{i}]"
        try:
            expr = Expression(text)
        except ExpressionError as exc:
            raise SpecError(f"{at}: {exc}") from None
        for name in sorted(expr.names):
            if name in param_names or name in available:
                continue
            if name in METRICS:
                raise SpecError(f"{at}: {_unavailable(name)}")
            raise SpecError(f"{at}: unknown name {name!r}; constraints read axis names "
                            f"({', '.join(param_names)}) and metrics (docs/dse.md)"
                            f"{_suggest(name, param_names + available)}")
        pre = all(n in param_names or n in AREA_METRICS for n in expr.names)
        constraints.append(Constraint(expr, "pre" if pre else "post"))

    total = math.prod(len(v) for _, v in axes)
    if isinstance(spec.strategy, GridStrategy) and total > MAX_SWEEP_POINTS:
        raise SpecError(f"{where(('axes',))}: axes: the grid has {total:,} points, above the "
                        f"{MAX_SWEEP_POINTS:,} a sweep may list; sample it (strategy: {{kind: "
                        f"random, samples: N}}) or search it (kind: nsga2), or give fewer values")
    if isinstance(spec.strategy, RandomStrategy) and spec.strategy.samples > MAX_SWEEP_POINTS:
        raise SpecError(f"{where(('strategy', 'samples'))}: strategy.samples: "
                        f"{spec.strategy.samples:,} is above the {MAX_SWEEP_POINTS:,} a sweep "
                        f"may list")
    if isinstance(spec.strategy, RandomStrategy) and spec.strategy.samples > total:
        raise SpecError(f"{where(('strategy', 'samples'))}: strategy.samples: "
                        f"{spec.strategy.samples} exceeds the {total} points of the space; "
                        f"use kind: grid")

    _check_screen(spec, where, objectives)
    fixed = tuple(override_args(dict(spec.overrides)))
    return Sweep(
        spec=spec, path=path.resolve(), workload_path=workload_path,
        hardware=_resolve_hardware(spec.hardware, base, where(("hardware",))), fixed=fixed, axes=tuple(axes),
        constraints=tuple(constraints), objectives=tuple(objectives),
        axis_lines=tuple(where(("axes", i, "key")) for i in range(len(axes))),
        strategy_line=where(("strategy",)),
        override_lines={item: where(("overrides", key))
                        for item, key in zip(fixed, spec.overrides)},
    )


def _check_screen(spec: SweepFile, where, objectives: list[tuple[str, str]]) -> None:
    """A screened sweep's objectives must be ones the analytic estimate gives (or the area
    model's, which are exact anyway)."""
    strategy = spec.strategy
    if getattr(strategy, "screen", None) is None:
        return
    from archsim.estimate import ESTIMATED_METRICS

    screenable = set(ESTIMATED_METRICS) | set(AREA_METRICS)
    for i, (name, _) in enumerate(objectives):
        if name not in screenable:
            raise SpecError(f"{where(('objectives', i))}: objectives[{i}]: {name!r} has no "
                            f"analytic estimate, so strategy.screen cannot rank by it; a screened "
                            f"sweep optimizes {', '.join(sorted(screenable & set(OBJECTIVES)))}")


def _unavailable(name: str) -> str:
    needs = METRICS[name].needs
    if needs == "dense":
        return f"{name!r} needs 'compare_dense: true' (each point is also simulated dense)"
    if needs == "area":
        return (f"{name!r} needs the area model, which has no synthesis samples yet "
                f"(reports/data/area_samples.json; see docs/dse.md)")
    return f"{name!r} is not available"
