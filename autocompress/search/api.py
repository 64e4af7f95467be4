"""``search(config)``: the whole job — data, reference model, space, profile, budgets, study — in one call.

Plain Python first: pass a ``SearchConfig`` (the same keys an experiment YAML
holds), or your own ``nn.Module``, ``ImageData`` and evaluation function. The
CLI is a thin layer that merges YAML with flags into a ``SearchConfig``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from autocompress.base_model import trained_base_model
from autocompress.data import ImageData, load_data
from autocompress.graph import ModelGraph
from autocompress.hardware import CostModel
from autocompress.hardware.profile import find_profile
from autocompress.models import model_info
from autocompress.search.budget import parse_budgets
from autocompress.search.engine import (
    COST_OBJECTIVES,
    Evaluate,
    Progress,
    create_study,
    reachability_probe,
    run_search,
    warm_start_candidates,
)
from autocompress.search.strategies import (
    COST_MODEL_STRATEGIES,
    STRATEGY_NAMES,
    Strategy,
    enqueue_params,
    make_strategy,
)
from autocompress.search.study import StudyError, TrialRecord, check_config, open_storage
from autocompress.space import Candidate, SearchSpace
from autocompress.train import Evaluator, FitConfig

log = logging.getLogger(__name__)


@dataclass
class SearchConfig:
    """Everything one search needs; the keys of an experiment YAML file."""

    model: str = "resnet20"
    data: str = "mnist5k"
    space: str | None = None  # default: the model's family space
    profile: str = "cpu-onnxruntime-1t"
    budgets: list[str] = field(default_factory=lambda: ["latency<=0.5x"])
    objective: str = "pareto"  # "pareto" (accuracy vs costs) or "constrained" (max accuracy)
    objective_costs: list[str] = field(default_factory=lambda: ["latency_ms"])
    strategy: str = "nsga2"  # an Optuna sampler (tpe, nsga2, qmc) or a strategy on the cost model (random, ddpg, netadapt)
    strategy_options: dict[str, Any] = field(default_factory=dict)  # ddpg / netadapt: DDPGConfig / NetAdaptConfig
    n_trials: int = 20
    timeout_s: float | None = None
    seed: int = 0
    out: str = "runs/search"
    study: str | None = None  # default: derived from model, data and budgets
    storage: str | None = None  # default: <out>/study.journal; or a database URL
    weights: str | None = None  # trained reference weights (weights_only=True); else trained and cached
    base_epochs: float = 15.0
    base_lr: float = 0.05
    proxy_epochs: float = 1.0
    proxy_lr: float = 0.01
    proxy_train_limit: int | None = None
    proxy_eval_limit: int | None = 500
    final_epochs: float = 4.0
    warm_start: bool = True  # first evaluate uniform candidates (same keep ratio and precision everywhere)
    max_filtered: int = 2000  # give up after this many over-budget proposals in a row
    max_train: int | None = None
    cache_dir: str | None = None

    #: keys that must match when a stored study is resumed
    IDENTITY_KEYS = ("model", "data", "space", "profile", "budgets", "objective", "objective_costs", "seed",
                     "proxy_epochs", "proxy_train_limit", "proxy_eval_limit", "max_train")

    def __post_init__(self) -> None:
        if self.objective not in ("pareto", "constrained"):
            raise ValueError(f"objective: expected 'pareto' or 'constrained', got {self.objective!r}")
        for name in self.objective_costs:
            if name not in COST_OBJECTIVES:
                raise ValueError(f"objective_costs: unknown cost {name!r}; expected some of {list(COST_OBJECTIVES)}")
        if self.strategy not in STRATEGY_NAMES:
            raise ValueError(f"strategy: unknown {self.strategy!r}; expected one of {list(STRATEGY_NAMES)}")
        if self.n_trials < 1:
            raise ValueError(f"n_trials: expected a positive number, got {self.n_trials}")

    @property
    def study_name(self) -> str:
        if self.study:
            return self.study
        text = f"{self.model}-{self.data}-{'-'.join(self.budgets)}"
        return re.sub(r"[^A-Za-z0-9_.=<>-]+", "_", text)[:120]

    @property
    def storage_path(self) -> str:
        return self.storage or str(Path(self.out) / "study.journal")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


@dataclass
class SearchSetup:
    """The pieces a search and an export share, rebuilt the same way from a config."""

    config: SearchConfig
    data: ImageData
    base_model: nn.Module
    base_info: dict[str, Any]
    space: SearchSpace
    costs: CostModel
    budgets: list
    reference: dict[str, float]


def prepare(config: SearchConfig, *, model: nn.Module | None = None, data: ImageData | None = None,
            progress: bool = True) -> SearchSetup:
    data = data or load_data(config.data, seed=config.seed, max_train=config.max_train, cache_dir=config.cache_dir)
    if model is None:
        fit = FitConfig(epochs=config.base_epochs, lr=config.base_lr, warmup_steps=20, seed=config.seed,
                        progress=progress)
        model, info = trained_base_model(config.model, data, weights=config.weights, fit=fit,
                                         cache_dir=config.cache_dir)
    else:
        info = {"source": "given"}
    model.eval()
    graph = ModelGraph.from_model(model, data.input_shape)
    space = SearchSpace.from_yaml(graph, config.space or _family(config.model))
    profile = find_profile(config.profile)
    costs = CostModel(profile, space, model=config.model)
    reference = costs.reference().to_dict()
    budgets = parse_budgets(config.budgets, reference)
    return SearchSetup(config, data, model, info, space, costs, budgets, reference)


def _family(model: str) -> str:
    return model_info(model).family


def default_evaluator(setup: SearchSetup, *, progress: bool = False) -> Evaluate:
    """Proxy fidelity: BN recalibration + a short distillation fine-tune on a subset, val accuracy."""
    c = setup.config
    evaluator = Evaluator(
        teacher=setup.base_model, data=setup.data, fidelity="proxy",
        fit=FitConfig(epochs=c.proxy_epochs, lr=c.proxy_lr, seed=c.seed, progress=progress),
        train_limit=c.proxy_train_limit, eval_limit=c.proxy_eval_limit,
    )
    native = setup.data.input_shape[1]

    def evaluate(model: nn.Module, candidate: Candidate) -> tuple[float, dict[str, Any]]:
        size = setup.space.input_resolution(candidate)[0]
        result = evaluator(model, resolution=None if size == native else size)
        return result.accuracy, {"fidelity": result.fidelity, "fine_tune_steps": result.fine_tune_steps}
    return evaluate


@dataclass
class SearchResult:
    front: list[TrialRecord]
    study_name: str
    storage: str
    reference: dict[str, float]
    budgets: list[str]
    base_info: dict[str, Any]


def search(
    config: SearchConfig,
    *,
    model: nn.Module | None = None,
    data: ImageData | None = None,
    evaluate: Evaluate | None = None,
    strategy: Strategy | None = None,
    on_trial=None,
    progress: bool = True,
) -> SearchResult:
    """Run (or resume) a search and return its feasible Pareto front."""
    setup = prepare(config, model=model, data=data, progress=progress)
    reachability_probe(setup.costs, setup.space, setup.budgets, config.seed)
    storage = open_storage(config.storage_path)
    try:
        study = create_study(storage, config.study_name, objective=config.objective,
                             objective_costs=config.objective_costs,
                             strategy=config.strategy, seed=config.seed)
    except Exception as exc:  # Optuna replays the journal here: a corrupted file fails in many ways
        raise StudyError(f"{config.storage_path}: cannot open study {config.study_name!r} (corrupted or "
                         f"not an autocompress study file; it was left as it is): {type(exc).__name__}: {exc}") from exc
    check_config(study, config.to_dict(), SearchConfig.IDENTITY_KEYS)
    if strategy is None and config.strategy in COST_MODEL_STRATEGIES:
        strategy = make_strategy(config.strategy, setup.costs, setup.budgets, seed=config.seed,
                                 reference_accuracy=setup.base_info.get("val_accuracy"),
                                 options=config.strategy_options)
    if config.warm_start and strategy is None and not study.trials:
        for candidate in warm_start_candidates(setup.space):
            study.enqueue_trial(enqueue_params(candidate, setup.space), skip_if_exists=True)
    study.set_user_attr("reference", setup.reference)
    study.set_user_attr("budgets_resolved", [str(b) for b in setup.budgets])
    study.set_user_attr("base_model", json.loads(json.dumps(setup.base_info, default=str)))
    front = run_search(
        base_model=setup.base_model, space=setup.space, costs=setup.costs, budgets=setup.budgets,
        evaluate=evaluate or default_evaluator(setup), study=study, objective=config.objective,
        objective_costs=config.objective_costs, n_trials=config.n_trials, timeout_s=config.timeout_s,
        strategy=strategy, on_trial=on_trial, seed=config.seed, max_filtered=config.max_filtered,
    )
    return SearchResult(front, config.study_name, config.storage_path, setup.reference,
                        [str(b) for b in setup.budgets], setup.base_info)


__all__ = ["Progress", "SearchConfig", "SearchResult", "SearchSetup", "default_evaluator", "prepare", "search"]
