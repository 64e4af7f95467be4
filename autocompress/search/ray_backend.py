"""The Ray Tune backend: candidates trained as Ray Tune trials, on this machine or a cluster.

Proposals still come from the search's own loop (``SearchLoop``): ``StudySearcher``
is a Ray Tune ``Searcher`` whose ``suggest`` claims the next candidate in the
study (proposed by our strategy or Optuna sampler, priced, filtered, looked up)
and whose ``on_trial_complete`` tells the study what training gave. So the study
file, resume, export, plots and the dashboard are those of a local run; Ray only
decides where a fine-tune runs. The set-up (data, reference, space, cost model)
reaches the workers once, through Ray's object store, so a cluster's nodes need
neither the data files nor the reference's weights.

Failures: Ray restarts a trial whose worker died (``FailureConfig(max_failures=1)``),
the same claim trained again; a trial that fails twice, or whose evaluation
raises or diverges, is recorded failed with its reason and the search goes on.
If the driver dies, its claims are failed and retried when the search is run
again, as in a local run.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from autocompress.search.engine import (
    Claim,
    SearchLoop,
    SearchRun,
    pareto_front,
    quiet_optuna,
    train_candidate,
)
from autocompress.search.study import TrialRecord, records
from autocompress.space import Candidate

log = logging.getLogger(__name__)


def _ray():
    try:
        import ray
        from ray import tune
        from ray.tune.search import ConcurrencyLimiter, Searcher
    except ImportError:
        raise ImportError("backend: 'ray' needs Ray Tune: python -m pip install -c constraints.txt "
                          "'autocompress[ray]'") from None
    return ray, tune, ConcurrencyLimiter, Searcher


def run_search_ray(run: SearchRun, *, study, setup, strategy=None, on_trial=None,
                   warm_start=()) -> list[TrialRecord]:
    """Train the search's candidates as Ray Tune trials, ``setup.config.workers`` at a time; the front."""
    ray, tune, ConcurrencyLimiter, Searcher = _ray()
    config = setup.config
    started_here = not ray.is_initialized()
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's tables off (verbose=0); our progress bar reports
    if started_here:
        cpus = None if config.address else max(1, int(config.workers * config.cpus_per_trial + 0.999))
        ray.init(address=config.address, num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        log.info("Ray: %s, resources %s", "joined " + config.address if config.address else "started locally",
                 ray.cluster_resources())
    try:
        with quiet_optuna(), SearchLoop(run, study, setup.costs, strategy, warm_start) as loop:
            searcher = _searcher_class(Searcher)(loop, on_trial)
            trainable = tune.with_resources(tune.with_parameters(train_trial, setup=setup),
                                            {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial})
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=config.workers),
                                            num_samples=-1, reuse_actors=True),
                run_config=tune.RunConfig(name=_safe(config.study_name), storage_path=str(Path(config.out).resolve()
                                                                                         / "ray"),
                                          failure_config=tune.FailureConfig(max_failures=1), verbose=0),
            )
            tuner.fit()
            if searcher.error is not None:
                raise searcher.error
    finally:
        if started_here:
            ray.shutdown()
    log.info("study %s: %d trained, %s", study.study_name, loop.progress.evaluated, loop.progress.proposals.summary())
    return pareto_front(records(study), loop.objective_costs)


def train_trial(params: dict[str, Any], setup) -> dict[str, Any]:
    """A Ray Tune trial: fine-tune and score one claimed candidate on a worker (the default evaluator)."""
    from autocompress.search.api import default_evaluator

    torch.set_num_threads(max(1, int(setup.config.cpus_per_trial)))
    candidate = Candidate.from_json(params["candidate"])
    try:
        accuracy, details, seconds = train_candidate(setup.base_model, candidate, setup.space,
                                                     default_evaluator(setup))
    except Exception as exc:  # the reason goes back to the study; Ray's own retry is for a dead worker
        return {"accuracy": float("nan"), "failed": f"{type(exc).__name__}: {exc}"}  # Tune wants the metric
    return {"accuracy": accuracy, "seconds": seconds, "details": json.dumps(details, default=str)}


def _searcher_class(Searcher: type) -> type:
    """``StudySearcher``, built on Ray's Searcher class (imported only when the backend is used)."""

    class StudySearcher(Searcher):
        """Ray Tune's view of a SearchLoop: ``suggest`` claims a candidate, ``on_trial_complete`` records it."""

        def __init__(self, loop: SearchLoop, on_trial=None):
            super().__init__(metric="accuracy", mode="max")
            self.loop, self.on_trial = loop, on_trial
            self.claims: dict[str, Claim] = {}
            self.error: Exception | None = None  # raised by the loop (a stalled sampler): re-raised after Ray

        def __getstate__(self) -> dict[str, Any]:
            """What Tune pickles into its experiment state: no loop (storage, sampler and heartbeat hold thread
            locks); the study is this searcher's state, and a resumed search reads it back."""
            return {**self.__dict__, "loop": None, "on_trial": None, "claims": {}}

        def save(self, checkpoint_path: str) -> None:
            """Nothing to save: the study is this searcher's state, and a resumed search reads it back."""

        def restore(self, checkpoint_path: str) -> None:
            """See ``save``."""

        def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
            if self.error is not None or self.loop.finished:
                return Searcher.FINISHED
            try:
                claim = self.loop.claim(wait=False)
            except Exception as exc:
                self.error = exc
                return Searcher.FINISHED
            if claim is None:  # finished, or the rest of the total is in flight: Ray asks again later
                return Searcher.FINISHED if self.loop.finished else None
            self.claims[trial_id] = claim
            return {"trial": claim.number, "candidate": claim.candidate.to_json()}

        def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False):
            claim = self.claims.pop(trial_id, None)
            if claim is None:
                return
            try:
                if error or not result or result.get("failed") or "details" not in result:
                    reason = (result or {}).get("failed") or "the Ray trial failed twice (its worker died or raised)"
                    self.loop.fail(claim, reason)
                    return
                record = self.loop.finish(claim, float(result["accuracy"]), json.loads(result["details"]),
                                          float(result["seconds"]))
            except Exception as exc:
                self.error = exc
                return
            if record is not None and self.on_trial is not None:
                self.on_trial(self.loop.progress, record)

    return StudySearcher


def _safe(name: str) -> str:
    """A study name as a directory name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)

