"""Search strategies: which design points a sweep evaluates.

``grid`` walks the cartesian product of the axes; ``random`` draws distinct points reproducibly
from a seed; ``nsga2`` runs Optuna's NSGA-II in ask/tell mode, one generation at a time, so the
executor evaluates a whole generation in parallel. Optuna's own storage is never the record: on
``--resume`` the study is rebuilt from the results store (REFERENCE.md section 5).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from reports.store import PointRow
from reports.sweep import GridStrategy, NSGA2Strategy, RandomStrategy, Sweep, Value, point_hash

__all__ = ["candidate_points", "NSGA2Search"]


def _random_indices(total: int, samples: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    if total <= 10_000_000:
        return [int(i) for i in rng.choice(total, size=samples, replace=False)]
    # Spaces too large for a permutation: rejection sampling, distinct by construction.
    seen: dict[int, None] = {}
    while len(seen) < samples:
        seen.setdefault(int(rng.integers(total)), None)
    return list(seen)


def candidate_points(sweep: Sweep) -> Iterator[dict[str, Value]]:
    """Points of a ``grid`` or ``random`` sweep, in a fixed order (so a resumed run agrees)."""
    strategy = sweep.spec.strategy
    if isinstance(strategy, GridStrategy):
        yield from sweep.grid()
    elif isinstance(strategy, RandomStrategy):
        for index in _random_indices(sweep.size, strategy.samples, strategy.seed):
            yield sweep.point(index)
    else:
        raise TypeError(f"{type(strategy).__name__} is not a fixed point list; use NSGA2Search")


class NSGA2Search:
    """NSGA-II over the sweep's axes, in generations of ``population`` proposals.

    Each axis becomes an integer index into its value list (ordered, so crossover between 16
    and 64 can land on 32); axes whose values are not all numbers become categorical.

    Parameters
    ----------
    sweep
        The loaded sweep (its strategy must be ``nsga2``).
    history
        Stored points to rebuild the study from (``--resume``). They enter as finished trials
        with their stored generation, and the sampler's seed is offset by their number so the
        resumed search does not replay its first proposals.
    """

    def __init__(self, sweep: Sweep, history: list[PointRow] = ()) -> None:
        import optuna
        from optuna.distributions import CategoricalDistribution, IntDistribution

        strategy = sweep.spec.strategy
        assert isinstance(strategy, NSGA2Strategy)
        self.sweep, self.strategy = sweep, strategy
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._dists: dict[str, Any] = {}
        for axis, values in sweep.axes:
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            self._dists[axis.key] = (
                IntDistribution(0, len(values) - 1) if numeric
                else CategoricalDistribution(list(range(len(values))))
            )
        self._values = {axis.key: values for axis, values in sweep.axes}
        self._sampler = optuna.samplers.NSGAIISampler(
            population_size=strategy.population, seed=strategy.seed + len(history),
            crossover_prob=strategy.crossover_prob, mutation_prob=strategy.mutation_prob,
        )
        directions = ["minimize" if g == "min" else "maximize" for _, g in sweep.objectives]
        self.study = optuna.create_study(directions=directions, sampler=self._sampler)
        self.asked = 0
        self._rebuild(history)

    @property
    def remaining(self) -> int:
        return max(0, self.strategy.trials - self.asked)

    def _index_params(self, params: dict[str, Value]) -> dict[str, int] | None:
        out = {}
        for key, values in self._values.items():
            if key not in params:
                return None
            matches = [i for i, v in enumerate(values) if v == params[key]
                       and type(v) is type(params[key])]
            if not matches:
                return None
            out[key] = matches[0]
        return out

    def _rebuild(self, history: list[PointRow]) -> None:
        from optuna.trial import TrialState, create_trial

        gen_key = self._sampler._get_generation_key()
        for row in sorted(history, key=lambda r: (r.trial is None, r.trial or 0, r.finished_at)):
            index = self._index_params(row.params)
            if index is None:
                continue  # a point from outside this space (the axes changed since)
            values = self.objective_values(row)
            attrs = {} if row.generation is None else {gen_key: row.generation}
            complete = values is not None
            self.study.add_trial(create_trial(
                params=index, distributions=self._dists, values=values,
                state=TrialState.COMPLETE if complete else TrialState.FAIL, system_attrs=attrs,
                constraints={"violated": self._violation(row)} if complete else None,
            ))
            if row.trial is not None:
                self.asked = max(self.asked, row.trial + 1)

    def objective_values(self, row: PointRow) -> list[float] | None:
        """Objective values of a stored point; None when it has none (never simulated)."""
        if row.metrics is None or row.status not in ("ok", "infeasible"):
            return None
        try:
            return [float(row.metrics[m]) for m, _ in self.sweep.objectives]
        except KeyError:
            return None

    def ask_generation(self) -> list[tuple[Any, dict[str, Value], str, int]]:
        """Up to one population of proposals: ``(trial, params, hash, generation)``."""
        batch = []
        for _ in range(min(self.strategy.population, self.remaining)):
            trial = self.study.ask()
            index = {key: trial.suggest_int(key, 0, len(vals) - 1)
                     if hasattr(self._dists[key], "low")
                     else trial.suggest_categorical(key, self._dists[key].choices)
                     for key, vals in self._values.items()}
            params = {key: self._values[key][i] for key, i in index.items()}
            # The generation the sampler gave this proposal, stored so a rebuild can restore it.
            frozen = self.study._storage.get_trial(trial._trial_id)
            generation = self._sampler.get_trial_generation(self.study, frozen)
            batch.append((trial, params, point_hash(params), generation))
            self.asked += 1
        return batch

    def tell(self, trial: Any, row: PointRow | None) -> None:
        """Report a proposal's stored outcome (None or no objective values: a failed trial)."""
        from optuna.trial import TrialState

        values = None if row is None else self.objective_values(row)
        if values is None or not all(math.isfinite(v) for v in values):
            self.study.tell(trial, state=TrialState.FAIL)
            return
        # NSGA-II ranks feasible points (constraint <= 0) before any infeasible one.
        trial.set_constraint("violated", self._violation(row))
        self.study.tell(trial, values)

    @staticmethod
    def _violation(row: PointRow) -> float:
        return 0.0 if row.status == "ok" else 1.0
