"""The bad-input corpus (tests/data/bad/cases.yaml) through the CLI.

Every case must exit with its code and print exactly one line, ``robaudit: error: ...``,
holding each expected substring: no traceback, nothing on stdout, and no file left in the
output folder (a report marked incomplete would be the one exception). A few cases also run
in a fresh ``python -m robaudit`` process, where warnings or a traceback would reach stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from robaudit.models.digits import DigitsCNN
from tests.conftest import REPO_ROOT, TINY_CONFIG, deep_merge
from tests.helpers import one_thread

CORPUS = REPO_ROOT / "tests" / "data" / "bad"
CASES: list[dict[str, Any]] = yaml.safe_load((CORPUS / "cases.yaml").read_text(encoding="utf-8"))
KEYS = {"id", "category", "model", "config", "data", "out", "args", "argv", "exit", "expect",
        "validate", "subprocess", "skip_root", "skip_cuda", "check"}
CATEGORIES = {"yaml", "config", "checkpoint", "model", "data", "output", "flags", "commands"}
PLAIN = REPO_ROOT / "sample_models" / "digits_cnn.pt"
STATE_DICT = REPO_ROOT / "sample_models" / "digits_cnn.state_dict.pt"
HTML_CLASS = "<script>alert('pwned')"  # no '/': it must be a valid folder name
MAX_LINE = 1000  # a one-line error is for a person; a hostile value must not flood it


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    yield from one_thread()


@pytest.fixture(autouse=True, scope="module")
def _command_built_once() -> Iterator[None]:
    """typer rebuilds the click command from the app's signatures on every CliRunner call
    (most of a failing case's time); build it once for this module's ~300 calls."""
    import typer.testing

    build = getattr(typer.testing, "_get_command", None)
    if build is None:  # another typer version: just slower
        yield
        return
    cache: dict[int, Any] = {}

    def built(app: Any) -> Any:
        if id(app) not in cache:
            cache[id(app)] = build(app)
        return cache[id(app)]

    typer.testing._get_command = built
    yield
    typer.testing._get_command = build


# ------------------------------------------------------------------ recipes (built at test time)


def _trace(module: nn.Module, path: Path, shape: tuple[int, ...] = (2, 1, 8, 8)) -> Path:
    """TorchScript by tracing (torch.jit is deprecated, but users' TorchScript files are not)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(module.eval(), torch.rand(*shape), check_trace=False)
        torch.jit.save(traced, str(path))
    return path


class _Linear(nn.Module):
    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class _OneD(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).sum(1)


class _Tuple(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.fc(x.flatten(1))
        return logits, logits.softmax(1)


class _NaN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)) * float("nan")


def _truncated_torchscript(d: Path) -> Path:
    data = PLAIN.read_bytes()
    (d / "truncated.pt").write_bytes(data[: len(data) // 2])
    return d / "truncated.pt"


def _truncated_state_dict(d: Path) -> Path:
    data = STATE_DICT.read_bytes()
    (d / "truncated_state_dict.pt").write_bytes(data[: len(data) - 200])
    return d / "truncated_state_dict.pt"


def _pickled_module(d: Path) -> Path:
    module = DigitsCNN()
    module.load_state_dict(torch.load(STATE_DICT, weights_only=True))
    torch.save(module.eval(), d / "pickled_module.pt")
    return d / "pickled_module.pt"


def _state_dict_wrong_keys(d: Path) -> Path:
    torch.save({"encoder.weight": torch.zeros(4, 4)}, d / "wrong_keys.pt")
    return d / "wrong_keys.pt"


def _state_dict_wrong_shapes(d: Path) -> Path:
    state = torch.load(STATE_DICT, weights_only=True)
    name = next(k for k in state if k.endswith("weight"))
    state[name] = torch.zeros(*(s + 1 for s in state[name].shape))
    torch.save(state, d / "wrong_shapes.pt")
    return d / "wrong_shapes.pt"


def _dict_of_numbers(d: Path) -> Path:
    torch.save({"epoch": 3, "lr": 0.1}, d / "numbers.pt")
    return d / "numbers.pt"


def _image_folder(d: Path, classes: dict[str, list[np.ndarray]]) -> Path:
    from PIL import Image

    for name, images in classes.items():
        (d / name).mkdir(parents=True)
        for i, img in enumerate(images):
            Image.fromarray(img).save(d / name / f"{i}.png")
    return d


def _image_folder_html_class(d: Path) -> Path:
    """Ten classes of real digits; the last one's folder name is an HTML tag."""
    from robaudit.loading.data import digits_arrays

    x, y = digits_arrays("test")
    names = [str(k) for k in range(9)] + [HTML_CLASS]  # '<' sorts after the digits: index 9
    assert sorted(names) == names
    images = {
        name: [(x[i, 0] * 255).round().astype(np.uint8) for i in np.flatnonzero(y == k)[:2]]
        for k, name in enumerate(names)
    }
    return _image_folder(d / "html_classes", images)


def _image_folder_without_images(d: Path) -> Path:
    for k in range(3):
        (d / "no_images" / str(k)).mkdir(parents=True)
    return d / "no_images"


def _image_folder_without_classes(d: Path) -> Path:
    (d / "no_classes").mkdir()
    (d / "no_classes" / "README.txt").write_text("images go in class folders\n")
    return d / "no_classes"


def _vectors_npz(d: Path) -> Path:
    """Tabular rows (N x 30): not images; the inferred shape must be refused plainly."""
    import numpy as np

    np.savez(d / "vectors.npz", x=np.zeros((6, 30), dtype=np.float32), y=np.zeros(6, dtype=np.int64))
    return d / "vectors.npz"


def _oversize_config(d: Path) -> Path:
    text = yaml.safe_dump(TINY_CONFIG) + "# padding\n" * 100_001
    (d / "big.yaml").write_text(text, encoding="utf-8")
    return d / "big.yaml"


def _a_file(d: Path) -> Path:
    (d / "out").write_text("keep me", encoding="utf-8")
    return d / "out"


def _under_a_file(d: Path) -> Path:
    (d / "file.txt").write_text("a file, not a folder", encoding="utf-8")
    return d / "file.txt" / "out"


def _read_only(d: Path) -> Path:
    (d / "locked").mkdir()
    (d / "locked").chmod(0o555)
    return d / "locked" / "out"


# models are built once per session; everything else per case (cheap, and cases may mutate it)
MODEL_RECIPES: dict[str, Callable[[Path], Path]] = {
    "truncated_torchscript": _truncated_torchscript,
    "truncated_state_dict": _truncated_state_dict,
    "pickled_module": _pickled_module,
    "state_dict_wrong_keys": _state_dict_wrong_keys,
    "state_dict_wrong_shapes": _state_dict_wrong_shapes,
    "dict_of_numbers": _dict_of_numbers,
    "ts_5_classes": lambda d: _trace(_Linear(64, 5), d / "five_classes.pt"),
    "ts_1d_output": lambda d: _trace(_OneD(), d / "one_d.pt"),
    "ts_tuple_output": lambda d: _trace(_Tuple(), d / "tuple_out.pt"),
    # a model for 10x10 inputs (traced on its own shape)
    "ts_wrong_input": lambda d: _trace(_Linear(100, 10), d / "wrong_input.pt", (2, 1, 10, 10)),
    "ts_nan_output": lambda d: _trace(_NaN(), d / "nan_out.pt"),
}
RECIPES: dict[str, Callable[[Path], Path]] = {
    "image_folder_html_class": _image_folder_html_class,
    "image_folder_without_images": _image_folder_without_images,
    "image_folder_without_classes": _image_folder_without_classes,
    "vectors_npz": _vectors_npz,
    "oversize_config": _oversize_config,
    "a_file": _a_file,
    "under_a_file": _under_a_file,
    "read_only": _read_only,
}


# ------------------------------------------------------------------ building a case


@dataclass(frozen=True)
class Built:
    argv: list[str]
    out: Path | None
    config: Path | None


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    folder = tmp_path_factory.mktemp("corpus_models")
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            cache[name] = MODEL_RECIPES[name](folder)
        return cache[name]

    return get


def _fill(value: Any, subs: dict[str, str]) -> Any:
    """Replace {tmp}, {bad}, {repo} in every string of a (nested) value."""
    if isinstance(value, str):
        for key, sub in subs.items():
            value = value.replace("{" + key + "}", sub)
        return value
    if isinstance(value, list):
        return [_fill(v, subs) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, subs) for k, v in value.items()}
    return value


def _path(spec: Any, tmp: Path, subs: dict[str, str], models: Callable[[str], Path]) -> Path:
    if spec == "plain":
        return PLAIN
    if spec == "state_dict":
        return STATE_DICT
    (kind, value), = spec.items()
    if kind == "file":
        return CORPUS / value
    if kind == "path":
        return Path(_fill(value, subs))
    if kind == "recipe":
        return models(value) if value in MODEL_RECIPES else RECIPES[value](tmp)
    raise AssertionError(f"unknown spec {spec!r}")


def build(case: dict[str, Any], tmp: Path, models: Callable[[str], Path]) -> Built:
    subs = {"tmp": str(tmp), "bad": str(CORPUS), "repo": str(REPO_ROOT)}
    if "argv" in case:  # other commands: TMP/out, where one is given, must stay empty too
        return Built(_fill(case["argv"], subs), tmp / "out", None)
    model = _path(case.get("model", "plain"), tmp, subs, models)
    cfg_spec = case.get("config", {"tiny": {}})
    if "tiny" in cfg_spec:
        overrides = _fill(cfg_spec["tiny"], subs)
        if "data" in case:
            source = str(_path(case["data"], tmp, subs, models))
            overrides = deep_merge(overrides, {"data": {"source": source}})
        config = tmp / "config.yaml"
        config.write_text(yaml.safe_dump(deep_merge(TINY_CONFIG, overrides), sort_keys=False))
    else:
        config = _path(cfg_spec, tmp, subs, models)
    out = _path(case["out"], tmp, subs, models) if "out" in case else tmp / "out"
    args = _fill(case.get("args", []), subs)
    return Built(["scan", str(model), "--config", str(config), "--out", str(out), *args], out, config)


# ------------------------------------------------------------------ checks


def _error_line(stdout: str, stderr: str, expect: list[str]) -> str:
    """The one line of output a bad input may produce, checked against ``expect``."""
    assert "Traceback" not in stdout + stderr, stderr
    assert stdout == "", f"stdout must stay empty on errors, got {stdout!r}"
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line of error output, got {len(lines)}:\n{stderr}"
    (line,) = lines
    assert line.startswith("robaudit: error: "), line
    assert len(line) <= MAX_LINE, f"error line of {len(line)} characters"
    for text in expect:
        assert text in line, f"{text!r} not in {line!r}"
    return line


def _leftovers(out: Path | None) -> list[str]:
    """Files a failed run left in its output folder; a report marked incomplete may stay."""
    if out is None or not out.is_dir():
        return []
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    report = out / "report.json"
    if report.is_file() and json.loads(report.read_text(encoding="utf-8")).get("incomplete"):
        return [f for f in files if f.endswith(".tmp")]  # the report may stay, temp files not
    return files


def _html_escapes_class_name(built: Built, tmp: Path) -> None:
    assert built.out is not None
    html = (built.out / "report.html").read_text(encoding="utf-8")
    assert HTML_CLASS not in html, "a class name reached report.html unescaped"
    assert "&lt;script&gt;alert(" in html, "the class name is missing from report.html"
    doc = json.loads((built.out / "report.json").read_text(encoding="utf-8"))
    assert doc["model"]["class_names"][-1] == HTML_CLASS  # the data keeps the name as it is


def _out_file_untouched(built: Built, tmp: Path) -> None:
    assert built.out is not None
    assert built.out.read_text(encoding="utf-8") == "keep me"


CHECKS: dict[str, Callable[[Built, Path], None]] = {
    "html_escapes_class_name": _html_escapes_class_name,
    "out_file_untouched": _out_file_untouched,
}


def _skip_if_meaningless(case: dict[str, Any]) -> None:
    if case.get("skip_root") and hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("root can write into read-only folders")
    if case.get("skip_cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")


def _codes(case: dict[str, Any]) -> list[int]:
    return case["exit"] if isinstance(case["exit"], list) else [case["exit"]]


# ------------------------------------------------------------------ the tests


def test_manifest_is_well_formed() -> None:
    ids = [c["id"] for c in CASES]
    assert len(ids) >= 50 and len(set(ids)) == len(ids), Counter(ids).most_common(3)
    for c in CASES:
        assert set(c) <= KEYS, f"{c['id']}: unknown keys {set(c) - KEYS}"
        assert c["category"] in CATEGORIES, c["id"]
        assert "exit" in c and (c.get("expect") or c.get("check")), c["id"]
        assert c.get("check") is None or c["check"] in CHECKS, c["id"]
        for spec in (c.get("model"), c.get("config"), c.get("data"), c.get("out")):
            if isinstance(spec, dict) and "file" in spec:
                assert (CORPUS / spec["file"]).exists(), f"{c['id']}: {spec['file']} missing"
            if isinstance(spec, dict) and "recipe" in spec:
                assert spec["recipe"] in MODEL_RECIPES | RECIPES, c["id"]
    total = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    assert total < 1 << 20, f"tests/data/bad holds {total} bytes; keep it under 1 MiB"


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_input(case: dict[str, Any], tmp_path: Path, cli: Any,
                   models: Callable[[str], Path]) -> None:
    _skip_if_meaningless(case)
    built = build(case, tmp_path, models)
    existed = built.out is not None and built.out.exists()
    result = cli(*built.argv)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code in _codes(case), f"exit {result.exit_code}:\n{result.output}"
    if result.exit_code != 0 and result.exit_code != 1:
        _error_line(result.stdout, result.stderr, case.get("expect", []))
        assert _leftovers(built.out) == [], "files left in --out"
        if built.out is not None and not existed:  # not even the folder the run made
            assert not built.out.exists(), "an empty --out folder left behind"
    else:
        assert "Traceback" not in result.output
    if case.get("check"):
        CHECKS[case["check"]](built, tmp_path)
    if case.get("validate"):
        assert built.config is not None
        again = cli("validate", built.config)
        assert again.exit_code == case["exit"], again.output
        _error_line(again.stdout, again.stderr, case["expect"])


SUBPROCESS_CASES = [c for c in CASES if c.get("subprocess")]


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory: pytest.TempPathFactory, models: Callable[[str], Path]
              ) -> dict[str, tuple[Built, subprocess.CompletedProcess[str]]]:
    """Every subprocess case as ``python -m robaudit``, started together (each spends its
    time importing torch), so they cost about one process's wall time."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "PYTHONWARNINGS": "default"}
    started = []
    for case in SUBPROCESS_CASES:
        built = build(case, tmp_path_factory.mktemp(case["id"]), models)
        proc = subprocess.Popen(
            [sys.executable, "-m", "robaudit", *built.argv], cwd=REPO_ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        started.append((case["id"], built, proc))
    runs = {}
    for cid, built, proc in started:
        out, err = proc.communicate(timeout=300)
        runs[cid] = (built, subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return runs


@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=[c["id"] for c in SUBPROCESS_CASES])
def test_bad_input_in_a_real_process(case: dict[str, Any], real_runs: dict[str, Any]) -> None:
    """No warning, log record or traceback may reach stderr beside the one line."""
    built, proc = real_runs[case["id"]]
    assert proc.returncode == case["exit"], proc.stderr
    _error_line(proc.stdout, proc.stderr, case["expect"])
    assert _leftovers(built.out) == []


# ------------------------------------------------------------------ beyond the manifest


def test_pickled_module_loads_with_trust_model(tmp_path: Path, cli: Any, tiny_config: Any,
                                               models: Callable[[str], Path],
                                               validate_report: Any) -> None:
    cfg = tiny_config(tmp_path, attacks=[{"name": "fgsm", "eps": [0.1]}])
    out = tmp_path / "out"
    result = cli("scan", models("pickled_module"), "--config", cfg, "--out", out,
                 "--trust-model", "--quiet")
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
    validate_report(doc)
    assert doc["model"]["format"] == "pickle"
    assert doc["model"]["arch"] == "robaudit.models.digits:DigitsCNN"
    assert doc["clean_accuracy"] >= 0.9  # the trained weights, not a fresh network


@pytest.mark.parametrize("where", ["root", "scan"])
def test_debug_shows_the_traceback(where: str, tmp_path: Path, cli: Any, tiny_config: Any,
                                   models: Callable[[str], Path]) -> None:
    args = ["scan", models("pickled_module"), "--config", tiny_config(tmp_path), "--out",
            tmp_path / "out"]
    args = ["--debug", *args] if where == "root" else [*args, "--debug"]
    result = cli(*args)
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert "robaudit.errors.ModelLoadError" in result.stderr
    last = result.stderr.rstrip().splitlines()[-1]
    assert last.startswith("robaudit: error: ") and "--trust-model" in last


def test_no_traceback_without_debug_after_a_debug_run(tmp_path: Path, cli: Any,
                                                      tiny_config: Any) -> None:
    """--debug is per invocation: it must not leak into the next one (CLI state is global)."""
    args = ["scan", tmp_path / "nope.pt", "--config", tiny_config(tmp_path), "--out",
            tmp_path / "out"]
    assert "Traceback" in cli("--debug", *args).stderr
    result = cli(*args)
    assert result.exit_code == 2
    _error_line(result.stdout, result.stderr, ["nope.pt"])


# Messages are printed through rich; text that looks like console markup must survive as is.
@pytest.mark.parametrize("name", ["[x]", "[/x]", "[bold red]"])
def test_brackets_in_message_survive(name: str, tmp_path: Path, cli: Any, tiny_config: Any) -> None:
    missing = f"{name}/data.npz"
    result = cli("scan", PLAIN, "--config", tiny_config(tmp_path), "--out", tmp_path / "out",
                 "--data", missing)
    assert result.exit_code == 2
    _error_line(result.stdout, result.stderr, [missing, "not found"])
