"""The search-start latency check for real: candidates near the budget timed here, the budget aimed, kept on resume."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from autocompress.search import SearchConfig, load_study, parse_budgets, prepare, records, search
from autocompress.search import latency_check as latency_check_module
from autocompress.search.budget import BudgetError
from autocompress.search.latency_check import (
    LATENCY_CHECK_ATTR,
    NEAR_BUDGET,
    LatencyCheck,
    check_latency,
    near_budget_candidates,
)
from tests.helpers import lenet_priced, measured_lenet_profile, on_profiles_device

REFERENCE = {"latency_ms": 2.0, "energy_mj": 0.5, "size_bytes": 4096.0, "macs": 1e6, "bitops": 1e9}


def test_an_aimed_budget_divides_the_latency_limit_and_says_so():
    latency, size = parse_budgets(["latency<=0.5x", "size_kb<=2"], REFERENCE)
    check = LatencyCheck(scale=1.25, note="timed", candidates=[{"candidate": {}}])
    aimed, same = check.aim([latency.with_margin(0.05), size])
    assert aimed.limit == pytest.approx(0.95 / 1.25) and aimed.scale == 1.25 and same is size
    assert str(aimed) == ("latency<=0.5x (= latency_ms <= 1, searched at 0.76: 0.05 under it, / 1.250, the ratio of "
                          "measured to predicted latency here)")
    assert LatencyCheck(scale=1.0, note="skipped").aim([latency]) == [latency]  # nothing timed: as priced
    with pytest.raises(BudgetError, match="positive and finite"):
        latency.aimed(0.0)


def test_near_budget_candidates_are_priced_just_under_the_budget_of_both_kinds():
    _, costs = lenet_priced()
    reference = costs.reference().to_dict()
    [budget] = parse_budgets(["latency<=0.6x"], reference)
    picked = near_budget_candidates(costs, [budget], 10, seed=0)
    assert len(picked) == len(set(picked)) >= 8
    predicted = costs.predict_batch(costs.space.encoding.encode(picked))
    latency = predicted["latency_ms"]
    assert np.all(latency >= NEAR_BUDGET[0] * budget.limit) and np.all(latency <= budget.limit * (1 + 1e-9))
    quantized = predicted["any_quant"] > 0
    assert 0 < quantized.sum() < len(picked)  # float and int8 candidates both


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("latency-check")
    profile, factor = measured_lenet_profile(tmp)
    config = SearchConfig(model="lenet5", data="mnist5k", profile=str(profile), budgets=[f"latency<={factor}x"],
                          n_trials=2, base_epochs=2, proxy_epochs=0.1, proxy_train_limit=256, proxy_eval_limit=200,
                          strategy="evolution", latency_check=True, out=str(tmp / "run"),
                          cache_dir=str(tmp / "cache"), seed=0)
    return config


def test_a_search_aims_at_what_candidates_near_the_budget_measured_and_keeps_it_on_resume(measured, monkeypatch):
    config = measured
    setup = on_profiles_device(config)
    result = search(config, setup=setup, progress=False)
    study = load_study(config.storage_path, config.study_name)
    stored = LatencyCheck.from_dict(study.user_attrs[LATENCY_CHECK_ATTR])
    assert stored.applied and len(stored.candidates) >= 4 and stored.seconds > 0
    ratios = [c["measured_vs_reference"] / c["predicted_vs_reference"] for c in stored.candidates]
    assert stored.scale == pytest.approx(float(np.median(ratios)))
    limit = setup.budgets[0].limit / stored.scale
    assert f"/ {stored.scale:.3f}" in result.budgets[0] and study.user_attrs["budgets_resolved"] == result.budgets
    assert all(t.costs["latency_ms"] <= limit * (1 + 1e-9) for t in records(study) if t.evaluated)
    # a resumed search aims where the first run did: the stored check, not a new timing
    monkeypatch.setattr(latency_check_module, "check_latency", lambda *a, **k: pytest.fail("timed again"))
    again = search(dataclasses.replace(config, n_trials=3), progress=False)
    assert again.budgets == result.budgets
    with pytest.raises(Exception, match="latency_check: study has True, now False"):
        search(dataclasses.replace(config, latency_check=False), progress=False)


def test_the_check_is_skipped_off_the_profiles_machine(measured):
    setup = prepare(measured, progress=False)
    elsewhere = dataclasses.replace(setup, machine=dataclasses.replace(setup.machine, same_cpu=False))
    check = check_latency(elsewhere, setup.budgets, seed=0)
    assert check.scale == 1.0 and not check.applied and "not the profile's device" in check.note
    assert check.aim(setup.budgets) == setup.budgets
