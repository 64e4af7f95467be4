"""A candidate is trained once per study: repeats reuse its result, are marked, bounded and counted (resume too)."""

import logging
from collections.abc import Sequence

import pytest
from optuna.storages import InMemoryStorage
from optuna.trial import TrialState

from autocompress.export.manifest import ExportError
from autocompress.export.select import select_trials
from autocompress.search import (
    SearchRun,
    SearchStalled,
    load_study,
    parse_budgets,
    prepare,
    records,
    run_search,
    search,
)
from autocompress.search.engine import create_study
from autocompress.search.strategies import enqueue_params, make_sampler
from autocompress.search.study import (
    DUPLICATE_OF,
    FILTERED,
    ProposalCounts,
    TrialRecord,
    is_filtered,
)
from autocompress.space import Candidate
from tests.helpers import lenet_priced
from tests.test_search import _config, lenet_profile  # noqa: F401  (a fixture, used by name)


class Replay:
    """A strategy that proposes a fixed sequence, the next one picked by the history's length (resumable)."""

    name = "replay"
    evaluates_over_budget = False

    def __init__(self, sequence: Sequence[Candidate]):
        self.sequence = list(sequence)

    def propose(self, history: Sequence[TrialRecord]) -> Candidate | None:
        return self.sequence[len(history)] if len(history) < len(self.sequence) else None


@pytest.fixture(scope="module")
def lenet():
    return lenet_priced()


def _kept(model):
    """A deterministic score without training: the fraction of parameters the built model keeps."""
    def evaluate(built, candidate):
        return sum(p.numel() for p in built.parameters()) / sum(p.numel() for p in model.parameters()), {}
    return evaluate


def _check_marked(study) -> list[int]:
    """COMPLETE trials are distinct candidates; every duplicate is pruned and names the trained trial it repeats."""
    by_number = {r.number: r for r in records(study)}
    complete = [t.number for t in study.get_trials(states=(TrialState.COMPLETE,))]
    assert len({by_number[n].candidate for n in complete}) == len(complete)
    duplicates = [r for r in by_number.values() if r.duplicate_of is not None]
    for r in duplicates:
        trial = study.trials[r.number]
        assert trial.state == TrialState.PRUNED and trial.user_attrs[DUPLICATE_OF] == r.duplicate_of
        assert not is_filtered(trial) and FILTERED not in trial.user_attrs  # NSGA-II does not see it
        assert r.duplicate_of in complete and by_number[r.duplicate_of].candidate == r.candidate
        assert not r.evaluated and r.accuracy is None and trial.values is None
    return [r.number for r in duplicates]


def test_a_repeated_candidate_is_trained_once_and_a_resume_keeps_counting(tmp_path, lenet_profile, caplog):  # noqa: F811
    config = _config(tmp_path, lenet_profile, n_trials=2)
    space = prepare(config, progress=False).space
    a, b, c = (space.uniform(keep=k, w_bits=8, a_bits=8) for k in (0.75, 0.5, 0.25))
    over = space.uniform(keep=1.0, w_bits=32, a_bits=32)  # the reference itself: over latency<=0.6x
    sequence = [a, over, a, b, a, c]

    first = search(config, strategy=Replay(sequence), progress=False)
    assert first.proposals == ProposalCounts(priced=4, feasible=2, filtered=1, duplicates=1)

    seen = []
    config.n_trials = 3  # the same study, resumed by a fresh strategy: it reads where it was from the history
    with caplog.at_level(logging.INFO, logger="autocompress.search.engine"):
        result = search(config, strategy=Replay(sequence), progress=False,
                        on_trial=lambda progress, record: seen.append((record.number, progress.proposals)))
    expected = ProposalCounts(priced=6, feasible=3, filtered=1, duplicates=2)
    assert result.proposals == expected and result.proposals.priced_per_feasible == 2.0
    assert seen == [(5, expected)]  # the progress bar's counters include the first run's proposals
    assert "6 proposals priced, 3 feasible (2.0 priced per feasible), 1 over budget, 2 duplicate(s)" in caplog.text

    study = load_study(config.storage_path, config.study_name)
    done = records(study)
    assert [r.candidate for r in done] == sequence
    assert [r.number for r in done if r.evaluated] == [0, 3, 5]  # a, b, c: each trained once
    assert _check_marked(study) == [2, 4] and {r.duplicate_of for r in done if r.duplicate_of is not None} == {0}
    assert not done[1].feasible and done[1].duplicate_of is None  # the over-budget one stays a filtered proposal
    assert ProposalCounts.of(done) == expected
    # the front and an export hold each model once; a duplicate is refused by number, its result is on trial 0
    assert {t.number for t in result.front} <= {0, 3, 5}
    assert len({t.candidate for t in result.front}) == len(result.front)
    assert select_trials(study, done, None, config.objective_costs) == result.front
    with pytest.raises(ExportError, match="trial 2 .* repeats trial 0.s candidate"):
        select_trials(study, done, [2], config.objective_costs)


def test_a_strategy_that_only_repeats_itself_ends_with_a_clear_error(lenet):
    model, costs = lenet
    run = SearchRun(budgets=parse_budgets(["latency<=0.7x"], costs.reference().to_dict()), n_trials=3,
                    max_duplicates=5)
    study = create_study(InMemoryStorage(), "stuck", run, make_sampler("random", seed=0))
    same = costs.space.uniform(keep=0.5, w_bits=8, a_bits=8)
    with pytest.raises(SearchStalled, match="the last 5 proposals within the budget.* repeated candidates already "
                                            "trained; 1 distinct candidate.* 3 asked for"):
        run_search(run, study=study, costs=costs, base_model=model, evaluate=_kept(model),
                   strategy=Replay([same] * 10))
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 1
    assert _check_marked(study) == [1, 2, 3, 4, 5]
    assert ProposalCounts.of(records(study)) == ProposalCounts(priced=6, feasible=1, duplicates=5)


@pytest.mark.parametrize("name", ["tpe", "nsga2"])
def test_optuna_samplers_keep_learning_past_enqueued_duplicates(lenet, name):
    """Duplicates among a sampler's own trials: told pruned, the sampler goes on to new candidates."""
    model, costs = lenet
    run = SearchRun(budgets=parse_budgets(["latency<=0.7x"], costs.reference().to_dict()), objective="pareto",
                    n_trials=6)
    options = {"tpe": {"n_startup_trials": 3}, "nsga2": {"population_size": 4}}[name]
    study = create_study(InMemoryStorage(), "enqueued", run, make_sampler(name, seed=1, options=options))
    same = costs.space.uniform(keep=0.5, w_bits=8, a_bits=8)
    for _ in range(3):
        study.enqueue_trial(enqueue_params(same, costs.space), skip_if_exists=False)
    seen = []
    run_search(run, study=study, costs=costs, base_model=model, evaluate=_kept(model),
               on_trial=lambda progress, record: seen.append(progress.proposals))
    done = records(study)
    assert [r.duplicate_of for r in done[:3]] == [None, 0, 0]
    assert sum(r.evaluated for r in done) == run.n_trials  # duplicates do not count towards n_trials
    assert set(_check_marked(study)) >= {1, 2}
    assert seen[-1] == ProposalCounts.of(done)
    assert seen[-1].feasible == run.n_trials and seen[-1].priced == len(done)
