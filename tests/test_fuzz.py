"""Fuzzing what users hand autocompress: every bad input ends in one line naming the file, never a traceback.

Valid seeds -- the shipped search spaces and hardware profiles, an experiment, budget strings, the study journal
of a real search, a zip of images -- are mutated (truncated, bit-flipped, spliced with unicode or random bytes,
values swapped for wrong types, huge numbers, NaN/inf or nested values, fields dropped or added, entry names with
path tricks) and fed to the real entry points in this process. A mutation that is still valid may succeed;
anything else must exit 2 with ``autocompress: error: FILE ...`` on one line, and the input keeps its bytes.
Cases hypothesis found are kept below each target as explicit examples.
"""

from __future__ import annotations

import copy
import json
import math
import stat
import struct
import tempfile
import warnings
import zipfile
import zlib
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image

from autocompress import cli
from autocompress.data import DataError, load_data, probe_data
from autocompress.hardware import CostModel, accelerator_model, accelerator_profile
from autocompress.hardware.profile import find_profile
from autocompress.search import SearchConfig, check
from autocompress.search.budget import BudgetError, parse_budgets
from autocompress.space.spec import shipped_spaces_dir
from tests.helpers import roofline_profile, shipped_space, zoo_model

#: deterministic (CI reruns the same cases), no deadline (a first call imports and builds), few examples each:
#: the whole file runs in about half a minute on two cores
FUZZ = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
#: the model each shipped space file is written for
SPACE_MODELS = {"lenet": "lenet5", "generic": "lenet5", "resnet_cifar": "resnet20",
                "mobilenetv2": "mobilenetv2_cifar", "efficientnet": "efficientnet_b0_tiny"}
#: lists nested just deeper than the parsers recurse (PyYAML takes about a second to get there)
DEEP = "[" * 1100 + "]" * 1100


# -- how a run must end --------------------------------------------------------------------------------------


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    """``autocompress ARGV`` in this process: exit code and stderr (stdout is dropped)."""
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *names: str, any_of: tuple[str, ...] = ()) -> str:
    """Exit code 2 and one stderr line ``autocompress: error: ...`` holding every name and one of ``any_of``."""
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("autocompress: error: "), (code, err)
    for name in names:
        assert name in lines[0], (name, lines[0])
    if any_of:
        assert any(name in lines[0] for name in any_of), (any_of, lines[0])
    return lines[0]


def fresh(tmp_path: Path) -> Path:
    """A new folder for one generated example (hypothesis runs many in one test's tmp_path)."""
    return Path(tempfile.mkdtemp(dir=tmp_path))


def contents(path: Path) -> bytes | None:
    """The file's bytes; None for a folder, or a name too long to be a file."""
    try:
        return path.read_bytes()
    except OSError:
        return None


def write(folder: Path, name: str, data: bytes | str) -> Path:
    path = folder / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# -- mutations -----------------------------------------------------------------------------------------------


def _flip(seed: bytes, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(seed)
    for position, bit in flips:
        out[position] ^= 1 << bit
    return bytes(out)


def byte_mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    """The seed emptied, truncated, bit-flipped, or spliced with unicode, random bytes or deep nesting."""
    n = len(seed)
    pieces = st.one_of(st.text(min_size=1, max_size=20).map(str.encode), st.binary(min_size=1, max_size=20),
                       st.sampled_from([b"[" * 1100, b"{" * 1100, b"9" * 5000, b"\x00", b"\xff\xfe", b"\n"]))
    return st.one_of(
        st.just(b""),
        st.integers(0, n - 1).map(lambda k: seed[:k]),
        st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 7)), min_size=1, max_size=8).map(
            lambda flips: _flip(seed, flips)),
        st.tuples(st.integers(0, n), pieces).map(lambda p: seed[:p[0]] + p[1] + seed[p[0]:]),
    )


#: field names with a line break are left to the CLI's one-line guarantee (see test_a_line_break_*)
KEYS = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=12)
HUGE = [10**30, -(10**30), 2**63, 2**64 + 1, 10**400, 1e308, -1e308, 5e-324, 1e-300]


def fuzz_values(text: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Any]:
    """Wrong types, huge numbers, NaN/inf, unicode, and lists and mappings of those."""
    text = st.text(max_size=30) if text is None else text
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from(HUGE),
                        st.floats(allow_nan=True, allow_infinity=True), text)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=3),
                        max_leaves=8)


def _places(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in a JSON-like value, outermost first."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    out = []
    for key, inner in items:
        out.append((*prefix, key))
        out.extend(_places(inner, (*prefix, key)))
    return out


def _at(value: Any, path: tuple) -> Any:
    for key in path:
        value = value[key]
    return value


@st.composite
def value_mutations(draw, seed: Any, values: st.SearchStrategy[Any] | None = None) -> tuple[Any, tuple[str, ...]]:
    """(mutated copy of ``seed``, the field names along the path mutated): one value replaced by a fuzz value,
    one key or item dropped, or one added."""
    values = fuzz_values() if values is None else values
    data = copy.deepcopy(seed)
    path = draw(st.sampled_from(_places(data)))
    parent, key = _at(data, path[:-1]), path[-1]
    action = draw(st.sampled_from(["replace", "replace", "drop", "add"]))
    if action == "replace":
        parent[key] = draw(values)
    elif action == "drop":
        del parent[key]
    elif isinstance(parent, dict):
        new = draw(KEYS.filter(lambda k: k not in parent))
        parent[new] = draw(values)
        path = (*path[:-1], new)
    else:
        parent.insert(key, draw(values))
    return data, tuple(str(k) for k in path if isinstance(k, str))


def dump_yaml(data: Any) -> bytes:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode()


def dump_json(data: Any) -> bytes:
    return json.dumps(data, indent=1, ensure_ascii=False).encode()


# -- 1. search-space YAML: `autocompress space --space FILE` -------------------------------------------------

SPACE_SEEDS = {p.stem: p.read_bytes() for p in sorted(shipped_spaces_dir().glob("*.yaml"))}


def check_space(capsys, path: Path, stem: str = "lenet", fields: tuple[str, ...] = ()) -> str | None:
    before = contents(path)
    code, err = run_cli(capsys, "space", "--model", SPACE_MODELS[stem], "--data", "mnist5k", "--space", str(path))
    assert contents(path) == before
    return None if code == 0 else assert_one_line_error(code, err, str(path), any_of=fields)


@FUZZ
@given(stem=st.sampled_from(sorted(SPACE_SEEDS)), data=st.data())
def test_fuzzed_space_bytes(tmp_path, capsys, stem, data):
    path = write(fresh(tmp_path), f"{stem}.yaml", data.draw(byte_mutations(SPACE_SEEDS[stem])))
    check_space(capsys, path, stem)


@FUZZ
@given(stem=st.sampled_from(sorted(SPACE_SEEDS)), data=st.data())
def test_fuzzed_space_values(tmp_path, capsys, stem, data):
    mutated, fields = data.draw(value_mutations(yaml.safe_load(SPACE_SEEDS[stem])))
    check_space(capsys, write(fresh(tmp_path), f"{stem}.yaml", dump_yaml(mutated)), stem, fields)


LENET_SPACE = SPACE_SEEDS["lenet"].decode()


@pytest.mark.parametrize(("text", "message"), [
    (b"\xa3" + SPACE_SEEDS["lenet"], "not UTF-8 text (byte 0 is b'\\xa3')"),
    ("name: x\ndefaults: {keep: [0.5\n", "not valid YAML: line 3, column 1: expected ',' or ']'"),
    (f"name: x\ndefaults: {DEEP}\n", "nested too deeply to read"),
    ("name: x\nchannel_divisor: " + "9" * 5000 + "\n", "Exceeds the limit (4300 digits)"),
    (LENET_SPACE.replace("mode: none", "mode: compound\n  phi: [1.0e+308]"), "field scaling.phi: phi=1e+308"),
    (LENET_SPACE.replace("mode: none", "mode: compound\n  phi: [-1.0e+308]"),
     "field scaling.phi: phi=-1e+308 takes a multiplier out of range"),
    (LENET_SPACE.replace("mode: none", "mode: compound\n  phi: [.nan]"), "Input should be a finite number (got nan)"),
    (LENET_SPACE.replace("mode: none", "mode: compound\n  phi: [-1]\n  gamma: .inf"), "field scaling.gamma"),
    (LENET_SPACE.replace("mode: none", "mode: compound\n  phi: [" + "1" * 400 + "]"), "expected finite exponents"),
], ids=["latin-1", "yaml-error", "deep", "digits", "phi-overflow", "phi-underflow", "phi-nan", "gamma-inf",
        "phi-huge-int"])
def test_space_files_found_by_fuzzing(tmp_path, capsys, text, message):
    path = write(tmp_path, "space.yaml", text)
    assert message in check_space(capsys, path)


def test_space_path_tricks(tmp_path, capsys):
    (tmp_path / "folder.yaml").mkdir()
    assert "folder.yaml: a folder, not a search-space file" in check_space(capsys, tmp_path / "folder.yaml")
    long = tmp_path / ("x" * 300 + ".yaml")  # longer than a file name may be
    assert "no such search-space file" in check_space(capsys, long)
    assert "unknown search space" in check_space(capsys, Path("y" * 300))


# -- 2. hardware profile JSON: `autocompress profile show FILE` and pricing with it ---------------------------


@pytest.fixture(scope="module")
def profile_seeds(tmp_path_factory) -> dict[str, Path]:
    """Small profiles of each kind: analytic roofline, accelerator model, a measured table cut to 30 entries."""
    folder = tmp_path_factory.mktemp("profile-seeds")
    measured = find_profile("cpu-onnxruntime-1t")
    measured = measured.model_copy(update={"entries": dict(list(measured.entries.items())[:30]),
                                           "validation": measured.validation[:2]})
    profiles = {"roofline": roofline_profile(), "measured": measured,
                "bitfusion": accelerator_profile(accelerator_model("bitfusion"), name="bf", device="test",
                                                 command="test")}
    return {name: p.save(folder / f"{name}.json") for name, p in profiles.items()}


def check_profile(capsys, path: Path, fields: tuple[str, ...] = ()) -> str | None:
    before = contents(path)
    code, err = run_cli(capsys, "profile", "show", str(path))
    assert contents(path) == before
    return None if code == 0 else assert_one_line_error(code, err, str(path), any_of=fields)


@FUZZ
@given(data=st.data())
def test_fuzzed_profile_bytes(tmp_path, capsys, profile_seeds, data):
    name = data.draw(st.sampled_from(sorted(profile_seeds)))
    seed = profile_seeds[name].read_bytes()
    check_profile(capsys, write(fresh(tmp_path), f"{name}.json", data.draw(byte_mutations(seed))))


@FUZZ
@given(data=st.data())
def test_fuzzed_profile_values(tmp_path, capsys, profile_seeds, data):
    name = data.draw(st.sampled_from(sorted(profile_seeds)))
    mutated, fields = data.draw(value_mutations(json.loads(profile_seeds[name].read_bytes())))
    check_profile(capsys, write(fresh(tmp_path), f"{name}.json", dump_json(mutated)), fields)


@FUZZ
@given(data=st.data())
def test_fuzzed_profile_prices_or_says_which(tmp_path, capsys, monkeypatch, profile_seeds, data):
    """A mutated profile that loads is then priced: the search's checks refuse it in one line or pass."""
    name = data.draw(st.sampled_from(sorted(profile_seeds)))
    mutated, _ = data.draw(value_mutations(json.loads(profile_seeds[name].read_bytes())))
    folder = fresh(tmp_path)
    path = write(folder, f"{name}.json", dump_json(mutated))
    check_experiment(capsys, monkeypatch, folder, experiment_seed(folder), f"--profile={path}",
                     fields=(str(path), "budgets: "))  # or the experiment's weights folder stops it


def test_profile_files_found_by_fuzzing(tmp_path, capsys, profile_seeds):
    roofline = profile_seeds["roofline"].read_text()
    cases = {"latin1": b"\xe9" + roofline.encode(), "deep": roofline.replace('"entries": {}', f'"entries": {DEEP}'),
             "digits": roofline.replace('"threads": 1', '"threads": ' + "9" * 5000),
             "nan": roofline.replace('"offset_ms": 0.0', '"offset_ms": NaN'),
             "inf": roofline.replace('"bandwidth_bytes_per_s": 4000000000.0', '"bandwidth_bytes_per_s": Infinity'),
             "no terms": roofline.replace('"sum_float_ms": 1.0,\n   "sum_quant_ms": 1.0', "")}
    messages = {"latin1": "not UTF-8 JSON (byte 0 is b'\\xe9')", "deep": "nested too deeply to read",
                "digits": "Exceeds the limit (4300 digits)", "nan": "field calibration.offset_ms",
                "inf": "field roofline.bandwidth_bytes_per_s",
                "no terms": "field calibration.coefficients: Dictionary should have at least 1 item"}
    for name, text in cases.items():
        assert text != roofline, name  # the seed's layout has the text replaced
        assert messages[name] in check_profile(capsys, write(tmp_path, f"{name}.json", text)), name
    (tmp_path / "folder.json").mkdir()
    assert "no such profile file" in check_profile(capsys, tmp_path / "folder.json")
    assert "no such profile file" in check_profile(capsys, tmp_path / ("x" * 300 + ".json"))


# -- 3. experiment YAML: `autocompress search EXPERIMENT --no-export` -----------------------------------------

#: experiment strings never name an absolute path or climb out of the example's folder (a run writes into `out`)
SAFE_TEXT = st.text(alphabet=st.characters(blacklist_characters="/\\~", blacklist_categories=("Cs",)), max_size=30)


def experiment_seed(folder: Path) -> dict[str, Any]:
    """A LeNet-5 search that stops before training: its reference weights are a folder, which no mutation makes
    loadable (it is the first key, so no truncation keeps the rest without it); a dropped or renamed `weights`
    trains a fraction of an epoch."""
    (folder / "weights").mkdir(exist_ok=True)
    return {"weights": str(folder / "weights"), "profile": "analytic-45nm", "model": "lenet5", "data": "mnist5k",
            "base_epochs": 0.02, "max_train": 200, "proxy_epochs": 0.01, "budgets": ["latency<=0.9x"],
            "strategy": "random", "n_trials": 1, "seed": 0, "out": "run", "warm_start": False}


def check_experiment(capsys, monkeypatch, folder: Path, experiment: dict[str, Any] | bytes,
                     *flags: str, fields: tuple[str, ...] = ()) -> str | None:
    """``search EXPERIMENT --no-export`` run in ``folder``: one error line naming the file or a field, or success."""
    data = dump_yaml(experiment) if isinstance(experiment, dict) else experiment
    path = write(folder, "experiment.yaml", data)
    monkeypatch.chdir(folder)  # a relative `out` lands in the example's folder
    code, err = run_cli(capsys, "search", str(path), "--no-export", "--quiet", "--cache-dir", str(folder / "cache"),
                        *flags)
    assert path.read_bytes() == data
    return None if code == 0 else assert_one_line_error(code, err, any_of=(str(path), *fields))




@FUZZ
@given(data=st.data())
def test_fuzzed_experiment_bytes(tmp_path, capsys, monkeypatch, data):
    folder = fresh(tmp_path)
    check_experiment(capsys, monkeypatch, folder, data.draw(byte_mutations(dump_yaml(experiment_seed(folder)))))


@FUZZ
@given(data=st.data())
def test_fuzzed_experiment_values(tmp_path, capsys, monkeypatch, data):
    folder = fresh(tmp_path)
    mutated, fields = data.draw(value_mutations(experiment_seed(folder), fuzz_values(SAFE_TEXT)))
    check_experiment(capsys, monkeypatch, folder, mutated, fields=fields)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("space", "{tmp}/space-dir", "space: {tmp}/space-dir: a folder, not a search-space file"),
    ("profile", "{tmp}/profile-dir.json", "profile: {tmp}/profile-dir.json: no such profile file"),
    ("budgets", ["latency_ms<=1e999"], "budgets: budget 'latency_ms<=1e999': the limit must be positive and finite"),
    ("data", "imagefolder:" + "d" * 300, "data: imagefolder:ddd"),
    ("data", "npz:~no-such-user/x.npz", "data: npz:~no-such-user/x.npz: no such file or directory"),
])
def test_experiment_fields_found_by_fuzzing(tmp_path, capsys, monkeypatch, field, value, message):
    (tmp_path / "space-dir").mkdir()
    (tmp_path / "profile-dir.json").mkdir()
    value = value.format(tmp=tmp_path) if isinstance(value, str) else value
    line = check_experiment(capsys, monkeypatch, tmp_path, experiment_seed(tmp_path) | {field: value})
    assert f"{tmp_path / 'experiment.yaml'}: {message.format(tmp=tmp_path)}" in line, line


def test_a_data_spec_that_is_not_text(tmp_path):
    """A YAML number or list as `data`: refused by the data loaders (and by the search's checks) in words."""
    for spec in (5, ["imagefolder:x"], None):
        with pytest.raises(DataError, match=r"data spec .*: expected text, one of mnist5k"):
            probe_data(spec)
        with pytest.raises(DataError, match="expected text"):
            load_data(spec)
    with pytest.raises(DataError, match=r"^data: data spec 5: expected text"):
        check(SearchConfig(model="lenet5", data=5, profile="analytic-45nm"))


def _experiment_cases(folder: Path) -> dict[str, bytes]:
    seed = experiment_seed(folder)
    (folder / "a-file").write_text("")
    return {"not UTF-8": b"\xa3" + dump_yaml(seed), "YAML error": b"model: [lenet5\n",
            "keys of two types": b"1: a\nfoo: b\n", "deep": ("model: " + DEEP).encode(),
            "out: 5": dump_yaml(seed | {"out": 5}),
            "out is a file": dump_yaml(seed | {"out": str(folder / "a-file")}),
            "weights: []": dump_yaml(seed | {"weights": []}),
            "base_epochs: nan": dump_yaml(seed | {"base_epochs": math.nan}),
            "base_epochs: -1": dump_yaml(seed | {"base_epochs": -1.0}),
            "weights: long name": dump_yaml(seed | {"weights": "/" + "w" * 300})}


@pytest.mark.parametrize("case", ["not UTF-8", "YAML error", "keys of two types", "deep", "out: 5", "out is a file",
                                  "weights: []", "base_epochs: nan", "base_epochs: -1", "weights: long name"])
def test_experiment_files_found_by_fuzzing(tmp_path, capsys, monkeypatch, case):
    folder = fresh(tmp_path)
    check_experiment(capsys, monkeypatch, folder, _experiment_cases(folder)[case])


def test_a_line_break_in_a_name_stays_on_one_line(tmp_path, capsys):
    """A file name (or a YAML key) holding a line break must not split the error line."""
    code, err = run_cli(capsys, "space", "--model", "lenet5", "--space", str(tmp_path / "two\nlines.yaml"))
    assert "lines.yaml: no such search-space file" in assert_one_line_error(code, err)


def test_a_weights_file_that_is_not_a_state_dict(tmp_path, capsys, monkeypatch):
    weights = write(tmp_path, "weights.pt", b"not a state dict")
    check_experiment(capsys, monkeypatch, tmp_path, experiment_seed(tmp_path) | {"weights": str(weights)})


# -- 4. budget strings: parse_budgets against LeNet-5's reference costs, and the --budget flag ----------------

BUDGET_SEEDS = ["latency<=0.5x", "latency_ms<=2.5", "energy_mj<=1,size_kb<=200", "flops<=2e7", "bitops<=1e9",
                "size<=0.25x", "macs<=0.5x", "energy<=0.7x"]
NUMBERS = st.sampled_from(["1e999", "-1e999", "nan", "inf", "1e-400", "0", "-0", "0x10", "1_000", "1e308",
                           "1.7976931348623157e308", "4.9e-324", "..", "1e", "+", "-", "e5", ".5", "5."])


@pytest.fixture(scope="module")
def lenet_reference() -> dict[str, float]:
    _, graph = zoo_model("lenet5")
    return CostModel(find_profile("analytic-45nm"), shipped_space("lenet5", graph)).reference().to_dict()


@st.composite
def budget_texts(draw) -> Any:
    seed = draw(st.sampled_from(BUDGET_SEEDS))
    kind = draw(st.sampled_from(["bytes", "number", "text", "value"]))
    if kind == "bytes":
        return draw(byte_mutations(seed.encode())).decode("utf-8", errors="replace")
    if kind == "number":
        metric = seed.partition("<=")[0]
        return f"{metric}<={draw(NUMBERS)}{draw(st.sampled_from(['', 'x', 'X', ' x']))}"
    if kind == "text":
        return draw(st.text(max_size=40))
    return draw(fuzz_values())


@FUZZ
@given(text=budget_texts())
def test_fuzzed_budgets_parse_or_say_which(lenet_reference, text):
    try:
        budgets = parse_budgets(text if isinstance(text, list) else [text], lenet_reference)
    except BudgetError as exc:
        message = str(exc)
        assert len(message.splitlines()) == 1 and message.startswith("budget"), message
        return
    for budget in budgets:
        assert math.isfinite(budget.limit) and budget.limit > 0, budget


@FUZZ
@given(text=budget_texts().filter(lambda t: isinstance(t, str)))
def test_fuzzed_budget_flag(tmp_path, capsys, monkeypatch, text):
    folder = fresh(tmp_path)
    check_experiment(capsys, monkeypatch, folder, experiment_seed(folder), f"--budget={text}",
                     fields=("budgets: ",))  # or the experiment's weights folder stops it


def test_a_relative_budget_on_a_reference_priced_below_zero():
    """LeNet-5's pooled calibration on the shipped eager-mode CPU profile predicts a negative latency: a relative
    budget on it used to make every candidate infeasible ("no candidate meets"); it is now refused, saying why."""
    _, graph = zoo_model("lenet5")
    reference = CostModel(find_profile("cpu-torch-eager-1t"), shipped_space("lenet5", graph)).reference().to_dict()
    assert reference["latency_ms"] < 0
    with pytest.raises(BudgetError, match=r"latency_ms on this profile is -\d.*give an absolute limit"):
        parse_budgets(["latency<=0.5x"], reference)
    with pytest.raises(BudgetError, match="no energy_mj figure"):
        parse_budgets(["energy<=0.5x"], reference | {"energy_mj": None})
    assert [b.limit for b in parse_budgets("latency_ms<=2", reference)] == [2.0]  # one text, not its characters


# -- 5. study journals: `autocompress export RUN_DIR` ---------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real two-trial LeNet-5 search priced on the analytic profile, not exported."""
    root = tmp_path_factory.mktemp("study-seed")
    code = cli.main(["search", "--model", "lenet5", "--data", "mnist5k", "--profile", "analytic-45nm",
                     "--budget", "latency<=0.9x", "--trials", "2", "--base-epochs", "0.05", "--proxy-epochs",
                     "0.02", "--max-train", "300", "--strategy", "random", "--out", str(root / "run"),
                     "--cache-dir", str(root / "cache"), "--no-export", "--quiet"])
    assert code == 0
    return root / "run"


def check_export(capsys, folder: Path, journal: bytes) -> str:
    """Export to a device that does not exist: a readable study fails there, before any training."""
    path = write(folder, "study.journal", journal)
    code, err = run_cli(capsys, "export", str(folder), "--out", str(folder / "export"), "--device", "gpu", "--quiet")
    line = assert_one_line_error(code, err)
    assert "device: 'gpu' is not a device" in line or str(folder) in line, line
    assert path.read_bytes() == journal and [p.name for p in folder.iterdir()] == ["study.journal"]
    return line




@FUZZ
@given(data=st.data())
def test_fuzzed_study_bytes(tmp_path, capsys, run_dir, data):
    check_export(capsys, fresh(tmp_path), data.draw(byte_mutations((run_dir / "study.journal").read_bytes())))


@FUZZ
@given(data=st.data())
def test_fuzzed_study_records(tmp_path, capsys, run_dir, data):
    records = [json.loads(line) for line in (run_dir / "study.journal").read_text().splitlines()]
    mutated, _ = data.draw(value_mutations(records))
    check_export(capsys, fresh(tmp_path), "".join(json.dumps(r) + "\n" for r in mutated).encode())


def test_a_study_that_reads_fails_only_at_the_device(tmp_path, capsys, run_dir):
    """The unmutated seed and a journal that is not JSON: what every mutated journal is compared against."""
    assert "device: 'gpu' is not a device" in check_export(capsys, fresh(tmp_path),
                                                          (run_dir / "study.journal").read_bytes())
    assert "line 1 is not an Optuna journal record" in check_export(capsys, fresh(tmp_path), b"not json\n")


def _study_cases(run_dir: Path) -> dict[str, bytes]:
    journal = (run_dir / "study.journal").read_bytes()
    records = [json.loads(line) for line in journal.decode().splitlines()]
    config = next(r for r in records if "config" in r.get("user_attr", {}))

    def edited(value: Any) -> bytes:
        changed = [dict(r, user_attr={"config": value}) if r is config else r for r in records]
        return "".join(json.dumps(r) + "\n" for r in changed).encode()

    return {"torn tail": journal + b'{"op_code": 5, "worker', "deep line": DEEP.encode() + b"\n",
            "config value": edited(config["user_attr"]["config"] | {"n_trials": None}),
            "config missing": edited(None)}


@pytest.mark.parametrize("case", ["torn tail", "deep line", "config value", "config missing"])
def test_study_files_found_by_fuzzing(tmp_path, capsys, run_dir, case):
    check_export(capsys, fresh(tmp_path), _study_cases(run_dir)[case])


def test_export_of_a_missing_run_dir_creates_nothing(tmp_path, capsys):
    code, err = run_cli(capsys, "export", str(tmp_path / "no-such-run"), "--out", str(tmp_path / "x"), "--quiet")
    assert_one_line_error(code, err, str(tmp_path / "no-such-run"))
    assert list(tmp_path.iterdir()) == []


# -- 6. zips of images: `--data imagefolder:ZIP` --------------------------------------------------------------


def png(shade: int) -> bytes:
    out = BytesIO()
    Image.new("L", (28, 28), shade * 40 % 256).save(out, format="PNG")
    return out.getvalue()


SYMLINK = stat.S_IFLNK | 0o777
GOOD_MEMBERS = [("digits/a/0.png", png(0)), ("digits/a/1.png", png(1)), ("digits/b/0.png", png(2)),
                ("digits/b/1.png", png(3))]
UNSAFE_NAMES = ["../evil/0.png", "digits/../../evil.png", "/abs/a/0.png", "..\\evil\\0.png", "C:/evil/a/0.png",
                "digits/a/..", "\\\\server\\share\\a.png"]


def zip_of(members: list) -> bytes:
    """A zip holding ``(name, bytes[, unix mode])`` entries as given (duplicates and odd names included)."""
    out = BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w") as zf:
        warnings.simplefilter("ignore")  # zipfile warns about a duplicate name, one of the cases tested
        for name, data, *mode in members:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            if mode:
                info.external_attr = mode[0] << 16
            zf.writestr(info, data)
    return out.getvalue()


@st.composite
def zip_mutations(draw) -> tuple[bytes, str | None]:
    """(zip bytes, the entry name it must be refused for, if any)."""
    kind = draw(st.sampled_from(["bytes", "unsafe", "symlink", "duplicate", "junk", "image", "names"]))
    members: list = list(GOOD_MEMBERS)
    if kind == "bytes":
        return draw(byte_mutations(zip_of(members))), None
    if kind == "unsafe":
        name = draw(st.sampled_from(UNSAFE_NAMES))
        members.insert(draw(st.integers(0, len(members))), (name, png(5)))
        return zip_of(members), name
    if kind == "symlink":
        name = draw(st.sampled_from(["digits/a/link.png", "digits/b"]))
        members.append((name, b"../../etc/passwd", SYMLINK))
        return zip_of(members), name
    if kind == "duplicate":
        members.append(draw(st.sampled_from(members)))
    elif kind == "junk":
        members.append(("digits/b/junk.png", draw(st.binary(max_size=64))))
    elif kind == "image":  # a damaged image, first of its class (the one `space` reads the header of)
        members.insert(0, ("digits/a/-damaged.png", draw(byte_mutations(png(4)))))
    else:
        i = draw(st.integers(0, len(members) - 1))
        members[i] = (f"digits/{draw(KEYS)}/x.png", png(i))
    return zip_of(members), None


def check_zip(capsys, folder: Path, data: bytes, refused: str | None = None) -> str | None:
    """`autocompress space` on the zip (reads one image's header), then loading it (decodes every image)."""
    path = write(folder, "digits.zip", data)
    spec = f"imagefolder:{path}"
    code, err = run_cli(capsys, "space", "--model", "lenet5", "--data", spec, "--cache-dir", str(folder / "cache"))
    line = None if code == 0 and refused is None else assert_one_line_error(code, err, spec)
    try:
        load_data(spec, cache_dir=folder / "cache")
    except DataError as exc:
        assert str(exc).startswith(spec) and len(str(exc).splitlines()) == 1, exc
        assert refused is None or repr(refused) in str(exc), exc
    else:
        assert refused is None and line is None, line
    assert path.read_bytes() == data
    assert {p.name for p in folder.iterdir()} <= {"digits.zip", "cache"}  # nothing extracted beside it
    return line


@FUZZ
@given(case=zip_mutations())
def test_fuzzed_image_zip(tmp_path, capsys, case):
    data, refused = case
    check_zip(capsys, fresh(tmp_path), data, refused)


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_a_zip_entry_outside_the_archive_is_refused_before_any_decoding(tmp_path, capsys, name):
    """The unsafe entry comes last, after one that is not an image: it is named, so nothing was decoded first."""
    data = zip_of([("digits/a/junk.png", b"not an image"), *GOOD_MEMBERS, (name, png(5))])
    line = check_zip(capsys, tmp_path, data, name)
    assert f"entry {name!r} points outside the archive" in line


@pytest.mark.parametrize(("members", "message"), [
    ([*GOOD_MEMBERS, ("digits/a/link.png", b"/etc/passwd", SYMLINK)], "entry 'digits/a/link.png' is a symbolic link"),
    ([*GOOD_MEMBERS, GOOD_MEMBERS[1]], "holds 'digits/a/1.png' twice"),
    ([*GOOD_MEMBERS, ("digits/b/junk.png", b"\x89PNG\r\n")], "cannot decode image digits/b/junk.png"),
])
def test_zips_found_by_fuzzing(tmp_path, capsys, members, message):
    data = zip_of(members)
    refused = None if "decode" in message else members[-1][0]
    line = check_zip(capsys, tmp_path, data, refused)
    if line is not None:
        assert message in line
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        load_data(f"imagefolder:{tmp_path / 'digits.zip'}")


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims another size (its checksum fixed): what a decompression bomb looks like."""
    data = bytearray(png(0))
    at = data.index(b"IHDR")
    data[at + 4:at + 12] = struct.pack(">II", width, height)
    data[at + 17:at + 21] = struct.pack(">I", zlib.crc32(bytes(data[at:at + 17])))
    return bytes(data)


def test_an_image_claiming_to_be_huge(tmp_path, capsys):
    line = check_zip(capsys, tmp_path, zip_of([("digits/a/-big.png", png_claiming(30000, 30000)), *GOOD_MEMBERS]))
    assert "cannot read image digits/a/-big.png" in line and "decompression bomb" in line


def test_a_zip_with_a_damaged_entry(tmp_path, capsys):
    data = bytearray(zip_of(GOOD_MEMBERS))
    data[data.index(b"IDAT") + 8] ^= 0xFF  # inside the first image: its CRC no longer matches
    line = check_zip(capsys, tmp_path, bytes(data))
    assert "cannot read entry 'digits/a/0.png' (Bad CRC-32" in line


# -- 6b. arrays: `--data npz:FILE` ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def npz_seed() -> bytes:
    out = BytesIO()
    np.savez(out, x_train=np.zeros((8, 1, 28, 28), np.uint8), y_train=np.arange(8) % 2, classes=np.array(["a", "b"]))
    return out.getvalue()


@FUZZ
@given(data=st.data())
def test_fuzzed_npz(tmp_path, capsys, npz_seed, data):
    """`autocompress space` loads the whole .npz (it is small); a damaged one is refused in one line."""
    folder = fresh(tmp_path)
    mutated = data.draw(byte_mutations(npz_seed))
    path = write(folder, "digits.npz", mutated)
    code, err = run_cli(capsys, "space", "--model", "lenet5", "--data", f"npz:{path}")
    if code != 0:
        assert_one_line_error(code, err, f"npz:{path}")
    assert path.read_bytes() == mutated


@pytest.mark.parametrize("damage", ["header", "method"])
def test_npz_files_found_by_fuzzing(tmp_path, capsys, npz_seed, damage):
    data = bytearray(npz_seed)
    if damage == "header":  # numpy parses the .npy header as Python: an unclosed bracket
        data[data.index(b"'shape': (") + len(b"'shape': ")] = ord(" ")
    else:  # the first entry's compression method in the central directory: 99, which zipfile does not know
        data[data.index(b"PK\x01\x02") + 10] = 99
    path = write(tmp_path, "x.npz", bytes(data))
    code, err = run_cli(capsys, "space", "--model", "lenet5", "--data", f"npz:{path}")
    assert "not a readable .npz archive" in assert_one_line_error(code, err, f"npz:{path}")
