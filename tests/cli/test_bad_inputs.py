"""Known-bad inputs through the CLI: each exits 2 with one line naming the problem, no
traceback, and no report files; ``--debug`` shows the traceback instead."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from robaudit.models.digits import DigitsCNN

REPORT_FILES = ("report.json", "report.html", "results.csv")


@dataclass(frozen=True)
class Ctx:
    """What a case may use to build its inputs."""

    tmp: Path
    tiny: Callable[..., Path]  # tiny_config bound to nothing: tiny(folder, **overrides)
    plain: Path  # TorchScript
    state_dict: Path
    pickled: Path  # a whole pickled nn.Module with the plain model's weights
    digits: tuple[torch.Tensor, torch.Tensor]

    def config(self, **overrides: Any) -> Path:
        return self.tiny(self.tmp, **overrides)

    def yaml(self, text: str) -> Path:
        path = self.tmp / "raw.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    def npz(self, x: np.ndarray, y: np.ndarray) -> Path:
        path = self.tmp / "data.npz"
        np.savez(path, x=x, y=y)
        return path


@dataclass(frozen=True)
class Case:
    """``build`` returns (model, config, extra scan flags); ``expect`` must all be in the message."""

    id: str
    build: Callable[[Ctx], tuple[Path, Path, list[str]]]
    expect: tuple[str, ...]
    config_only: bool = False  # `robaudit validate` must reject it too


def _cfg(**overrides: Any) -> Callable[[Ctx], tuple[Path, Path, list[str]]]:
    return lambda c: (c.plain, c.config(**overrides), [])


def _raw(text: str) -> Callable[[Ctx], tuple[Path, Path, list[str]]]:
    return lambda c: (c.plain, c.yaml(text), [])


def _pgd(**params: Any) -> list[dict[str, Any]]:
    return [{"name": "fgsm", "eps": [0.1]}, {"name": "pgd", "eps": [0.1], **params}]


def _truncated(c: Ctx) -> tuple[Path, Path, list[str]]:
    data = c.plain.read_bytes()
    path = c.tmp / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    return path, c.config(), []


def _garbage(c: Ctx) -> tuple[Path, Path, list[str]]:
    path = c.tmp / "garbage.pt"
    path.write_bytes(b"\x80\x02not a checkpoint at all" * 50)
    return path, c.config(), []


def _npz_labels_out_of_range(c: Ctx) -> tuple[Path, Path, list[str]]:
    x, y = c.digits
    labels = y[:50].numpy().copy()
    labels[7] = 12
    return c.plain, c.config(data={"source": str(c.npz(x[:50].numpy(), labels))}), []


def _npz_0_255_floats(c: Ctx) -> tuple[Path, Path, list[str]]:
    x, y = c.digits
    return c.plain, c.config(data={"source": str(c.npz(x[:50].numpy() * 255.0, y[:50].numpy()))}), []


def _num_classes_vs_model_output(c: Ctx) -> tuple[Path, Path, list[str]]:
    # labels all < 5, so the data is fine for num_classes 5; the model still gives 10 logits
    x, y = c.digits
    keep = (y < 5).nonzero().flatten()[:50]
    src = c.npz(x[keep].numpy(), y[keep].numpy())
    return c.plain, c.config(model={"num_classes": 5}, data={"source": str(src)}), []


def _out_is_a_file(c: Ctx) -> tuple[Path, Path, list[str]]:
    return c.plain, c.config(), []


def _fake_onnx(c: Ctx) -> tuple[Path, Path, list[str]]:
    path = c.tmp / "fake.onnx"
    path.write_bytes(b"definitely not protobuf" * 10)
    return path, c.config(), []


CASES = [
    Case("malformed_yaml", _raw("model: {input_shape: [1, 8, 8]\nattacks: [\n"), ("malformed YAML at line",), True),
    Case("empty_yaml", _raw("# nothing here\n"), ("config is empty", "robaudit init"), True),
    Case("top_level_list", _raw("- model\n- attacks\n"), ("top level must be a mapping", "got list"), True),
    Case("unknown_top_level_key", _cfg(gates={"min_score": 10}), ("gates: unknown key", "did you mean 'gate'"), True),
    Case("misspelled_attack_param", _cfg(attacks=_pgd(setps=3)), ("attacks[1].setps", "did you mean 'steps'"), True),
    Case("eps_division_by_zero", _cfg(attacks=[{"name": "fgsm", "eps": ["8/0"]}]), ("attacks[0].eps", "'8/0'", "not a number or a fraction"), True),
    Case("negative_eps", _cfg(attacks=[{"name": "fgsm", "eps": [-0.1]}]), ("attacks[0].eps", ">= 0"), True),
    Case("eps_beyond_input_range", _cfg(attacks=[{"name": "fgsm", "eps": [0.1, 1.5]}]), ("attacks[0].eps[1]", "larger than the whole input range"), True),
    Case("unknown_attack", _cfg(attacks=[{"name": "pgdd", "eps": [0.1]}]), ("unknown attack 'pgdd'", "did you mean 'pgd'"), True),
    Case("unknown_norm", _cfg(attacks=[{"name": "fgsm", "norm": "l3", "eps": [0.1]}]), ("attacks[0].norm", "'linf'", "'l2'"), True),
    Case("steps_zero", _cfg(attacks=_pgd(steps=0)), ("attacks[1].steps", "greater than or equal to 1"), True),
    Case("step_size_and_rel_step_size", _cfg(attacks=_pgd(step_size=0.01, rel_step_size=0.25)), ("attacks[1]", "step_size", "rel_step_size"), True),
    Case("gate_threat_not_run", _cfg(gate={"min_robust_accuracy": [{"norm": "linf", "eps": 0.3, "value": 0.5}]}), ("gate.min_robust_accuracy[0]", "no attack runs at linf eps 0.3", "linf 0.1, linf 0.2"), True),
    Case("gate_value_above_one", _cfg(gate={"min_clean_accuracy": 90}), ("gate.min_clean_accuracy", "less than or equal to 1"), True),
    Case("missing_config", lambda c: (c.plain, c.tmp / "nope.yaml", []), ("nope.yaml", "config file not found"), True),
    Case("missing_model", lambda c: (c.tmp / "nope.pt", c.config(), []), ("nope.pt", "not found")),
    Case("pickled_module_untrusted", lambda c: (c.pickled, c.config(), []), ("pickled", "--trust-model")),
    Case("state_dict_without_arch", lambda c: (c.state_dict, c.config(model={"arch": None}), []), ("state_dict", "model.arch")),
    Case("truncated_checkpoint", _truncated, ("truncated.pt", "not a loadable checkpoint")),
    Case("garbage_checkpoint", _garbage, ("garbage.pt", "not a loadable checkpoint")),
    Case("input_shape_mismatch", _cfg(model={"input_shape": [3, 32, 32]}), ("input_shape", "(3, 32, 32)", "(1, 8, 8)")),
    Case("num_classes_vs_labels", _cfg(model={"num_classes": 5}), ("outside [0, 5)", "num_classes is 5")),
    Case("num_classes_vs_model_output", _num_classes_vs_model_output, ("output has shape [2, 10]", "expected [2, 5]", "model.num_classes")),
    Case("npz_labels_out_of_range", _npz_labels_out_of_range, ("data.npz", "label 12 at position 7", "outside [0, 10)")),
    Case("npz_0_255_floats", _npz_0_255_floats, ("data.npz", "outside the declared bounds", "0-255")),
    Case("bad_device", lambda c: (c.plain, c.config(), ["--device", "tpu"]), ("--device 'tpu'", "cpu", "cuda")),
    Case("zero_samples", lambda c: (c.plain, c.config(), ["--samples", "0"]), ("--samples 0", "positive")),
    Case("missing_data_file", lambda c: (c.plain, c.config(), ["--data", str(c.tmp / "nope.npz")]), ("nope.npz", "not found")),
    Case("bad_access_flag", lambda c: (c.plain, c.config(), ["--access", "root"]), ("--access 'root'", "score", "decision")),
    Case("nothing_runs_at_access", lambda c: (c.plain, c.config(), ["--access", "score"]), ("no attack can run at score access", "--access score", "square")),
    Case("attack_above_threat_access", _cfg(attacks=[{"name": "pgd", "eps": [0.1], "access": "decision"}]), ("attacks[0].access", "pgd needs white-box", "noise"), config_only=True),
    Case("transfer_without_surrogate", _cfg(attacks=[{"name": "transfer", "eps": [0.1]}]), ("attacks[0].surrogate", "required for transfer"), config_only=True),
    Case("not_an_onnx_file", _fake_onnx, ("fake.onnx", "not a loadable ONNX model")),
]


@pytest.fixture(scope="module")
def pickled_module(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> Path:
    """A whole ``nn.Module`` pickled with ``torch.save`` (the format --trust-model gates)."""
    module = DigitsCNN()
    state = torch.load(repo_root / "sample_models" / "digits_cnn.state_dict.pt", weights_only=True)
    module.load_state_dict(state)
    path = tmp_path_factory.mktemp("pickled") / "whole_module.pt"
    torch.save(module.eval(), path)
    return path


@pytest.fixture()
def ctx(tmp_path: Path, tiny_config: Any, plain_model_path: Path, repo_root: Path,
        pickled_module: Path, digits_test: tuple[torch.Tensor, torch.Tensor]) -> Ctx:
    return Ctx(
        tmp=tmp_path, tiny=tiny_config, plain=plain_model_path,
        state_dict=repo_root / "sample_models" / "digits_cnn.state_dict.pt",
        pickled=pickled_module, digits=digits_test,
    )


def _assert_one_line_error(result: Any, expect: tuple[str, ...]) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith("robaudit: error: "), line
    for text in expect:
        assert text in line, f"{text!r} not in {line!r}"
    return line


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_2_with_one_line(case: Case, ctx: Ctx, cli: Any) -> None:
    model, config, extra = case.build(ctx)
    out = ctx.tmp / "out"
    result = cli("scan", model, "--config", config, "--out", out, *extra)
    _assert_one_line_error(result, case.expect)
    leftovers = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    assert leftovers == [], f"files left in --out: {leftovers}"
    if case.config_only:
        _assert_one_line_error(cli("validate", config), case.expect)


def test_enough_bad_inputs() -> None:
    assert len(CASES) >= 15
    assert len({c.id for c in CASES}) == len(CASES)


def test_out_is_a_file(ctx: Ctx, cli: Any) -> None:
    out = ctx.tmp / "out"
    out.write_text("keep me", encoding="utf-8")
    result = cli("scan", ctx.plain, "--config", ctx.config(), "--out", out)
    _assert_one_line_error(result, ("--out", "not a directory"))
    assert out.read_text(encoding="utf-8") == "keep me"


def test_pickled_module_loads_with_trust_model(ctx: Ctx, cli: Any, validate_report: Any) -> None:
    cfg = ctx.config(attacks=[{"name": "fgsm", "eps": [0.1]}])
    out = ctx.tmp / "out"
    result = cli("scan", ctx.pickled, "--config", cfg, "--out", out, "--trust-model", "--quiet")
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
    validate_report(doc)
    assert doc["model"]["format"] == "pickle"
    assert doc["model"]["arch"] == "robaudit.models.digits:DigitsCNN"
    assert doc["clean_accuracy"] >= 0.9  # the trained weights, not a fresh network


@pytest.mark.parametrize("where", ["root", "scan"])
def test_debug_shows_the_traceback(where: str, ctx: Ctx, cli: Any) -> None:
    args = ["scan", ctx.pickled, "--config", ctx.config(), "--out", ctx.tmp / "out"]
    args = ["--debug", *args] if where == "root" else [*args, "--debug"]
    result = cli(*args)
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert "robaudit.errors.ModelLoadError" in result.stderr
    last = result.stderr.rstrip().splitlines()[-1]
    assert last.startswith("robaudit: error: ") and "--trust-model" in last


def test_no_traceback_without_debug_after_a_debug_run(ctx: Ctx, cli: Any) -> None:
    """--debug is per invocation: it must not leak into the next one (CLI state is global)."""
    args = ["scan", ctx.tmp / "nope.pt", "--config", ctx.config(), "--out", ctx.tmp / "out"]
    assert "Traceback" in cli("--debug", *args).stderr
    _assert_one_line_error(cli(*args), ("nope.pt",))


# Messages are printed through rich; text that looks like console markup must survive as is.
@pytest.mark.parametrize("name", ["[x]", "[/x]"])
def test_brackets_in_message_survive(name: str, ctx: Ctx, cli: Any) -> None:
    missing = f"{name}/data.npz"
    result = cli("scan", ctx.plain, "--config", ctx.config(), "--out", ctx.tmp / "out", "--data", missing)
    _assert_one_line_error(result, (missing, "not found"))


def test_error_is_the_only_line_on_stderr(ctx: Ctx, cli: Any) -> None:
    missing = ctx.tmp / "nope.npz"
    result = cli("scan", ctx.plain, "--config", ctx.config(), "--out", ctx.tmp / "out", "--data", missing)
    assert result.exit_code == 2
    assert result.stderr.startswith("robaudit: error: ") and result.stderr.count("\n") == 1
