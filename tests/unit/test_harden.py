"""robaudit.harden: each method trains, runs are deterministic and resumable, model selection
keeps the best held-out epoch, bad settings are one-line errors, and the files load."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from robaudit.errors import ModelLoadError, UserInputError
from robaudit.harden import trainer as trainer_mod
from robaudit.harden.data import TrainingData, check_audit_split, training_source
from robaudit.harden.export import save_model
from robaudit.harden.options import METHODS, HardenOptions, check_options, training_threat
from robaudit.harden.trainer import (
    EpochRecord,
    TrainOutcome,
    render_log,
    selection_key,
    train,
    trainable_parameters,
)
from robaudit.loading.data import digits_arrays
from robaudit.loading.model import load_model
from robaudit.models.digits import DigitsCNN
from robaudit.report.svg import Point, Series, line_chart
from robaudit.threat import Threat
from tests.conftest import REPO_ROOT, TINY_CONFIG
from tests.helpers import one_thread

THREAT = Threat("linf", 0.2)
FAST = {"steps": 2, "eval_steps": 2, "batch_size": 32, "warmup": 0}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    yield from one_thread()


@pytest.fixture(scope="module")
def data() -> TrainingData:
    """160 digits to train on, 40 held out: enough to see each method move."""
    x, y = (torch.from_numpy(a.copy()) for a in digits_arrays("train"))
    return TrainingData(x[:160], y[:160], x[160:200], y[160:200], "builtin:digits", "train")


def plain() -> nn.Module:
    """The committed plain sample model's weights in a fresh (eager) DigitsCNN."""
    m = DigitsCNN()
    sd = torch.load(REPO_ROOT / "sample_models" / "digits_cnn.state_dict.pt", weights_only=True)
    m.load_state_dict(sd)
    return m


def run(module: nn.Module, data: TrainingData, **kw: Any) -> TrainOutcome:
    extra = {k: kw.pop(k) for k in ("out", "resume", "on_epoch") if k in kw}
    opts = HardenOptions(**{**FAST, **kw})
    return train(module, data, opts, THREAT, num_classes=10, bounds=(0.0, 1.0), **extra)


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_lowers_its_loss_and_changes_the_weights(
    method: str, data: TrainingData
) -> None:
    model = plain()
    before = copy.deepcopy(model)
    out = run(model, data, method=method, epochs=3, lr=5e-3)
    final = [r for r in out.records if r.stage == out.records[-1].stage]
    assert len(final) == 3
    assert final[-1].loss < final[0].loss, [r.loss for r in final]
    assert not same_weights(model, before)
    assert 1 <= out.best_epoch <= len(out.records)
    adversarial = method != "distill"
    assert all((r.train_adv_acc is not None) == adversarial for r in out.records)


def test_distill_trains_a_teacher_then_a_student_whose_logits_grow(data: TrainingData) -> None:
    model = plain()
    x = data.x_held
    with torch.no_grad():
        scale_before = float(model(x).abs().amax(1).mean())
    out = run(model, data, method="distill", epochs=2, lr=1e-2)
    assert [r.stage for r in out.records] == ["teacher"] * 2 + ["student"] * 2
    assert out.best_epoch in (3, 4)  # selected among the student's epochs only
    with torch.no_grad():
        scale_after = float(model(x).abs().amax(1).mean())
    assert scale_after > 3 * scale_before  # trained at T, deployed at T = 1


def test_a_torchscript_module_trains_in_place(data: TrainingData) -> None:
    module = load_model(REPO_ROOT / "sample_models" / "digits_cnn.pt").module
    assert isinstance(module, torch.jit.ScriptModule)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    run(module, data, method="fast-at", epochs=1)
    assert any(not torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert not module.training


def test_same_seed_gives_identical_weights(data: TrainingData) -> None:
    a, b = plain(), plain()
    ra = run(a, data, method="pgd-at", epochs=2)
    rb = run(b, data, method="pgd-at", epochs=2)
    assert same_weights(a, b)
    assert [r.loss for r in ra.records] == [r.loss for r in rb.records]


class Stop(Exception):
    pass


@pytest.mark.parametrize(("method", "epochs", "stop_after"), [("fast-at", 3, 2), ("distill", 2, 2)])
def test_resume_after_an_interrupt_equals_an_uninterrupted_run(
    method: str, epochs: int, stop_after: int, data: TrainingData, tmp_path: Path
) -> None:
    whole = plain()
    run(whole, data, method=method, epochs=epochs, out=tmp_path / "a")

    def interrupt(r: EpochRecord) -> None:
        if r.epoch == stop_after:
            raise Stop

    with pytest.raises(Stop):
        run(plain(), data, method=method, epochs=epochs, out=tmp_path / "b", on_epoch=interrupt)
    assert [p.name for p in (tmp_path / "b" / "checkpoints").iterdir()] == [
        f"epoch-{stop_after:04d}.pt"
    ]
    resumed = plain()  # a fresh process would load the original model again
    out = run(resumed, data, method=method, epochs=epochs, out=tmp_path / "b", resume=True)
    assert out.resumed_from == stop_after
    assert same_weights(whole, resumed)
    log_a = (tmp_path / "a" / "training_log.csv").read_text().splitlines()
    log_b = (tmp_path / "b" / "training_log.csv").read_text().splitlines()
    assert len(log_a) == len(log_b) == 1 + epochs * (2 if method == "distill" else 1)


def test_resume_refuses_other_settings(data: TrainingData, tmp_path: Path) -> None:
    run(plain(), data, method="fast-at", epochs=1, out=tmp_path)
    with pytest.raises(UserInputError, match=r"--resume: .*--method 'fast-at'"):
        run(plain(), data, method="pgd-at", epochs=1, out=tmp_path, resume=True)


def _scripted(monkeypatch: pytest.MonkeyPatch, robust: list[float]) -> None:
    """Held-out robust accuracy per epoch as given (clean 0.9, CE = margin = robust)."""
    values = iter(robust)

    def fake(*args: Any, **kwargs: Any) -> tuple[float, float, float, float]:
        r = next(values)
        return 0.9, r, r, r

    monkeypatch.setattr(trainer_mod, "heldout_accuracy", fake)


def test_model_selection_keeps_the_best_held_out_epoch(
    data: TrainingData, monkeypatch: pytest.MonkeyPatch
) -> None:
    _scripted(monkeypatch, [0.1, 0.5, 0.3, 0.2])
    model = plain()
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    out = run(model, data, method="pgd-at", epochs=4,
              on_epoch=lambda r: snapshots.update({r.epoch: copy.deepcopy(model.state_dict())}))
    assert out.best_epoch == 2 and out.stopped is None and len(out.records) == 4
    assert all(torch.equal(v, snapshots[2][k]) for k, v in model.state_dict().items())
    assert not all(torch.equal(v, snapshots[4][k]) for k, v in model.state_dict().items())


def test_patience_stops_early(data: TrainingData, monkeypatch: pytest.MonkeyPatch) -> None:
    _scripted(monkeypatch, [0.1, 0.5, 0.3, 0.2, 0.9])
    out = run(plain(), data, method="pgd-at", epochs=5, patience=2)
    assert len(out.records) == 4 and out.best_epoch == 2
    assert out.stopped is not None and "early stop" in out.stopped


def test_fast_at_detects_catastrophic_overfitting(
    data: TrainingData, monkeypatch: pytest.MonkeyPatch
) -> None:
    _scripted(monkeypatch, [0.4, 0.6, 0.1, 0.5])
    out = run(plain(), data, method="fast-at", epochs=4)
    assert out.catastrophic_epoch == 3 and len(out.records) == 3 and out.best_epoch == 2
    assert [r.catastrophic_overfitting for r in out.records] == [False, False, True]
    assert out.stopped is not None and "catastrophic overfitting" in out.stopped


def test_selection_key_distill_prefers_clean_accuracy() -> None:
    r = EpochRecord(1, "student", 0.1, 0.9, None, 0.95, 0.02, 0.5, 0.02, 0.0, 0.01, 1.0)
    assert selection_key(r, "distill") == (0.95, 0.02)
    assert selection_key(r, "pgd-at") == (0.02, 0.95)


def test_log_marks_the_selected_epoch() -> None:
    rows = [
        EpochRecord(e, "train", 1.0 / e, 0.9, 0.5, 0.9, 0.3, 0.4, 0.35, 0.2, 0.001, 1.0, None)
        for e in (1, 2)
    ]
    text = render_log(rows, selected=2).splitlines()
    assert text[0].split(",") == list(trainer_mod.LOG_COLUMNS)
    assert text[1].endswith(",,False") and text[2].endswith(",,True")


@pytest.mark.parametrize(
    ("kw", "flag"),
    [
        ({"method": "fgsm-at"}, "--method 'fgsm-at': valid methods are pgd-at, fast-at"),
        ({"epochs": 0}, "--epochs 0"),
        ({"steps": 0}, "--steps 0"),
        ({"lr": -1.0}, "--lr -1.0"),
        ({"lr": float("nan")}, "--lr nan"),
        ({"beta": -1.0}, "--beta -1.0"),
        ({"temperature": 0.0}, "--temperature 0.0"),
        ({"mix_ratio": 1.5}, "--mix-ratio 1.5"),
        ({"holdout": 0.0}, "--holdout 0.0"),
        ({"norm": "l1"}, "--norm 'l1': valid norms are linf, l2"),
        ({"eps": 0.0}, "--eps 0.0"),
        ({"batch_size": 0}, "--batch-size 0"),
        ({"patience": 0}, "--patience 0"),
        ({"warmup": 30, "epochs": 5}, "--warmup 30"),
        ({"train_samples": 1}, "--train-samples 1"),
    ],
)
def test_bad_options_name_the_flag(kw: dict[str, Any], flag: str) -> None:
    with pytest.raises(UserInputError) as info:
        check_options(HardenOptions(**kw))
    assert str(info.value).startswith(flag) and "\n" not in str(info.value)


def test_training_threat_from_flags_or_the_config() -> None:
    from robaudit.config import config_from_dict, load_config
    from robaudit.fitting import fit_config

    standard, _ = fit_config(
        load_config(REPO_ROOT / "configs" / "standard.yaml"), input_shape=(1, 8, 8), num_classes=10
    )  # the digits profile's budgets, as a run on digits fits them
    assert training_threat(standard, HardenOptions()) == Threat("linf", 0.1)  # the gated threat
    assert training_threat(standard, HardenOptions(eps=0.3, norm="linf")).eps == 0.3
    assert training_threat(standard, HardenOptions(norm="l2")) == Threat("l2", 1.0)
    tiny = config_from_dict(TINY_CONFIG)  # no gate: the first white-box attack's first eps
    assert training_threat(tiny, HardenOptions()) == Threat("linf", 0.1)
    with pytest.raises(UserInputError, match=r"--eps 2: a linf budget must be > 0 and at most 1"):
        training_threat(tiny, HardenOptions(eps=2.0))


def test_training_data_never_comes_from_the_audited_file(tmp_path: Path) -> None:
    from robaudit.config import config_from_dict

    npz = tmp_path / "test.npz"
    npz.write_bytes(b"")
    cfg = config_from_dict({**TINY_CONFIG, "data": {"source": str(npz), "split": "test"}})
    with pytest.raises(UserInputError, match="--train-data: the config's data source"):
        training_source(cfg, None)
    assert training_source(cfg, "builtin:digits") == "builtin:digits"
    with pytest.raises(UserInputError, match=r"--train-data .*missing\.npz: not found"):
        training_source(cfg, str(tmp_path / "missing.npz"))
    on_train = config_from_dict({**TINY_CONFIG, "data": {"split": "train"}})
    with pytest.raises(UserInputError, match=r"data\.split is 'train'"):
        check_audit_split(on_train, "c.yaml")


class NoFloats(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :10]


def test_a_model_without_float_parameters_cannot_be_trained() -> None:
    with pytest.raises(ModelLoadError, match="no floating-point parameters, so it cannot be trained"):
        trainable_parameters(NoFloats(), "m.pt")


class DataDependent(nn.Module):
    """Python control flow on a tensor's value: traceable (one branch), not exportable."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = DigitsCNN()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.inner(x)
        if float(x.sum()) > 1e9:
            out = -out
        return out


def test_saved_files_load_and_agree(tmp_path: Path) -> None:
    model = plain()
    files, notes = save_model(model, tmp_path, (1, 8, 8))
    assert set(files) == {"torchscript", "export", "state_dict"} and notes == []
    x = torch.from_numpy(digits_arrays("test")[0][:5])
    ref = model(x)
    for name in ("torchscript", "export"):
        loaded = load_model(files[name]).module
        assert torch.allclose(loaded(x), ref, atol=1e-5), name
    sd = torch.load(files["state_dict"], weights_only=True)
    assert sd.keys() == model.state_dict().keys()
    assert not list(tmp_path.glob(".*.tmp*"))  # no temporary files left behind


def test_a_torchscript_model_is_saved_as_is_and_converted_for_export(tmp_path: Path) -> None:
    module = load_model(REPO_ROOT / "sample_models" / "digits_cnn.pt").module
    files, notes = save_model(module, tmp_path, (1, 8, 8))
    assert "export" in files or notes  # the converter is torch-private: a note if it fails
    x = torch.rand(3, 1, 8, 8)
    assert torch.allclose(load_model(files["torchscript"]).module(x), module(x))


def test_an_unexportable_model_is_skipped_with_a_note(tmp_path: Path) -> None:
    files, notes = save_model(DataDependent(), tmp_path, (1, 8, 8))
    assert "export" not in files and "torchscript" in files and "state_dict" in files
    assert len(notes) == 1 and notes[0].startswith("model.pt2 not written: torch.export failed")


def test_line_chart_plots_plain_values_with_y_max() -> None:
    s = [Series("loss", (Point(1, 2.0, "a"), Point(2, 0.5, "b")))]
    svg = str(line_chart(s, title="t", x_label="epoch", y_label="loss", y_max=2.0))
    assert ">2<" in svg and "%" not in svg
    assert "100%" in str(line_chart(s, title="t", x_label="epoch"))


@pytest.mark.parametrize("name", ["digits_cnn.state_dict.pt", "digits_cnn.pt2"])
def test_state_dict_and_export_checkpoints_harden_too(name: str, tmp_path: Path) -> None:
    from robaudit.harden import harden_model

    result = harden_model(
        REPO_ROOT / "sample_models" / name, config=TINY_CONFIG, out=tmp_path, audit=False,
        options=HardenOptions(method="fast-at", epochs=1, train_samples=100, eval_steps=1),
    )
    assert result.comparison is None and len(result.training.records) == 1
    model = DigitsCNN()
    model.load_state_dict(torch.load(result.files["state_dict"], weights_only=True))
    x = torch.rand(4, 1, 8, 8)
    assert torch.allclose(load_model(result.files["torchscript"]).module(x), model(x), atol=1e-5)
