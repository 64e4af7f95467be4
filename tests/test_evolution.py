"""Sensitivity table, accuracy predictor and the predictor-guided evolution, on LeNet-5 and its real space."""

import numpy as np
import pytest
from optuna.storages import InMemoryStorage

from autocompress.search import SearchRun, parse_budgets, records, run_search
from autocompress.search.engine import create_study
from autocompress.search.evolution import EvolutionConfig, PredictorEvolution
from autocompress.search.predictor import AccuracyPredictor
from autocompress.search.sensitivity import Sensitivity, compute_sensitivity
from autocompress.search.strategies import make_sampler
from autocompress.search.study import ProposalCounts
from tests.helpers import lenet_priced


def _kept(model):
    total = sum(p.numel() for p in model.parameters())
    return lambda built, candidate: sum(p.numel() for p in built.parameters()) / total


@pytest.fixture(scope="module")
def lenet():
    model, costs = lenet_priced()
    table = compute_sensitivity(model, costs.space, _kept(model), per_column=2, progress=False)
    return model, costs, table


def test_sensitivity_scores_one_decision_at_a_time_and_interpolates_the_rest(lenet):
    model, costs, table = lenet
    encoding = costs.space.encoding
    assert table.reference_accuracy == 1.0  # the identity keeps every parameter
    assert 0 < table.scored <= 2 * len(encoding)
    for column, drops in zip(encoding.columns, table.drops, strict=True):
        assert len(drops) == len(column.values) and (drops >= 0).all()
        if column.dim == "keep" and len(column.ladder) > 2:
            # fewer channels keep fewer parameters: the drop grows along the ladder towards compression
            along = drops[column.ladder]
            assert (np.diff(along) <= 1e-9).all() and along[0] > 0
    # the prior of a row is the reference minus its columns' drops
    rows = encoding.random(5, rng=0)
    assert np.allclose(table.prior(rows), 1.0 - table.features(rows).sum(axis=1))
    again = Sensitivity.from_dict(table.to_dict(), costs.space)
    assert np.allclose(again.prior(rows), table.prior(rows), atol=1e-4)


def test_a_stored_table_of_another_space_is_refused(lenet):
    _, costs, table = lenet
    stored = table.to_dict()
    stored["drops"] = stored["drops"][:-1]
    with pytest.raises(ValueError, match="does not match this space"):
        Sensitivity.from_dict(stored, costs.space)


def test_the_predictor_learns_how_fine_tuning_rescales_the_prior(lenet):
    _, costs, table = lenet
    rows = costs.space.encoding.random(12, rng=1)
    truth = 0.5 + 0.4 * table.prior(rows)
    assert np.allclose(AccuracyPredictor.fit(table, rows[:2], truth[:2]).predict(rows), table.prior(rows))
    fitted = AccuracyPredictor.fit(table, rows, truth)
    assert np.allclose(fitted.predict(rows), truth, atol=1e-3)
    assert fitted.loo_rmse is not None and fitted.loo_rmse < 0.01


def test_evolution_proposes_inside_the_budget_never_twice_and_replays(lenet):
    model, costs, table = lenet
    run = SearchRun(budgets=parse_budgets(["latency<=0.5x"], costs.reference().to_dict()), objective="pareto",
                    n_trials=8)

    def search():
        study = create_study(InMemoryStorage(), "evolution", run, make_sampler("evolution", seed=0))
        strategy = PredictorEvolution(costs, run.budgets, table, config=EvolutionConfig(generations=3), seed=0)
        run_search(run, study=study, costs=costs, base_model=model, strategy=strategy,
                   evaluate=lambda built, candidate: (_kept(model)(built, candidate), {"fidelity": "size"}))
        return records(study), strategy

    done, strategy = search()
    counts = ProposalCounts.of(done)
    assert counts.priced == 8 and counts.duplicates == 0  # one priced proposal per trained, feasible one
    assert all(r.feasible and r.evaluated for r in done)
    assert len({r.candidate for r in done}) == 8
    # the uniform anchors come first: the largest uniform candidates that meet the budget
    assert [r.candidate for r in done[:len(strategy._anchors)]] == strategy._anchors
    assert [r.candidate for r in search()[0]] == [r.candidate for r in done]  # a function of history and seed


def test_evolution_options_are_checked():
    with pytest.raises(ValueError, match="targets"):
        EvolutionConfig(targets=(1.2,))
