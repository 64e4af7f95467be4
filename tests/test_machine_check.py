"""The machine check: the profile's anchor layers timed here, against its table (real ONNX Runtime sessions)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time

from autocompress.hardware.profile import HardwareProfile, find_profile, this_machine
from autocompress.runtime.machine_check import (
    TOLERANCE_PCT,
    Settler,
    WeightStream,
    check_machine,
    memory_bound,
    with_memory_probe,
)
from autocompress.search import SearchConfig, load_study, search


def _faked(tmp_path, speed: float) -> str:
    """The shipped ONNX Runtime profile claiming this CPU, with its anchors ``speed`` times as fast as they run
    here (timed first: VMs of one CPU name differ 2x): this machine then looks ``speed`` times slower than the
    profile's device."""
    shipped = find_profile("cpu-onnxruntime-1t")
    here = check_machine(shipped).speed_ratio  # this machine's anchors against the shipped table
    data = json.loads(shipped.model_dump_json())
    data["device"]["cpu"] = this_machine().cpu
    data["anchors"] = {key: value * here / speed for key, value in data["anchors"].items()}
    path = tmp_path / f"faked-{speed:g}.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_anchor_speed_ratio_follows_the_table(tmp_path):
    shipped = check_machine(find_profile("cpu-onnxruntime-1t"))
    faked = check_machine(HardwareProfile.load(_faked(tmp_path, 3.0)))
    assert shipped.anchors == faked.anchors == 4 and faked.seconds < 30
    assert 2.0 < faked.speed_ratio < 4.5  # the same layers, a table 3x faster than they run here
    assert faked.off_speed and not faked.matches and faked.same_cpu
    warning = faked.warning("lenet5")
    assert f"{faked.speed_ratio:.2f}x" in warning and f"±{TOLERANCE_PCT:g}%" in warning
    assert "autocompress profile measure --models lenet5 --out cpu-onnxruntime-1t-this-machine.json" in warning


def test_settle_waits_out_a_slow_spell_from_one_budget_but_not_another_machine(tmp_path):
    """The machine's speed cannot be ordered on a shared VM, so the waiting is driven by one real check with its
    speed ratio replaced, check by check: a slow spell is polled through until it passes or the budget is spent,
    a later stage (a validation's next round) shares the budget, another machine is not waited for. Then real
    checks: a table 3x this machine's speed is another machine, an analytic profile has nothing to time."""
    here = HardwareProfile.load(_faked(tmp_path, 1.0))
    real = check_machine(here)

    def checks(*ratios: float):
        queue = list(ratios)
        return lambda profile, seed: dataclasses.replace(real, speed_ratio=queue.pop(0))

    slept: list[float] = []
    settler = Settler(here, within_pct=10.0, wait_s=50.0, poll_s=20.0, sleep=slept.append,
                      check=checks(1.2, 1.15, 1.2, 1.0, 1.2))
    assert settler("start").speed_ratio == 1.2 and slept == [20.0, 20.0]  # the two polls that fit in 50 s
    assert settler("round 2").speed_ratio == 1.0 and slept == [20.0, 20.0]  # within 10%: no wait
    settler("round 3")
    assert slept == [20.0, 20.0] and settler.left_s == 10.0  # slow again, but the budget is spent
    assert [(c["stage"], c["speed_ratio"], c["waited_s"], c["slow"]) for c in settler.checks] == [
        ("start", 1.2, 40.0, True), ("round 2", 1.0, 0.0, False), ("round 3", 1.2, 0.0, True)]
    slept.clear()
    assert Settler(here, wait_s=50.0, poll_s=20.0, sleep=slept.append, check=checks(1.2, 1.05))().speed_ratio == 1.05
    assert slept == [20.0]  # settled after one poll
    assert Settler(here, wait_s=50.0, poll_s=20.0, sleep=slept.append, check=checks(2.0))().off_speed
    assert slept == [20.0]  # another machine: waiting would not bring it back
    other = Settler(HardwareProfile.load(_faked(tmp_path, 3.0)), within_pct=0.0, wait_s=50.0, poll_s=20.0,
                    sleep=slept.append)()
    assert slept == [20.0] and other.off_speed
    assert Settler(find_profile("analytic-45nm"), sleep=slept.append)().skipped and slept == [20.0]


def test_profiles_that_cannot_be_retimed_are_skipped_not_guessed():
    check = check_machine(find_profile("analytic-45nm"))
    assert check.speed_ratio is None and check.matches and "analytic" in check.skipped
    assert "not timed" in check.summary() and check.warning("resnet20") == ""


def test_a_search_on_another_machine_warns_in_its_first_seconds(tmp_path):
    """The CLI, as a user runs it, against a profile whose anchors say this machine is 4x slower: the warning
    and the re-profiling command come before the data is loaded or anything is trained."""
    cmd = [sys.executable, "-m", "autocompress.cli", "search", "--model", "lenet5", "--data", "mnist5k",
           "--profile", _faked(tmp_path, 4.0), "--budget", "latency<=0.6x", "--trials", "2",
           "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"), "--no-export"]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    seen: list[str] = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if "re-profile it" in line or "base model" in line or "loaded 'mnist5k'" in line:
                break
    finally:
        proc.kill()
        proc.wait()
    elapsed = time.monotonic() - start
    text = "".join(seen)
    assert "re-profile it" in text, text[-3000:]
    assert "loaded 'mnist5k'" not in text and "base model" not in text  # before any data or training
    assert "autocompress profile measure --models lenet5" in text and elapsed < 120


def test_the_study_records_the_check(tmp_path):
    """A real (tiny) search stores the check on its study, where export and reports read it."""
    config = SearchConfig(model="lenet5", data="mnist5k", profile=_faked(tmp_path, 1.0), budgets=["latency<=0.6x"],
                          n_trials=1, base_epochs=1, proxy_epochs=0.05, proxy_train_limit=128, proxy_eval_limit=100,
                          strategy="random", out=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"), seed=0)
    result = search(config, progress=False)
    study = load_study(result.storage, result.study_name)
    recorded = study.user_attrs["machine_check"]
    assert recorded["anchors"] == 4 and recorded["speed_ratio"] > 0 and recorded["profile"] == "cpu-onnxruntime-1t"


def _with_probe(tmp_path, pace: float) -> HardwareProfile:
    """The shipped ONNX Runtime profile with a memory probe recorded as if memory had run ``pace`` times as fast
    against compute when it was measured as it does here now."""
    shipped = find_profile("cpu-onnxruntime-1t")
    here = check_machine(shipped)
    recorded = with_memory_probe(shipped, here)
    assert recorded.memory_probe_ms == here.memory_probe_ms / here.speed_ratio
    path = tmp_path / f"probe-{pace:g}.json"
    recorded.model_copy(update={"memory_probe_ms": recorded.memory_probe_ms / pace}).save(path)
    return HardwareProfile.load(path)


def test_the_memory_probe_compares_memory_with_compute(tmp_path):
    """A real 16 MB probe beside the real anchors: against a record of its own pace it reads about 1; against a
    record 3x faster it reads about 3x, and the warning says models that miss the cache time off, not that the
    machine is another one."""
    assert WeightStream().weight_mb > 16
    unrecorded = check_machine(find_profile("cpu-onnxruntime-1t"))
    assert unrecorded.memory_probe_ms > 0 and unrecorded.memory_ratio is None
    assert unrecorded.memory_spread_pct >= 0
    # each check times the probe afresh; on a shared VM its pace moves up to ~60% between seconds (memory_state.py)
    same = check_machine(_with_probe(tmp_path, 1.0))
    assert 0.4 < same.memory_ratio < 2.5
    slow = check_machine(_with_probe(tmp_path, 3.0))
    assert 1.5 < slow.memory_ratio < 7.5 and slow.memory_off
    warning = slow.memory_warning()
    assert f"{slow.memory_ratio:.2f}x" in warning and "Linear head" in warning and "interleaved" in warning
    assert "memory probe" in slow.summary() and "re-profile" not in warning


def test_measuring_a_profile_records_its_memory_probe(tmp_path, capsys):
    from autocompress import cli
    from autocompress.cli_profile import describe_profile

    out = tmp_path / "lenet.json"
    assert cli.main(["profile", "measure", "--models", "lenet5", "--input-shape", "1x28x28", "--passes", "1",
                     "--rounds", "1", "--reps", "3", "--out", str(out)]) == 0
    profile = HardwareProfile.load(out)
    assert profile.memory_probe_ms > 0 and "memory probe" in capsys.readouterr().out
    assert f"memory probe: {profile.memory_probe_ms:.4f} ms" in describe_profile(profile)
    again = check_machine(profile)
    assert again.memory_ratio is not None and again.memory_ratio > 0


def test_only_models_that_read_many_weight_bytes_per_mac_count_as_memory_bound():
    """ResNet-20 priced on the shipped profile reuses each weight over whole maps; a 4096->512 Linear at batch 1
    reads four bytes per multiply-accumulate."""
    from autocompress.graph import ModelGraph
    from autocompress.hardware.cost_model import CostModel
    from autocompress.models import create_model
    from autocompress.space import SearchSpace

    graph = ModelGraph.from_model(create_model("resnet20").eval(), (3, 32, 32))
    costs = CostModel(find_profile("cpu-onnxruntime-1t"), SearchSpace.from_yaml(graph, "resnet_cifar")).reference()
    assert not memory_bound(costs.size_bytes, costs.macs)
    assert memory_bound(4096 * 512 * 4.0, 4096 * 512)
    assert not memory_bound(0.0, 0.0)


def test_the_probe_is_seeded_without_moving_the_callers_generator():
    """A search times the probe before it trains: building it must not change what the search's seed draws."""
    import torch

    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    probe = WeightStream(seed=3)
    assert torch.equal(torch.rand(3), expected)
    assert torch.equal(probe.layers[1].weight, WeightStream(seed=3).layers[1].weight)
