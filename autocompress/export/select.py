"""Which trials an export takes: the study's feasible Pareto front, or the ones named (refused by number)."""

from __future__ import annotations

import numpy as np

from autocompress.export.manifest import ExportError
from autocompress.search.engine import pareto_front
from autocompress.search.study import TrialRecord


def select_trials(study, history: list[TrialRecord], trials: list[int] | None, costs: list[str]) -> list[TrialRecord]:
    """The feasible Pareto front of ``history`` (``trials`` None), or exactly the evaluated, feasible ``trials``."""
    if trials is None:
        front = pareto_front(history, costs)
        if not front:
            raise ExportError(f"study {study.study_name!r} has no evaluated trial that meets the budgets "
                              f"({len(history)} finished trial(s)): nothing to export")
        return front
    if not trials:
        raise ExportError("trials: give at least one trial number (or None for the Pareto front)")
    by_number = {t.number: t for t in history}
    all_trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    chosen = []
    for number in trials:
        if isinstance(number, bool) or not isinstance(number, int | np.integer):
            raise ExportError(f"trials: {number!r} is not a trial number")
        number = int(number)
        if number not in all_trials:
            span = f"0..{max(all_trials)}" if all_trials else "none"
            raise ExportError(f"trial {number} does not exist in study {study.study_name!r} (trials: {span})")
        record = by_number.get(number)
        if record is None:
            raise ExportError(f"trial {number} of study {study.study_name!r} was not evaluated "
                              f"(state {all_trials[number].state.name})")
        if not record.feasible:
            over = ", ".join(f"{k} {v:.4g}" for k, v in record.costs.items() if k in costs or k == "latency_ms")
            why = "an over-budget step, trained but never exported" if record.evaluated else "filtered, never trained"
            raise ExportError(f"trial {number} of study {study.study_name!r} broke a budget (predicted {over}): {why}")
        if record.duplicate_of is not None:
            raise ExportError(f"trial {number} of study {study.study_name!r} repeats trial {record.duplicate_of}'s "
                              f"candidate and was not trained again: export trial {record.duplicate_of}")
        if not record.evaluated or record.accuracy is None:
            raise ExportError(f"trial {number} of study {study.study_name!r} was not evaluated")
        if record not in chosen:
            chosen.append(record)
    return chosen
