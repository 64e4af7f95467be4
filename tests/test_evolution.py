"""Sensitivity table, accuracy predictor and the predictor-guided evolution, on LeNet-5 and its real space."""

import numpy as np
import pytest
from optuna.storages import InMemoryStorage

from autocompress.hardware import CostModel
from autocompress.search import SearchRun, parse_budgets, records, run_search
from autocompress.search.engine import create_study, warm_start_candidates
from autocompress.search.evolution import EvolutionConfig, PredictorEvolution
from autocompress.search.predictor import AccuracyPredictor
from autocompress.search.sensitivity import Sensitivity, compute_sensitivity
from autocompress.search.strategies import make_sampler
from autocompress.search.study import ProposalCounts
from autocompress.space import SearchSpace
from tests.helpers import lenet_priced, roofline_profile, zoo_model


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


def test_under_a_size_budget_the_anchors_take_low_bits_and_sparsity_where_they_fit_wider(lenet):
    model, costs, table = lenet
    space = costs.space
    budgets = parse_budgets(["size<=0.1x"], costs.reference().to_dict())
    anchors = PredictorEvolution(costs, budgets, table, seed=0)._anchors
    priced = costs.predict_batch(space.encoding.encode(anchors))
    assert (priced["size_bytes"] <= budgets[0].limit).all()  # every anchor fits

    def level(candidate):  # (keep, weight bits, sparsity) of the layers free in every dimension
        free = [u for u, dims in space.choices.items() if len(dims.get("w_bits", ())) > 2]
        values = {(candidate.layers[u].get("keep", 1.0), candidate.layers[u]["w_bits"], candidate.layers[u]["sparsity"])
                  for u in free}
        assert len(values) == 1  # uniform
        return values.pop()

    kinds = [level(a) for a in anchors if a.scaling in (None, anchors[0].scaling)]
    assert kinds[0][1] == 32 and kinds[1][1] == 8  # float and 8-bit first, as before
    lower = kinds[2:]
    assert lower and all(w < 8 or s > 0 for _, w, s in lower)
    # each lower storage level fits a wider model than every kind before it
    keeps = [k for k, _, _ in kinds]
    assert all(keeps[i] > max(keeps[:i]) for i in range(2, len(keeps)))


def test_relaxing_undoes_the_choices_that_buy_nothing_the_search_prices(lenet):
    model, costs, table = lenet
    space, reference = costs.space, costs.reference().to_dict()
    squeezed = space.uniform(keep=0.5, w_bits=4, a_bits=8, sparsity=0.5)
    rows = space.encoding.encode([squeezed])

    def relaxed(budget, objective_costs=("latency_ms",)):
        strategy = PredictorEvolution(costs, parse_budgets([budget], reference), table, seed=0,
                                      objective_costs=objective_costs)
        out = strategy._relax(rows)
        before, after = costs.predict_batch(rows), costs.predict_batch(out)
        # nothing the search limits or trades against costs more, and where latency is priced no float<->int8
        # switch is added
        assert ("boundaries" in strategy._guarded) == (budget.startswith("latency") or "latency_ms" in objective_costs)
        for name in strategy._guarded:
            assert after[name][0] <= before[name][0] * (1 + 1e-9)
        return space.encoding.decode(out[0]).layers

    # under a latency budget on a CPU profile, 4-bit weights run on the int8 kernels and zeros are not skipped:
    # the relaxed model is 8-bit and dense, at the same predicted latency, and keeps its pruning (that pays)
    for unit, dims in relaxed("latency<=0.9x").items():
        assert dims["sparsity"] == 0.0 and dims["w_bits"] == 8 and dims["a_bits"] == 8
        assert dims.get("keep", 0.5) == squeezed.layers[unit].get("keep", 0.5)
    # under a size budget the low bits and the zeros pay: nothing moves
    assert relaxed("size<=0.9x") == squeezed.layers
    # with only size priced (no cost objective), float activations are free: they store nothing
    assert all(d["a_bits"] == 32 and d["sparsity"] == 0.5 for d in relaxed("size<=0.9x", ()).values())


def test_filling_spends_the_slack_under_the_budget_until_no_single_move_fits(lenet):
    model, costs, table = lenet
    space, reference = costs.space, costs.reference().to_dict()
    strategy = PredictorEvolution(costs, parse_budgets(["latency<=0.8x"], reference), table, seed=0)
    rows = space.encoding.encode([space.uniform(keep=0.5, w_bits=8, a_bits=8), space.uniform(keep=0.25)])
    rng = np.random.default_rng(0)
    priced = costs.predict_batch

    def rungs(r):
        return np.stack([strategy._rungs[j][r[:, j]] for j in range(r.shape[1])], axis=1)

    for target in (1.0, 0.85):
        filled = strategy._fill(rows, rng, target)
        assert strategy._fits(filled, target).all()
        assert (strategy._usage(priced(filled)) > strategy._usage(priced(rows))).all()  # each row took slack back
        assert (rungs(filled) >= rungs(rows)).all()  # only ever up the ladders
        # a float layer between int8 ones adds conversions no per-layer table sees: filling never adds one
        assert (priced(filled)["boundaries"] <= priced(rows)["boundaries"]).all()
        for row in filled:  # at the ceiling: every one-notch-up neighbour is over the (scaled) budget or adds a switch
            ups = [j for j in range(len(row)) if strategy._up[j, row[j]] >= 0]
            neighbours = np.repeat(row[None], len(ups), axis=0)
            neighbours[np.arange(len(ups)), ups] = [strategy._up[j, row[j]] for j in ups]
            adds_switch = priced(neighbours)["boundaries"] > priced(row[None])["boundaries"][0]
            assert not (strategy._fits(neighbours, target) & ~adds_switch).any()
    # with filling off, rows pass through unchanged
    off = PredictorEvolution(costs, parse_budgets(["latency<=0.8x"], reference), table, seed=0,
                             config=EvolutionConfig(fill=False))
    assert (off._fill(rows, rng, 1.0) == rows).all()


def test_evolution_options_are_checked():
    with pytest.raises(ValueError, match="targets"):
        EvolutionConfig(targets=(1.2,))


def test_in_a_space_of_explicit_depth_and_resolution_anchors_and_warm_starts_take_every_scaling():
    _, graph = zoo_model("resnet20")
    space = SearchSpace.from_yaml(graph, "experiments/cifar10/resnet_cifar_depth_res.yaml")
    costs = CostModel(roofline_profile(), space)
    budgets = parse_budgets(["latency<=0.35x"], costs.reference().to_dict())
    flat = Sensitivity(reference_accuracy=1.0, drops=tuple(np.zeros(len(c.values)) for c in space.encoding.columns),
                       scored=0, seconds=0.0)
    anchors = PredictorEvolution(costs, budgets, flat, seed=0)._anchors
    priced = costs.predict_batch(space.encoding.encode(anchors))["latency_ms"]
    assert (priced <= budgets[0].limit * (1 + 1e-9)).all()
    scalings = {(a.depth, a.resolution) for a in anchors}
    assert {0.33, 0.66} <= {d for d, _ in scalings} and len(scalings) >= 4  # not only the trained depth and input
    warm = warm_start_candidates(space)
    assert {(c.depth, c.resolution) for c in warm} == {(s["depth"], s["resolution"]) for s in space.uniform_scalings()}
