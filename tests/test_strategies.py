"""The strategy registry: a contract every registered strategy meets, built by name, through the real search loop."""

import os
import subprocess

import optuna
import pytest
from optuna.storages import InMemoryStorage
from optuna.trial import TrialState

from autocompress.search import (
    SearchRun,
    check_strategy,
    parse_budgets,
    records,
    run_search,
    strategy_names,
)
from autocompress.search.engine import create_study
from autocompress.search.sensitivity import compute_sensitivity
from autocompress.search.strategies import (
    FilteredNSGAIISampler,
    Strategy,
    make_sampler,
    make_strategy,
    register_strategy,
    registered,
)
from autocompress.search.study import (
    DUPLICATE_OF,
    FILTERED,
    fail_stale_trials,
    is_filtered,
    open_storage,
    worker_id,
)
from tests.helpers import lenet_priced

#: options that keep each strategy small enough for a test
SMALL = {"ddpg": {"warmup_episodes": 1, "batch_size": 4}, "netadapt": {"max_proposals": 2, "step": 0.2},
         "nsga2": {"population_size": 4}, "tpe": {"n_startup_trials": 3}}


@pytest.fixture(scope="module")
def lenet():
    """LeNet-5, its shipped space, priced by an analytic profile (any signature, deterministic)."""
    return lenet_priced()


def _parameters(model):
    return sum(p.numel() for p in model.parameters())


def _kept_parameters(model):
    """The score of these tests: the fraction of parameters a built model keeps (deterministic, no training)."""
    return lambda built, candidate: (_parameters(built) / _parameters(model), {"fidelity": "size"})


def _table(name, model, costs):
    """The sensitivity table a strategy asks for (scored with the tests' score), else None."""
    if registered(name).sensitivity_values is None:
        return None
    score = _kept_parameters(model)
    return compute_sensitivity(model, costs.space, lambda m, c: score(m, c)[0], per_column=1, progress=False)


def _search(name, model, costs, run, seed=3):
    """One search from scratch with the strategy built by name; returns its study."""
    options = SMALL.get(name)
    study = create_study(InMemoryStorage(), "contract", run, make_sampler(name, seed=seed, options=options))
    strategy = make_strategy(name, costs, run.budgets, seed=seed, reference_accuracy=1.0, options=options,
                             sensitivity=_table(name, model, costs))
    run_search(run, study=study, costs=costs, base_model=model, strategy=strategy, evaluate=_kept_parameters(model))
    return study


@pytest.mark.parametrize("name", strategy_names())
def test_every_registered_strategy_proposes_candidates_of_the_space(lenet, name):
    model, costs = lenet
    run = SearchRun(budgets=parse_budgets(["latency<=0.7x"], costs.reference().to_dict()), objective="pareto",
                    n_trials=5)
    verbosity = optuna.logging.get_verbosity()
    study = _search(name, model, costs, run)
    assert optuna.logging.get_verbosity() == verbosity  # quiet while it ran, restored after
    done = records(study)
    evaluated = [r for r in done if r.evaluated]
    assert 1 <= len(evaluated) <= run.n_trials
    assert all(costs.space.contains(r.candidate) for r in done)
    built = make_strategy(name, costs, run.budgets, seed=0, options=SMALL.get(name),
                          sensitivity=_table(name, model, costs))
    if built is not None:  # None: the Optuna sampler proposes
        assert isinstance(built, Strategy) and built.name == name
        assert all(r.feasible for r in evaluated) or built.evaluates_over_budget
    # the study as optuna-dashboard reads it: named objectives, only trained trials have values
    assert study.metric_names == ["accuracy", "latency_ms"]
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert sorted(t.number for t in complete) == [r.number for r in evaluated]
    assert all(t.values[0] == r.accuracy for t, r in zip(complete, evaluated, strict=True))
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    # a pruned trial is an over-budget proposal (filtered, its violated budget as Optuna constraints) or
    # a repeat of a trained candidate, never trained again
    filtered = [t for t in pruned if DUPLICATE_OF not in t.user_attrs]
    assert all(is_filtered(t) and t.user_attrs[FILTERED] == "over budget" for t in filtered)
    assert all(max(t.constraints.values()) > 0 for t in filtered)
    assert all(t.user_attrs[DUPLICATE_OF] in {r.number for r in evaluated} for t in pruned if t not in filtered)
    assert len(pruned) == sum(not r.evaluated for r in done)
    # the same seed gives the same candidates
    assert [r.candidate for r in records(_search(name, model, costs, run))] == [r.candidate for r in done]


@pytest.mark.parametrize("name", strategy_names())
def test_options_are_checked_by_name_without_building_anything(name):
    parsed = check_strategy(name, SMALL.get(name))
    assert all(getattr(parsed, key) == value for key, value in SMALL.get(name, {}).items())
    with pytest.raises(ValueError, match=rf"strategy_options\.bogus: not an option of strategy '{name}'"):
        check_strategy(name, {"bogus": 1})


def test_option_errors_name_the_key_and_what_was_expected():
    with pytest.raises(ValueError, match=r"strategy_options\.population_size: Input should be a valid integer"):
        check_strategy("nsga2", {"population_size": "many"})
    with pytest.raises(ValueError, match=r"strategy_options\.select: expected 'accuracy' or 'efficiency'"):
        check_strategy("netadapt", {"select": "fastest"})
    with pytest.raises(ValueError, match=r"expected some of \['dims', 'warmup_episodes'"):
        check_strategy("ddpg", {"warmup": 3})
    with pytest.raises(ValueError, match="it takes none"):
        check_strategy("random", {"batch": 10})
    with pytest.raises(ValueError, match=r"strategy: unknown 'tpee'; expected one of \['ddpg'"):
        check_strategy("tpee")
    assert check_strategy("ddpg", {"dims": ["keep", "w_bits"]}).dims == ("keep", "w_bits")  # YAML lists


def test_a_strategy_is_registered_once_with_one_way_to_build_it():
    with pytest.raises(ValueError, match="already registered"):
        register_strategy("tpe", sampler=lambda options, seed: optuna.samplers.TPESampler(seed=seed))
    with pytest.raises(ValueError, match="either a sampler factory or a proposer builder"):
        register_strategy("both-or-none")


def test_nsga2_generations_count_filtered_proposals(lenet):
    """Filtered proposals are PRUNED, yet NSGA-II's generations move on: they rank behind by violation."""
    model, costs = lenet
    run = SearchRun(budgets=parse_budgets(["latency<=0.15x"], costs.reference().to_dict()), n_trials=2)  # 1 in 27
    study = _search("nsga2", model, costs, run)
    key = f"{FilteredNSGAIISampler.__name__}:generation"
    generations = [t.system_attrs[key] for t in study.trials]
    trained = len(study.get_trials(states=(TrialState.COMPLETE,)))
    assert trained < SMALL["nsga2"]["population_size"] < len(study.trials)
    assert max(generations) >= 1  # stock NSGA-II would wait for 4 trained trials in generation 0


def test_a_killed_workers_trial_is_failed_through_the_public_api(tmp_path):
    study = optuna.create_study(storage=open_storage(tmp_path / "study.journal"), study_name="stale")
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = study.ask()
    stale.set_user_attr("worker", worker_id().rsplit(":", 1)[0] + f":{dead.pid}")
    mine = study.ask()
    mine.set_user_attr("worker", worker_id())
    assert worker_id().endswith(f":{os.getpid()}")
    assert fail_stale_trials(study) == 1
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.RUNNING]
