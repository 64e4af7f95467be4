"""``search(config)``: the whole job — data, reference model, space, profile, budgets, study — in one call.

Plain Python first: pass a ``SearchConfig`` (the same keys an experiment YAML
holds), or your own ``nn.Module``, ``ImageData`` and evaluation function. The
CLI is a thin layer that merges YAML with flags into a ``SearchConfig``.

Training the reference takes minutes (about 15 on CIFAR-10), so ``check``
first validates, in seconds, everything else a run needs on an untrained model
of the same architecture: the data spec, the space, the profile's coverage,
the budgets and the strategy's options. Its errors start with the field they
are about (``budgets: ...``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.base_model import build_model, trained_base_model
from autocompress.data import DataError, DataInfo, ImageData, load_data, probe_data
from autocompress.files import content_key, path_exists, read_json, write_json
from autocompress.graph import GraphError, ModelGraph
from autocompress.hardware import CostModel
from autocompress.hardware.profile import HardwareProfile, ProfileError, find_profile
from autocompress.models import ModelError, model_info
from autocompress.runtime.machine_check import MachineCheck, check_machine, memory_bound
from autocompress.search.budget import Budget, BudgetError, parse_budgets, with_margins
from autocompress.search.engine import (
    Evaluate,
    Progress,
    SearchRun,
    check_objective,
    create_study,
    pareto_front,
    reachability_probe,
    run_search,
    warm_start_candidates,
)
from autocompress.search.latency_check import latency_check
from autocompress.search.sensitivity import Sensitivity, compute_sensitivity
from autocompress.search.strategies import (
    DEFAULT_STRATEGY,
    Strategy,
    check_strategy,
    make_sampler,
    make_strategy,
    registered,
)
from autocompress.search.study import (
    ProposalCounts,
    StudyError,
    TrialRecord,
    check_config,
    open_storage,
    records,
)
from autocompress.search.workers import join_workers, start_workers, threads_per_worker
from autocompress.space import Candidate, CandidateError, SearchSpace, SpaceError
from autocompress.train import Evaluator, FitConfig, resolve_device
from autocompress.versions import versions

log = logging.getLogger(__name__)


#: where trials train: this machine's processes, or Ray Tune
BACKENDS = ("local", "ray")


class ConfigError(ValueError):
    """A SearchConfig field a run cannot use, where no more specific error (budget, space, ...) applies."""


def _require(name: str, value: Any, expected: str, ok: Callable[[float], bool], *, whole: bool = False) -> None:
    """ValueError naming the field unless ``value`` is a number (whole, if asked; finite) that is ``ok``."""
    number = isinstance(value, int) or (not whole and isinstance(value, float) and math.isfinite(value))
    if isinstance(value, bool) or not number or not ok(value):
        raise ValueError(f"{name}: expected {expected}, got {value!r}")


@dataclass
class SearchConfig:
    """Everything one search needs; the keys of an experiment YAML file."""

    model: str = "resnet20"
    data: str = "mnist5k"
    space: str | None = None  # default: the model's family space
    profile: str = "cpu-onnxruntime-1t"
    calibration: str | None = None  # the profile's calibration to price with; default: config.model's, for a
    # given nn.Module the pooled one (another model's calibration would misprice it)
    budgets: list[str] = field(default_factory=lambda: ["latency<=0.5x"])
    budget_margin: float = 0.0  # search latency/energy budgets this fraction under their limit (timing noise);
    # the export checks the true limit
    latency_check: bool = False  # time candidates near the latency budget first and aim the budget at what they
    # measured (autocompress.search.latency_check; on the profile's device only)
    objective: str = "pareto"  # "pareto" (accuracy vs costs) or "constrained" (max accuracy)
    objective_costs: list[str] = field(default_factory=lambda: ["latency_ms"])
    strategy: str = DEFAULT_STRATEGY  # or an Optuna sampler (tpe, nsga2, qmc), or random, ddpg, netadapt
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
    device: str = "cpu"  # where the reference, the proxy and the final fine-tunes train: cpu, cuda, cuda:N
    workers: int = 1  # trials trained at once: processes of this machine, or Ray workers (backend "ray")
    backend: str = "local"  # "local" (this machine's processes) or "ray" (Ray Tune, local or on a cluster)
    address: str | None = None  # backend "ray": a running cluster ("auto", "ray://host:10001"); else one is started
    cpus_per_trial: float = 1.0  # backend "ray": the resources each trial reserves
    gpus_per_trial: float = 0.0

    #: keys that must match when a stored study is resumed
    IDENTITY_KEYS = ("model", "data", "space", "profile", "calibration", "budgets", "budget_margin", "latency_check",
                     "objective", "objective_costs", "seed", "proxy_epochs", "proxy_train_limit", "proxy_eval_limit", "max_train")

    def __post_init__(self) -> None:
        check_objective(self.objective, self.objective_costs)
        registered(self.strategy)  # an unknown name fails here, naming the field
        if self.n_trials < 1:
            raise ValueError(f"n_trials: expected a positive number, got {self.n_trials}")
        if not isinstance(self.workers, int) or isinstance(self.workers, bool) or self.workers < 1:
            raise ValueError(f"workers: expected a positive whole number, got {self.workers!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {list(BACKENDS)}, got {self.backend!r}")
        if self.backend == "ray" and str(self.device).startswith("cuda") and not self.gpus_per_trial:
            raise ValueError("gpus_per_trial: the ray backend hides GPUs from a trial that reserves none; with "
                             f"device {self.device!r} give gpus_per_trial > 0 (e.g. 1, or 0.5 to share one)")
        for name in ("cpus_per_trial", "gpus_per_trial"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e6:
                raise ValueError(f"{name}: expected a number >= 0, got {value!r}")
        for name in ("base_epochs", "proxy_epochs", "final_epochs"):
            _require(name, getattr(self, name), "a finite number >= 0", lambda v: v >= 0)
        _require("budget_margin", self.budget_margin, "a fraction in [0, 1)", lambda v: 0 <= v < 1)
        self.budget_margin = float(self.budget_margin)  # 0 and 0.0 are one study
        for name in ("base_lr", "proxy_lr") + (("timeout_s",) if self.timeout_s is not None else ()):
            _require(name, getattr(self, name), "a finite number > 0", lambda v: v > 0)
        for name in ("max_train", "proxy_train_limit", "proxy_eval_limit", "max_filtered"):
            if getattr(self, name) is not None:
                _require(name, getattr(self, name), "a whole number >= 1", lambda v: v >= 1, whole=True)

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
    budgets: list[Budget]  # as the user set them: what the export checks
    reference: dict[str, float]
    machine: MachineCheck  # this machine against the profile's device (timed by prepare)

    @property
    def searched_budgets(self) -> list[Budget]:
        """The budgets the search aims at: measured ones ``config.budget_margin`` under their limit."""
        return with_margins(self.budgets, self.config.budget_margin)


@dataclass
class Checked:
    """What a run needs besides trained weights; the space and costs hold for the trained model too."""

    data: DataInfo | ImageData
    space: SearchSpace
    costs: CostModel
    budgets: list[Budget]
    reference: dict[str, float]


_FIELD_ERRORS = (BudgetError, CandidateError, DataError, GraphError, ModelError, ProfileError, SpaceError)


@contextmanager
def _field(name: str, value: str | None = None) -> Iterator[None]:
    """An error raised while checking a field starts with its name (and value); plain ValueErrors become
    ConfigError. The CLI reads the name to say which file or flag set the field."""
    prefix = f"{name}: " if value is None else f"{name}: {value}: "
    try:
        yield
    except (ValueError, TypeError) as exc:
        message = str(exc) if str(exc).startswith((f"{name}:", f"{name}.")) else prefix + str(exc)
        raise (type(exc) if isinstance(exc, _FIELD_ERRORS) else ConfigError)(message) from exc


def check(config: SearchConfig, *, model: nn.Module | None = None,
          data: ImageData | DataInfo | None = None) -> Checked:
    """Validate, in seconds and before any training, everything a run needs besides trained weights.

    The data spec is probed (shape and classes, not the images), the zoo model is
    built untrained, and the space, the profile's coverage of it (``CostModel``
    refuses missing signatures), the budgets (parsed against the uncompressed
    cost, and reachable by some candidate) and the strategy's options are checked.
    A given ``model`` needs ``config.space`` and is priced with the pooled
    calibration unless ``config.calibration`` names one. The training ``device``
    must parse and be available here (latency is priced for the profile either way).
    """
    with _field("device"):
        resolve_device(config.device)
    with _field("strategy_options"):
        check_strategy(config.strategy, config.strategy_options)
    if config.weights is not None and not path_exists(Path(config.weights).expanduser()):
        raise ModelError(f"weights: {config.weights}: no such file")
    with _field("profile"):
        profile = find_profile(config.profile)
    with _field("calibration"):
        calibration = _calibration(config, profile, given=model is not None)
    if data is None:
        with _field("data"):
            data = probe_data(config.data, cache_dir=config.cache_dir)
    if model is None:
        with _field("model"):
            model = build_model(config.model, data)
    elif config.space is None:
        raise SpaceError("space: a model given as an nn.Module needs a search space (SearchConfig.space: a YAML "
                         "path or a shipped name such as 'generic'); config.model names another architecture")
    with _field("model"):
        graph = ModelGraph.from_model(model, data.input_shape)
    with _field("space"):
        space = SearchSpace.from_yaml(graph, config.space or model_info(config.model).family)
    with _field("profile", config.profile):
        costs = CostModel(profile, space, model=calibration)
    reference = costs.reference().to_dict()
    with _field("budgets"):
        budgets = parse_budgets(config.budgets, reference)
        reachability_probe(costs, space, with_margins(budgets, config.budget_margin), config.seed)
    return Checked(data, space, costs, budgets, reference)


def _calibration(config: SearchConfig, profile: HardwareProfile, *, given: bool) -> str | None:
    """Whose calibration prices the model: the one named, else the zoo model's own, else (given module) pooled."""
    if config.calibration is None:
        return None if given else config.model
    names = {key.partition("@")[0] for key in profile.model_calibrations} | set(profile.model_calibrations)
    if config.calibration not in names:
        raise ProfileError(f"{config.calibration!r} is not one of the profile's calibrations "
                           f"{sorted(profile.model_calibrations)} (leave it unset for the pooled one)")
    return config.calibration


def prepare(config: SearchConfig, *, model: nn.Module | None = None, data: ImageData | None = None,
            progress: bool = True, machine: MachineCheck | None = None) -> SearchSetup:
    """``check`` the config, then load the data and train (or load) the reference model.

    ``machine``: this machine's check against the profile, when the caller has it (a worker of a driver that
    timed it); else it is timed here.
    """
    checked = check(config, model=model, data=data)
    if machine is None:
        machine = check_machine(checked.costs.profile, seed=config.seed)  # seconds, before loading or training
        if not machine.matches:
            log.warning(machine.warning(config.model))
        if machine.memory_off:  # loud only for a model whose latency follows memory
            reference = checked.costs.reference()
            (log.warning if memory_bound(reference.size_bytes, reference.macs) else log.info)(
                machine.memory_warning())
    if data is None:
        with _field("data"):
            data = load_data(config.data, seed=config.seed, max_train=config.max_train, cache_dir=config.cache_dir)
        if (data.input_shape, data.num_classes) != (checked.data.input_shape, checked.data.num_classes):
            checked = check(config, model=model, data=data)  # an image folder mixing grey and colour images
    if model is None:
        fit = FitConfig(epochs=config.base_epochs, lr=config.base_lr, warmup_steps=20, seed=config.seed,
                        progress=progress)
        model, info = trained_base_model(config.model, data, weights=config.weights, fit=fit,
                                         cache_dir=config.cache_dir, device=config.device)
    else:
        info = {"source": "given"}
    model.eval()
    return SearchSetup(config, data, model, info, checked.space, checked.costs, checked.budgets, checked.reference,
                       machine)


def default_evaluator(setup: SearchSetup, *, progress: bool = False) -> Evaluate:
    """Proxy fidelity: BN recalibration + a short distillation fine-tune on a subset, val accuracy."""
    return _scorer(setup, fine_tune_epochs=setup.config.proxy_epochs, progress=progress)


def _scorer(setup: SearchSetup, *, fine_tune_epochs: float, recalibrate_batches: int = 20,
            fidelity: str = "proxy", progress: bool = False) -> Evaluate:
    """(model, candidate) -> (accuracy, details): BN recalibration, an optional distillation fine-tune, val
    accuracy on the proxy's fixed subset, the candidate at its own input resolution."""
    c = setup.config
    evaluator = Evaluator(
        teacher=setup.base_model, data=setup.data, fidelity=fidelity, recalibrate_batches=recalibrate_batches,
        fit=FitConfig(epochs=fine_tune_epochs, lr=c.proxy_lr, seed=c.seed, progress=progress),
        train_limit=c.proxy_train_limit, eval_limit=c.proxy_eval_limit, device=c.device,
    )
    native = setup.data.input_shape[1]

    def evaluate(model: nn.Module, candidate: Candidate) -> tuple[float, dict[str, Any]]:
        size = setup.space.input_resolution(candidate)[0]
        result = evaluator(model, resolution=None if size == native else size)
        return result.accuracy, {"fidelity": result.fidelity, "fine_tune_steps": result.fine_tune_steps}
    return evaluate


#: the study attribute holding a search's sensitivity table (scored once, reused on resume)
SENSITIVITY_ATTR = "sensitivity"
#: batches of training images a sensitivity point's BatchNorm statistics are recalibrated on
SENSITIVITY_RECALIBRATE_BATCHES = 2


def sensitivity_cache_file(setup: SearchSetup, per_column: int) -> Path | None:
    """Where the table is kept across studies (None without a cache folder), named by a digest of all it is
    scored from: the reference's weights, the space's columns, the data and its split, the proxy's subsets, seed
    and device, and the versions. Another search of the same model, space and data (another budget, strategy
    or trial count) reads it instead of scoring it again: 326 models and 27 minutes for MobileNetV2 on 2 cores."""
    c = setup.config
    if not c.cache_dir:
        return None
    digest = hashlib.sha1()
    for tensor in setup.base_model.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    for labels in (setup.data.train_y, setup.data.val_y):  # which images each split holds, in order
        digest.update(labels.numpy().tobytes())
    record = {
        "weights_and_labels": digest.hexdigest(), "model": c.model, "data": setup.data.name,
        "input_shape": list(setup.data.input_shape), "per_column": per_column,
        "columns": [[col.owner, col.dim, list(col.values), col.offered.tolist()] for col in setup.space.encoding.columns],
        "eval_limit": c.proxy_eval_limit, "train_limit": c.proxy_train_limit, "seed": c.seed,
        "recalibrate_batches": SENSITIVITY_RECALIBRATE_BATCHES, "device": resolve_device(c.device).type,
        "versions": {k: v for k, v in versions().items() if k in ("autocompress", "torch")},
    }
    return Path(c.cache_dir) / f"sensitivity-{content_key(record)}.json"


def sensitivity_table(setup: SearchSetup, study, per_column: int, *, progress: bool = True) -> Sensitivity:
    """The study's per-layer sensitivity table: read back when stored, else read from the cache
    (:func:`sensitivity_cache_file`), else scored (BN recalibration on a few batches, no fine-tuning, the
    proxy's val subset) and cached; stored on the study either way, so a resumed search never looks again."""
    stored = study.user_attrs.get(SENSITIVITY_ATTR)
    if stored is not None:
        return Sensitivity.from_dict(stored, setup.space)
    cached = sensitivity_cache_file(setup, per_column)
    if cached is not None and path_exists(cached):
        try:
            table = Sensitivity.from_dict(read_json(cached, what="sensitivity table", error=ValueError), setup.space)
        except (ValueError, KeyError, TypeError) as exc:  # a cut or foreign file: scored again below, and replaced
            log.warning("%s: not a usable sensitivity table (%s); scoring it again", cached, exc)
        else:
            log.info("sensitivity: %d single-decision models read from the cache %s (scored in %.0f s by an "
                     "earlier search)", table.scored, cached, table.seconds)
            study.set_user_attr(SENSITIVITY_ATTR, table.to_dict())
            return table
    score = _scorer(setup, fine_tune_epochs=0.0, recalibrate_batches=SENSITIVITY_RECALIBRATE_BATCHES,
                    fidelity="sensitivity")
    table = compute_sensitivity(setup.base_model, setup.space, lambda m, c: score(m, c)[0],
                                per_column=per_column, progress=progress)
    study.set_user_attr(SENSITIVITY_ATTR, table.to_dict())
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            write_json(table.to_dict(), cached)
        except OSError as exc:  # a read-only cache costs the next search the scoring, not this one its table
            log.warning("could not cache the sensitivity table in %s: %s", cached, exc)
    return table


@dataclass
class SearchResult:
    front: list[TrialRecord]
    study_name: str
    storage: str
    reference: dict[str, float]
    budgets: list[str]
    base_info: dict[str, Any]
    proposals: ProposalCounts  # the whole study's: priced, feasible, over budget, duplicates


def search(
    config: SearchConfig,
    *,
    model: nn.Module | None = None,
    data: ImageData | None = None,
    setup: SearchSetup | None = None,
    evaluate: Evaluate | None = None,
    strategy: Strategy | None = None,
    on_trial=None,
    progress: bool = True,
    worker: int = 0,
) -> SearchResult:
    """Run (or resume) a search and return its feasible Pareto front.

    ``setup`` is what ``prepare(config)`` returned, for a caller that prepares first
    (to show the search's own progress apart from the reference's training).
    With ``config.workers`` > 1 this process drives: it starts the other workers
    (local processes, or Ray Tune trials with ``config.backend`` "ray") and trains
    too; ``worker`` is a local worker's index (its proposals' seed is
    ``config.seed + worker``; the study keeps ``config.seed``).
    """
    if setup is None:
        setup = prepare(config, model=model, data=data, progress=progress)
    elif setup.config != config or model is not None or data is not None:
        raise ValueError("search(): give a setup prepared from this config, or model/data, not both")
    if evaluate is not None and (config.workers > 1 or config.backend == "ray"):
        raise ConfigError("workers: a custom evaluate function runs in this process only; workers (and the ray "
                          "backend) score candidates with the default evaluator")
    searched = setup.searched_budgets
    run = SearchRun(budgets=tuple(searched), objective=config.objective,
                    objective_costs=tuple(config.objective_costs), n_trials=config.n_trials,
                    timeout_s=config.timeout_s, max_filtered=config.max_filtered)
    seed = config.seed + worker
    storage = open_storage(config.storage_path)
    try:
        study = create_study(storage, config.study_name, run, make_sampler(
            config.strategy, seed=seed, options=config.strategy_options))
    except Exception as exc:  # Optuna replays the journal here: a corrupted file fails in many ways
        raise StudyError(f"{config.storage_path}: cannot open study {config.study_name!r} (corrupted or "
                         f"not an autocompress study file; it was left as it is): {type(exc).__name__}: {exc}") from exc
    check_config(study, config.to_dict(), SearchConfig.IDENTITY_KEYS, defaults=SearchConfig().to_dict())
    if config.latency_check:  # timed once, before any training, and stored: a resumed search aims where it did
        searched = latency_check(setup, study, searched, seed=config.seed).aim(searched)
        run = dataclasses.replace(run, budgets=tuple(searched))
    if strategy is None:
        entry = registered(config.strategy)
        table = None
        if entry.sensitivity_values is not None:
            table = sensitivity_table(setup, study, entry.sensitivity_values(entry.parse(config.strategy_options)),
                                      progress=progress)
        strategy = make_strategy(config.strategy, setup.costs, searched, seed=seed,
                                 reference_accuracy=setup.base_info.get("val_accuracy"), sensitivity=table,
                                 pareto=config.objective == "pareto", objective_costs=config.objective_costs,
                                 options=config.strategy_options)
    warm = warm_start_candidates(setup.space) if config.warm_start and strategy is None else []
    warm = warm[worker % len(warm):] + warm[:worker % len(warm)] if warm else []  # workers start apart
    if worker == 0:
        study.set_user_attr("reference", setup.reference)
        study.set_user_attr("budgets_resolved", [str(b) for b in searched])
        study.set_user_attr("machine_check", setup.machine.to_dict())
        study.set_user_attr("base_model", json.loads(json.dumps(setup.base_info, default=str)))
    if config.backend == "ray":
        from autocompress.search.ray_backend import run_search_ray  # ray is an optional dependency

        front = run_search_ray(run, study=study, setup=setup, strategy=strategy, on_trial=on_trial, warm_start=warm)
    else:
        processes = []
        if worker == 0 and config.workers > 1:
            torch.set_num_threads(threads_per_worker(config.workers))
            processes = start_workers(setup, config.workers)
        try:
            front = run_search(run, study=study, costs=setup.costs, base_model=setup.base_model,
                               evaluate=evaluate or default_evaluator(setup), strategy=strategy, on_trial=on_trial,
                               warm_start=warm)
        finally:
            join_workers(processes)
        if processes:
            front = pareto_front(records(study), list(run.objective_costs))  # the workers' last trials too
    return SearchResult(front, config.study_name, config.storage_path, setup.reference,
                        [str(b) for b in searched], setup.base_info, ProposalCounts.of(records(study)))


__all__ = ["Checked", "ConfigError", "Progress", "SearchConfig", "SearchResult", "SearchSetup", "check",
           "default_evaluator", "prepare", "search"]
