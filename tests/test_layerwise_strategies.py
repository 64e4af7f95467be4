"""DDPG (AMC/HAQ) and NetAdapt: budgets by construction, learning, monotone tightening, resume, and real searches."""

import numpy as np
import pytest
import torch

from autocompress.graph import ModelGraph
from autocompress.hardware import CostModel
from autocompress.hardware.profile import find_profile
from autocompress.models import create_model
from autocompress.search import SearchConfig, load_study, parse_budgets, records, search
from autocompress.search.budget import BudgetError, feasible
from autocompress.search.ddpg import DDPG, DDPGConfig, DDPGStrategy, ReplayBuffer, truncated_normal
from autocompress.search.layerwise import Layerwise
from autocompress.search.netadapt import NetAdaptConfig, NetAdaptStrategy
from autocompress.search.random_search import FeasibleRandomSearch
from autocompress.search.strategies import Strategy, make_strategy
from autocompress.search.study import TrialRecord
from autocompress.space import SearchSpace
from tests.helpers import roofline_profile


@pytest.fixture(scope="module")
def resnet_costs():
    """ResNet-20's joint space priced on the shipped ONNX Runtime profile of this CPU (a real measured table)."""
    graph = ModelGraph.from_model(create_model("resnet20"), (3, 32, 32))
    space = SearchSpace.from_yaml(graph, "resnet_cifar")
    return CostModel(find_profile("cpu-onnxruntime-1t"), space, model="resnet20")


@pytest.fixture(scope="module")
def lenet_costs():
    graph = ModelGraph.from_model(create_model("lenet5", input_size=28), (1, 28, 28))
    space = SearchSpace.from_yaml(graph, "lenet")
    profile = roofline_profile()
    return CostModel(profile, space)


def _budgets(costs, texts):
    return parse_budgets(texts, costs.reference().to_dict())


def _record(number, costs, candidate, accuracy, budgets=()):
    predicted = costs.predict_batch(costs.space.encoding.encode([candidate]))
    ok = bool(feasible(list(budgets), predicted)[0])
    return TrialRecord(number, candidate, {k: float(v[0]) for k, v in predicted.items()}, ok, True, accuracy,
                       "proxy", 1.0)


# -- layerwise view -------------------------------------------------------------------------------


def test_ladders_run_from_most_to_least_compressed(resnet_costs):
    lw = Layerwise(resnet_costs, _budgets(resnet_costs, ["latency<=0.5x"]))
    assert lw.steps[0].name == "scaling"  # global scaling first: it shapes every layer
    unit = next(s for s in lw.steps if s.name == "layer2.0.conv1")
    assert unit.dims == ("keep", "w_bits", "a_bits", "rank")
    for dim, col, ladder in zip(unit.dims, unit.columns, unit.ladders, strict=True):
        values = [resnet_costs.space.encoding.columns[col].values[i] for i in ladder]
        assert values == sorted(values), dim
        assert Layerwise.rung(ladder, 0.0) == ladder[0] and Layerwise.rung(ladder, 1.0) == ladder[-1]
        assert [Layerwise.position(ladder, Layerwise.rung(ladder, a)) for a in (0.0, 1.0)] == [0.0, 1.0]


def test_clip_keeps_a_feasible_wish_and_moves_an_infeasible_one(resnet_costs):
    loose = Layerwise(resnet_costs, _budgets(resnet_costs, ["latency<=5x"]))
    wanted = np.array([0.5, 1.0, 0.0, 1.0])
    t = next(i for i, s in enumerate(loose.steps) if s.name == "layer3.0.conv1")
    choice = loose.clip(loose.identity_row.copy(), t, wanted)
    step = loose.steps[t]
    assert [Layerwise.position(lad, c) for lad, c in zip(step.ladders, choice, strict=True)] == [0.5, 1.0, 0.0, 1.0]
    tight = Layerwise(resnet_costs, _budgets(resnet_costs, ["latency<=0.45x"]))  # the cheapest point: ~0.41x
    tight.check_start()
    choice = tight.clip(tight.identity_row.copy(), 0, np.ones(tight.action_dim))  # asks for no compression
    assert tight.admissible(tight.identity_row, 0, choice[None]).all()


def test_unreachable_budget_is_refused_up_front(resnet_costs):
    with pytest.raises(BudgetError, match="no compressed corner"):
        DDPGStrategy(resnet_costs, _budgets(resnet_costs, ["latency<=0.01x"]))


@pytest.mark.parametrize("name", ["random", "ddpg", "netadapt"])
def test_strategy_contract(lenet_costs, name):
    """What every strategy owes the engine: candidates of the space, and the same answer from the same history."""
    budgets = _budgets(lenet_costs, ["latency<=0.6x"])
    options = {"ddpg": {"warmup_episodes": 1, "batch_size": 4}, "netadapt": {"max_proposals": 2}}.get(name, {})

    def make():
        return make_strategy(name, lenet_costs, budgets, seed=5, options=options)

    strategy = make()
    assert isinstance(strategy, Strategy) and strategy.name == name
    history = []
    state = torch.random.get_rng_state()
    for number in range(4):
        candidate = strategy.propose(history)
        if candidate is None:
            break
        assert lenet_costs.space.contains(candidate)
        assert make().propose(history) == candidate  # rebuilt from the history alone
        history.append(_record(number, lenet_costs, candidate, 0.5 + 0.1 * number, budgets))
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is not touched
    with pytest.raises(ValueError, match="strategy_options"):
        make_strategy(name, lenet_costs, budgets, seed=0, options={"nope": 1})


def test_random_search_draws_only_feasible_candidates_uniformly(resnet_costs):
    budgets = _budgets(resnet_costs, ["latency<=0.7x"])
    search = FeasibleRandomSearch(resnet_costs, budgets, seed=0)
    proposals = [search.propose([None] * n) for n in range(12)]
    rows = resnet_costs.space.encoding.encode(proposals)
    assert feasible(budgets, resnet_costs.predict_batch(rows)).all()
    assert len({tuple(r) for r in rows}) == 12
    uniform = resnet_costs.space.encoding.random(2000, rng=1)
    assert feasible(budgets, resnet_costs.predict_batch(uniform)).mean() < 0.01  # what a plain sampler faces
    with pytest.raises(BudgetError, match="none of"):
        FeasibleRandomSearch(resnet_costs, _budgets(resnet_costs, ["latency<=0.2x"]), batch=1000,
                             max_draws=3000).propose([])


# -- DDPG pieces ----------------------------------------------------------------------------------


def test_replay_buffer_wraps_and_samples():
    buf = ReplayBuffer(5, state_dim=2, action_dim=1)
    for i in range(7):
        buf.add([i, i], [i / 10], float(i), [i + 1, i + 1], i == 6)
    assert buf.size == 5 and sorted(buf.rewards.tolist()) == [2, 3, 4, 5, 6]
    s, a, r, s2, done = buf.sample(32, np.random.default_rng(0))
    assert s.shape == (32, 2) and a.shape == (32, 1) and set(r.tolist()) <= {2, 3, 4, 5, 6}
    assert torch.allclose(s2, s + 1)


def test_truncated_normal_stays_inside_and_centres_on_the_mean():
    rng = np.random.default_rng(0)
    draws = np.array([truncated_normal(rng, np.array([0.5, 0.95]), 0.2) for _ in range(4000)])
    assert draws.min() >= 0 and draws.max() <= 1
    assert abs(draws[:, 0].mean() - 0.5) < 0.02
    assert draws[:, 1].mean() < 0.95  # truncation pulls a mean near the edge inwards, it does not pile at 1
    assert (draws[:, 1] == 1.0).sum() == 0


def test_ddpg_learns_the_best_action_of_a_bandit():
    """Reward -(a - 0.3)^2 in every state: the critic fits it and the actor moves to 0.3."""
    config = DDPGConfig(hidden=32, actor_lr=3e-3, critic_lr=3e-3, batch_size=64)
    agent = DDPG(state_dim=3, action_dim=1, config=config, seed=0)
    buf = ReplayBuffer(2000, 3, 1)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        s, a = rng.uniform(size=3), rng.uniform(size=1)
        buf.add(s, a, -float((a[0] - 0.3) ** 2), s, True)
    first = agent.update(buf.sample(64, rng))[0]
    for _ in range(800):
        loss, _ = agent.update(buf.sample(64, rng))
    assert loss < first / 5
    actions = [agent.act(rng.uniform(size=3))[0] for _ in range(20)]
    assert abs(np.mean(actions) - 0.3) < 0.08


@pytest.mark.parametrize("texts", [["latency<=0.5x"], ["latency<=0.45x"], ["latency<=0.6x", "size<=0.3x"],
                                   ["energy<=0.4x", "bitops<=0.2x"]])
def test_ddpg_never_emits_an_over_budget_candidate(resnet_costs, texts):
    budgets = _budgets(resnet_costs, texts)
    agent = DDPGStrategy(resnet_costs, budgets, config=DDPGConfig(warmup_episodes=4, batch_size=16), seed=1)
    history = []
    rng = np.random.default_rng(7)
    for number in range(12):  # warm-up (random actions), then the actor with noise and updates
        candidate = agent.propose(history)
        record = _record(number, resnet_costs, candidate, float(rng.uniform(0.3, 0.9)), budgets)
        assert record.feasible, (texts, number, record.costs)
        history.append(record)
    assert agent.episodes == 11 and agent.buffer.size == 11 * len(agent.layerwise.steps)
    rows = np.array([agent.rollout(np.random.default_rng(s), explore=s % 2 == 0) for s in range(8)])
    assert feasible(budgets, resnet_costs.predict_batch(rows)).all()


def test_ddpg_many_random_episodes_on_a_small_space(lenet_costs):
    for texts in (["latency<=0.5x"], ["energy<=0.3x", "size<=0.2x"], ["latency<=0.7x", "bitops<=0.1x"]):
        budgets = _budgets(lenet_costs, texts)
        agent = DDPGStrategy(lenet_costs, budgets, seed=0)
        rows = np.array([agent.rollout(np.random.default_rng(s)) for s in range(60)])
        assert feasible(budgets, lenet_costs.predict_batch(rows)).all(), texts
        assert len({tuple(r) for r in rows}) > 30  # exploration, not one corner over and over


def test_ddpg_rebuilds_itself_from_the_history(resnet_costs):
    budgets = _budgets(resnet_costs, ["latency<=0.5x"])
    config = DDPGConfig(warmup_episodes=2, batch_size=8)
    first = DDPGStrategy(resnet_costs, budgets, config=config, seed=3)
    history = []
    for number in range(5):
        history.append(_record(number, resnet_costs, first.propose(history), 0.5 + 0.05 * number, budgets))
    resumed = DDPGStrategy(resnet_costs, budgets, config=config, seed=3)  # a new process: only the study is left
    assert resumed.propose(history) == first.propose(history)
    assert resumed.baseline == pytest.approx(first.baseline)


# -- NetAdapt -------------------------------------------------------------------------------------


def _run_netadapt(costs, budgets, config=None, accuracy=None):
    strategy = NetAdaptStrategy(costs, budgets, config=config, reference_accuracy=0.9)
    history = []
    rng = np.random.default_rng(0)
    while (candidate := strategy.propose(history)) is not None:
        acc = accuracy(candidate) if accuracy else float(rng.uniform(0.5, 0.9))
        history.append(_record(len(history), costs, candidate, acc, budgets))
        assert len(history) < 400
    return strategy, history


@pytest.mark.parametrize("texts", [["latency<=0.5x"], ["latency<=0.7x", "size<=0.3x"]])
def test_netadapt_tightens_monotonically_and_stops_at_the_budget(resnet_costs, texts):
    budgets = _budgets(resnet_costs, texts)
    strategy, history = _run_netadapt(resnet_costs, budgets, NetAdaptConfig(max_proposals=3, step=0.15))
    family = strategy.family(history)
    assert len(family) >= 3
    metrics = np.array([[b.values({k: np.array([v]) for k, v in r.costs.items()})[0] for b in budgets]
                        for r in family])
    reference = np.array([b.limit / b.relative for b in budgets])
    path = np.vstack([reference, metrics])
    assert (np.diff(path, axis=0) <= 1e-9 * path[:-1]).all()  # no budget's metric ever goes up
    assert (np.diff(path[:, 0]) < 0).any()
    assert family[-1].feasible and not any(r.feasible for r in family[:-1])  # stops as soon as it holds
    assert strategy.propose(history) is None
    # every iteration fine-tunes at most max_proposals proposals, each at least as good as its targets
    for it in strategy.iterations(history)[0]:
        assert 1 <= len(it.proposals) <= 3
        assert it.picked is not None and it.picked.accuracy == max(
            r.accuracy for r in history
            if any(np.array_equal(strategy.layerwise.encoding.encode([r.candidate])[0], p) for p in it.proposals))


def test_netadapt_efficiency_selection_and_replay(resnet_costs):
    budgets = _budgets(resnet_costs, ["latency<=0.6x"])
    config = NetAdaptConfig(max_proposals=2, select="efficiency")
    lat = resnet_costs.reference().latency_ms

    def accuracy(candidate):  # smaller models lose accuracy, deterministically
        return 0.5 + 0.4 * resnet_costs.predict(candidate).latency_ms / lat

    strategy, history = _run_netadapt(resnet_costs, budgets, config, accuracy)
    assert strategy.family(history)[-1].feasible
    cut = len(history) // 2
    again = NetAdaptStrategy(resnet_costs, budgets, config=config, reference_accuracy=0.9)
    assert again.propose(history[:cut]) == history[cut].candidate  # picks up exactly where it stopped
    with pytest.raises(ValueError, match="select"):
        NetAdaptConfig(select="fastest")


# -- through the search engine, with real fine-tuning ------------------------------------------------


@pytest.mark.parametrize("strategy", ["random", "ddpg", "netadapt"])
def test_search_with_a_cost_model_strategy(tmp_path, strategy):
    profile = roofline_profile()
    path = str(profile.save(tmp_path / "roofline.json"))
    options = {"ddpg": {"warmup_episodes": 2, "batch_size": 8}, "netadapt": {"max_proposals": 2, "step": 0.2}}.get(
        strategy, {})
    n_trials = 12 if strategy == "netadapt" else 5
    config = SearchConfig(model="lenet5", data="mnist5k", profile=path, budgets=["latency<=0.6x"], n_trials=n_trials,
                          base_epochs=2, proxy_epochs=0.1, proxy_train_limit=256, proxy_eval_limit=200,
                          strategy=strategy, strategy_options=options, out=str(tmp_path / "run"),
                          cache_dir=str(tmp_path / "cache"), seed=0)
    result = search(config, progress=False)
    done = records(load_study(config.storage_path, config.study_name))
    evaluated = [r for r in done if r.evaluated]
    assert result.front and all(r.feasible for r in result.front)
    if strategy != "netadapt":
        assert len(evaluated) == 5 and all(r.feasible for r in done)  # nothing proposed over budget
    else:  # NetAdapt fine-tunes its over-budget steps too, and stops once the budget holds
        assert any(not r.feasible for r in evaluated) and evaluated[-1].feasible
        assert len(evaluated) < n_trials
    # resume: asking for more trials goes on from the stored ones
    more = search(SearchConfig(**{**config.to_dict(), "n_trials": len(evaluated) + 1}), progress=False)
    assert more.front
    with pytest.raises(ValueError, match="strategy_options"):
        search(SearchConfig(**{**config.to_dict(), "strategy_options": {"bogus": 1}}), progress=False)
