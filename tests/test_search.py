"""The search engine for real: Optuna studies on disk, trained models, a killed and resumed search."""

import copy
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from optuna.trial import TrialState

from autocompress.data import load_data
from autocompress.graph import ModelGraph
from autocompress.hardware import HOROWITZ_45NM, analytic_profile
from autocompress.search import (
    BudgetError,
    SearchConfig,
    SearchRun,
    load_study,
    parse_budget,
    parse_budgets,
    prepare,
    records,
    search,
)
from autocompress.search.engine import pareto_front
from autocompress.search.study import TrialRecord, study_names
from autocompress.space import Candidate, SearchSpace
from tests.helpers import zoo_model

REFERENCE = {"latency_ms": 2.0, "energy_mj": 0.5, "size_bytes": 4096.0, "macs": 1e6, "bitops": 1e9}


@pytest.fixture(scope="module")
def lenet_profile(tmp_path_factory):
    """An analytic profile: prices any signature, deterministic, no timing noise."""
    profile = analytic_profile(name="lenet-roofline", device="test", peak_macs_per_s={"fp32": 2e9, "int8": 8e9},
                               bandwidth_bytes_per_s=4e9, energy_table=HOROWITZ_45NM, layer_overhead_ms=0.003)
    return str(profile.save(tmp_path_factory.mktemp("profiles") / "lenet.json"))


def _config(tmp_path, profile, **kw):
    base = dict(model="lenet5", data="mnist5k", profile=profile, budgets=["latency<=0.6x"], n_trials=4,
                base_epochs=2, proxy_epochs=0.1, proxy_train_limit=256, proxy_eval_limit=200, strategy="nsga2",
                out=str(tmp_path / "run"), cache_dir=str(tmp_path.parent / "cache"), seed=0)
    base.update(kw)
    return SearchConfig(**base)


def test_budget_syntax_and_units():
    assert parse_budget("latency_ms<=2.5").limit == 2.5
    rel = parse_budget("latency<=0.5x", REFERENCE)
    assert rel.metric == "latency_ms" and rel.limit == 1.0 and rel.relative == 0.5
    kb = parse_budget("size_kb<=2")
    assert kb.values({"size_bytes": np.array([4096.0])})[0] == 4.0
    flops = parse_budget("flops<=1e6")
    assert flops.values({"macs": np.array([1e6])})[0] == 2e6
    assert len(parse_budgets(["latency<=0.5x,size_kb<=200", "energy_mj<=1"], REFERENCE)) == 3
    for bad, message in [("latency<0.5", "expected METRIC<=NUMBER"), ("speed_ms<=3", "unknown metric 'speed_ms'"),
                         ("latency<=2.5", "did you mean latency_ms"), ("size_kb<=-1", "must be positive"),
                         ("latency<=0x", "must be positive")]:
        with pytest.raises(BudgetError, match=message):
            parse_budget(bad, REFERENCE)
    with pytest.raises(BudgetError, match="needs the uncompressed model"):
        parse_budget("latency<=0.5x")


def test_a_margin_tightens_measured_budgets_only():
    latency, size = parse_budgets(["latency<=0.5x", "size_kb<=2"], REFERENCE)
    aimed = latency.with_margin(0.05)
    assert aimed.limit == pytest.approx(0.95) and aimed.margin == 0.05 and aimed.relative == 0.5
    assert str(aimed) == "latency<=0.5x (= latency_ms <= 1, searched at 0.95: 0.05 under it)"
    assert size.with_margin(0.05) is size  # counted exactly on the real model: no noise to leave room for
    assert latency.with_margin(0.0) is latency
    with pytest.raises(BudgetError, match="expected a fraction"):
        latency.with_margin(1.0)
    with pytest.raises(ValueError, match="budget_margin: expected a fraction"):
        SearchConfig(budget_margin=-0.1)


def test_search_run_names_the_study_objectives():
    run = SearchRun(objective="pareto", objective_costs=["latency_ms", "size_bytes"], n_trials=3)
    assert run.metric_names == ["accuracy", "latency_ms", "size_bytes"]
    assert run.directions == ["maximize", "minimize", "minimize"]
    assert run.values(0.9, {"latency_ms": 1.5, "size_bytes": 10.0, "macs": 7.0}) == [0.9, 1.5, 10.0]
    assert SearchRun(objective="constrained").metric_names == ["accuracy"]
    with pytest.raises(ValueError, match="objective: expected one of"):
        SearchRun(objective="fastest")
    with pytest.raises(ValueError, match="objective_costs: unknown cost 'speed'"):
        SearchRun(objective_costs=["speed"])


def test_pareto_front_keeps_only_non_dominated():
    c = Candidate({})
    trials = [TrialRecord(i, c, {"latency_ms": lat}, feas, True, acc, "proxy", 1.0)
              for i, (acc, lat, feas) in enumerate([(0.9, 1.0, True), (0.8, 2.0, True), (0.95, 3.0, True),
                                                    (0.99, 0.5, False), (0.9, 1.0, True)])]
    front = pareto_front(trials, ["latency_ms"])
    assert [t.number for t in front] == [0, 4, 2]  # 1 is dominated, 3 broke the budget


def test_search_filters_by_budget_and_records_everything(tmp_path, lenet_profile):
    config = _config(tmp_path, lenet_profile)
    result = search(config, progress=False)
    study = load_study(config.storage_path, config.study_name)
    done = records(study)
    evaluated = [t for t in done if t.evaluated]
    assert len(evaluated) == 4
    limit = next(iter(result.budgets))
    assert "latency<=0.6x" in limit
    limit_ms = 0.6 * result.reference["latency_ms"]
    for t in done:  # nothing over budget was trained; everything trained is within budget
        assert t.evaluated == t.feasible
        assert (t.costs["latency_ms"] <= 0.6 * result.reference["latency_ms"] + 1e-12) == t.feasible
    assert all(0 <= t.accuracy <= 1 for t in evaluated)
    assert result.front and all(t.feasible for t in result.front)
    # every trial rebuilds into the model it scored: the stored candidate is valid for the space
    setup = prepare(config, progress=False)
    for t in evaluated:
        setup.space.validate(t.candidate)
    assert study.user_attrs["config"]["model"] == "lenet5"
    # as optuna-dashboard shows it: named objectives, the budget as constraints, and only trained trials
    # complete (its Pareto plot); over-budget proposals and repeats pruned and marked
    assert study.metric_names == ["accuracy", "latency_ms"]
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert [t.number for t in complete] == [t.number for t in evaluated]
    assert all(t.values == [r.accuracy, r.costs["latency_ms"]] for t, r in zip(complete, evaluated, strict=True))
    assert {t.number for t in study.best_trials} <= {t.number for t in evaluated}
    filtered = study.get_trials(states=(TrialState.PRUNED,))
    assert len(filtered) == len(done) - len(evaluated)
    assert all(t.values is None for t in filtered)
    assert all(t.user_attrs["filtered"] == "over budget" for t in filtered if "duplicate_of" not in t.user_attrs)
    assert all(t.constraints == {"latency<=0.6x": pytest.approx(r.costs["latency_ms"] / limit_ms - 1)}
               for t, r in zip(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)), done, strict=True))


def test_a_budget_margin_searches_under_the_limit_and_is_part_of_the_study(tmp_path, lenet_profile):
    config = _config(tmp_path, lenet_profile, budget_margin=0.1, n_trials=3, strategy="evolution")
    result = search(config, progress=False)
    limit_ms = 0.6 * result.reference["latency_ms"]
    evaluated = [t for t in records(load_study(config.storage_path, config.study_name)) if t.evaluated]
    assert len(evaluated) == 3
    assert all(t.costs["latency_ms"] <= 0.9 * limit_ms * (1 + 1e-9) for t in evaluated)
    assert "searched at" in result.budgets[0] and "0.1 under it" in result.budgets[0]
    setup = prepare(config, progress=False)  # what the export checks: the limit as the user set it
    assert setup.budgets[0].limit == pytest.approx(limit_ms)
    assert setup.searched_budgets[0].limit == pytest.approx(0.9 * limit_ms)
    with pytest.raises(Exception, match="budget_margin: study has 0.1, now 0.0"):
        search(dataclasses.replace(config, budget_margin=0.0), progress=False)


def test_user_model_data_and_evaluation_function(tmp_path, lenet_profile):
    data = load_data("mnist5k", seed=0, max_train=500)
    model, _ = zoo_model("lenet5")
    seen = []

    def evaluate(built, candidate):
        seen.append(candidate)
        return 0.5, {"fidelity": "custom"}

    config = _config(tmp_path, lenet_profile, n_trials=3, strategy="random", space="lenet")  # a module needs one
    result = search(config, model=model, data=data, evaluate=evaluate, progress=False)
    assert len(seen) == 3 and all(t.fidelity == "custom" for t in result.front)


def test_infeasible_budget_states_the_cheapest_reachable_cost(tmp_path, lenet_profile):
    config = _config(tmp_path, lenet_profile, budgets=["latency_ms<=0.00001"])
    with pytest.raises(BudgetError, match=r"latency_ms<=0.00001: cheapest reachable \d"):
        search(config, progress=False)


def _cli(*args):
    return [sys.executable, "-m", "autocompress.cli", "search", *args]


def _cli_args(tmp_path, profile, trials):
    return ["--model", "lenet5", "--data", "mnist5k", "--profile", profile, "--budget", "latency<=0.6x",
            "--trials", str(trials), "--base-epochs", "2", "--proxy-epochs", "0.3", "--strategy", "tpe",
            "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path.parent / "cache"), "--no-export", "--quiet",
            "--seed", "1"]


def _evaluated(storage, name):
    try:
        return [t for t in records(load_study(storage, name)) if t.evaluated]
    except Exception:
        return []


def test_sigkill_then_resume_keeps_every_trial_once(tmp_path, lenet_profile):
    args = _cli(*_cli_args(tmp_path, lenet_profile, 6))
    storage = tmp_path / "run" / "study.journal"
    name = "lenet5-mnist5k-latency<=0.6x"
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and len(_evaluated(storage, name)) < 2:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {t.number: (t.candidate, t.accuracy) for t in _evaluated(storage, name)}
    assert 2 <= len(before) < 6

    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    after = _evaluated(storage, name)
    assert len(after) == 6
    assert len({t.number for t in after}) == 6
    for t in after:  # trials finished before the kill are kept as they were
        if t.number in before:
            assert (t.candidate, t.accuracy) == before[t.number]
    study = load_study(storage, name)
    assert all(t.state.name != "RUNNING" for t in study.trials)
    summary = json.loads((tmp_path / "run" / "front.json").read_text())
    assert summary["front"]


@pytest.mark.parametrize(("change", "message"), [
    (["--model", "resnet999"], "unknown model 'resnet999'"),
    (["--data", "mnist6k"], "mnist6k"),
    (["--profile", "no-such-profile"], "unknown hardware profile 'no-such-profile'"),
    (["--space", "no_such_space"], "unknown search space 'no_such_space'"),
    (["--budget", "latency<0.5"], "expected METRIC<=NUMBER"),
    (["--budget", "latency_ms<=0.000001"], "cheapest reachable"),
])
def test_bad_input_gets_a_clear_error(tmp_path, lenet_profile, change, message):
    args = _cli_args(tmp_path, lenet_profile, 1)
    flag, value = change
    if flag in args:  # replace the flag's value (budgets: the only budget)
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    done = subprocess.run(_cli(*args), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout[-1000:] + done.stderr[-1000:]
    assert message in done.stderr


def test_corrupted_study_file_is_reported_not_overwritten(tmp_path, lenet_profile):
    run = tmp_path / "run"
    run.mkdir()
    journal = run / "study.journal"
    journal.write_text("this is not a journal\n\x00\x01{{{\n")
    before = journal.read_text()
    done = subprocess.run(_cli(*_cli_args(tmp_path, lenet_profile, 1)), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "line 1 is not an Optuna journal record" in done.stderr
    assert journal.read_text() == before


def test_torn_last_record_is_cut_and_kept_aside(tmp_path, lenet_profile):
    run = tmp_path / "run"
    run.mkdir()
    journal = run / "study.journal"
    complete = '{"op_code": 0, "worker_id": "x", "study_name": "other", "directions": [1]}\n'
    journal.write_text(complete + '{"op_code": 5, "trunc')
    done = subprocess.run(_cli(*_cli_args(tmp_path, lenet_profile, 1)), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert journal.read_text().startswith(complete)
    assert (run / "study.journal.torn").read_text() == '{"op_code": 5, "trunc'
    assert "other" in study_names(journal)


def test_experiment_yaml_with_flag_overrides(tmp_path, lenet_profile):
    from autocompress.cli import DEFAULT_CACHE, load_experiment
    from autocompress.space import SpaceError

    exp = tmp_path / "exp.yaml"
    exp.write_text(f"model: lenet5\ndata: mnist5k\nprofile: {lenet_profile}\nbudgets: latency<=0.5x\nn_trials: 7\n")
    config = load_experiment(str(exp), {"n_trials": 3, "seed": 5})
    assert (config.model, config.n_trials, config.seed, config.budgets) == ("lenet5", 3, 5, ["latency<=0.5x"])
    assert config.cache_dir == str(DEFAULT_CACHE)  # neither the file nor a flag chose one
    exp.write_text(f"model: lenet5\ncache_dir: {tmp_path / 'here'}\n")
    assert load_experiment(str(exp), {"cache_dir": None}).cache_dir == str(tmp_path / "here")  # the file's
    assert load_experiment(str(exp), {"cache_dir": "flag"}).cache_dir == "flag"  # a flag wins
    exp.write_text("model: lenet5\ntrials: 7\n")
    with pytest.raises(SpaceError, match=r"exp.yaml: unknown field\(s\) \['trials'\]"):
        load_experiment(str(exp), {})
    exp.write_text("model: lenet5\nstrategy: tpee\n")
    with pytest.raises(SpaceError, match="strategy: unknown 'tpee'"):
        load_experiment(str(exp), {})
    exp.write_text("model: lenet5\nobjective: fastest\n")
    with pytest.raises(SpaceError, match=r"objective: expected one of \['pareto', 'constrained'\]"):
        load_experiment(str(exp), {})
    exp.write_text("# only a comment\n")  # empty: an error, never the quickstart's defaults
    with pytest.raises(SpaceError, match="exp.yaml: empty experiment file"):
        load_experiment(str(exp), {"n_trials": 3})


def test_evolution_scores_sensitivity_once_and_a_resumed_search_reuses_it(tmp_path, lenet_profile):
    """A real search (LeNet-5 trained on mnist5k, distillation proxy): the sensitivity table lands on the study,
    every proposal is feasible, and running the search again for more trials reads the table back."""
    data = load_data("mnist5k", seed=0, max_train=500)
    model, _ = zoo_model("lenet5")
    config = _config(tmp_path, lenet_profile, n_trials=3, strategy="evolution", space="lenet",
                     strategy_options={"generations": 2, "population": 8, "sensitivity_values": 1})
    first = search(config, model=model, data=data, progress=False)
    assert first.proposals.priced == first.proposals.feasible == 3 and first.proposals.duplicates == 0
    study = load_study(config.storage_path, config.study_name)
    table = study.user_attrs["sensitivity"]
    assert table["scored"] > 0 and len(table["drops"]) == len(SearchSpace.from_yaml(
        ModelGraph.from_model(model, data.input_shape), "lenet").encoding)
    again = search(dataclasses.replace(config, n_trials=5), model=model, data=data, progress=False)
    assert again.proposals.priced == 5 and again.proposals.feasible == 5
    assert load_study(config.storage_path, config.study_name).user_attrs["sensitivity"] == table


def test_a_new_search_of_the_same_model_space_and_data_reads_the_cached_sensitivity_table(tmp_path, lenet_profile,
                                                                                           caplog):
    """Another budget, another study: the table is read from the cache (the first search's, scoring time and
    all), while other weights are scored afresh; a cut cache file is scored again and replaced."""
    data = load_data("mnist5k", seed=0, max_train=500)
    model, _ = zoo_model("lenet5")
    config = _config(tmp_path, lenet_profile, n_trials=1, strategy="evolution", space="lenet",
                     cache_dir=str(tmp_path / "cache"), out=str(tmp_path / "first"),
                     strategy_options={"generations": 2, "population": 8, "sensitivity_values": 1})
    search(config, model=model, data=data, progress=False)
    table = load_study(config.storage_path, config.study_name).user_attrs["sensitivity"]
    [cached] = (tmp_path / "cache").glob("sensitivity-*.json")
    assert json.loads(cached.read_text()) == table

    def run(name, base=model):
        other = dataclasses.replace(config, out=str(tmp_path / name), budgets=["latency<=0.7x"])
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="autocompress.search.api"):
            search(other, model=base, data=data, progress=False)
        return load_study(other.storage_path, other.study_name).user_attrs["sensitivity"], caplog.text

    second, text = run("second")
    assert second == table and "read from the cache" in text  # the same seconds: not scored again
    retrained = copy.deepcopy(model)
    with torch.no_grad():
        next(retrained.parameters()).mul_(0.5)
    third, text = run("third", retrained)
    assert "read from the cache" not in text and third != table
    assert len(list((tmp_path / "cache").glob("sensitivity-*.json"))) == 2  # its own entry, the first's kept
    cached.write_text(cached.read_text()[:40])  # cut short, as by a full disk
    fourth, text = run("fourth")
    assert "not a usable sensitivity table" in text and fourth["scored"] == table["scored"]
    assert json.loads(cached.read_text()) == fourth  # replaced by the table scored again
