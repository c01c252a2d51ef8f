"""Runs that stop early: saved cells and --resume, the time budget's priority order and gate,
CUDA out-of-memory back-off, and a model failing mid-run (API level; the CLI and signal
paths are in tests/e2e/test_resilience_cli.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

import robaudit
from robaudit.attacks.fgsm_pgd import FGSM, PGD, FGSMParams, PGDParams
from robaudit.classifier import Classifier
from robaudit.control import INTERRUPTED, RunControl, parse_duration
from robaudit.engine import EngineControl, PlannedAttack, order_plan, run_plan
from robaudit.errors import RuntimeFailure, UserInputError
from robaudit.models.digits import DigitsCNN
from robaudit.results import RunResult
from robaudit.threat import Threat
from tests.helpers import one_thread, without_timing


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    yield from one_thread()


class StopAtCell:
    """A progress sink that asks the run to stop when the ``at``-th cell starts."""

    def __init__(self, control: RunControl, at: int) -> None:
        self.control, self.at, self.started = control, at, 0

    def start(self, label: str, total: int) -> None:
        self.started += 1
        if self.started == self.at:
            self.control.request_stop(INTERRUPTED, "interrupted by a test")

    def advance(self, n: int) -> None:
        pass

    def finish(self) -> None:
        pass


def _scan(model: Path, config: Path, **kwargs: object) -> robaudit.Report:
    return robaudit.scan(model, config=config, **kwargs)  # type: ignore[arg-type]


def test_parse_duration() -> None:
    assert parse_duration("90") == 90
    assert parse_duration("10m") == 600
    assert parse_duration("1h30m") == 5400
    assert parse_duration("1.5s") == 1.5
    for bad in ("", "ten", "10x", "-5", "0", "5m10"):
        with pytest.raises(UserInputError, match="--time-budget"):
            parse_duration(bad)


def test_priority_order_runs_cheap_attacks_at_every_threat_first() -> None:
    fgsm, pgd = FGSM(FGSMParams()), PGD(PGDParams(steps=20))
    plan = [
        PlannedAttack(i, a, Threat("linf", e))
        for i, a in enumerate((pgd, fgsm))
        for e in (0.2, 0.1)
    ]
    order = [(p.attack.name, p.threat.eps) for p in order_plan(plan)]
    assert order == [("fgsm", 0.1), ("fgsm", 0.2), ("pgd", 0.1), ("pgd", 0.2)]


def test_interrupted_run_resumes_to_the_uninterrupted_report(
    tmp_path: Path, plain_model_path: Path, tiny_config, validate_report
) -> None:
    cfg = tiny_config(tmp_path)
    full = _scan(plain_model_path, cfg)
    state = tmp_path / "out" / ".robaudit"
    control = RunControl()
    part = _scan(
        plain_model_path, cfg, checkpoint_dir=state, control=control,
        progress=StopAtCell(control, 3),
    )
    inc = part.incomplete
    assert inc is not None and inc.kind == "interrupted"
    # two cells finished and were saved; the third was dropped when the stop came
    assert [(u["attack"], u["threat"]) for u in inc.unrun] == [
        ("fgsm", "white-box/linf/0.2"),
        ("pgd", "white-box/linf/0.2"),
    ]
    assert len(list((state / "cells").glob("*.pt"))) == 2
    assert not part.passed
    assert any(f.criterion == "complete" for f in part.gate.failures)
    doc = part.to_dict()
    assert doc["incomplete"] is True and doc["partial"]["kind"] == "interrupted"
    validate_report(doc)
    written = part.save(tmp_path / "partial")
    html = written["html"].read_text(encoding="utf-8")
    assert "INCOMPLETE RUN" in html and "2 planned cell(s) did not run or finish" in html
    assert "white-box/linf/0.2" in html and "--resume" in html
    assert "**Incomplete:** interrupted by a test; 2 planned cell\\(s\\)" in written["md"].read_text(
        encoding="utf-8"
    )
    assert "not run: pgd at white-box/linf/0.2" in written["junit"].read_text(encoding="utf-8")
    resumed = _scan(plain_model_path, cfg, checkpoint_dir=state, resume=True)
    assert resumed.incomplete is None
    assert resumed.result.meta.execution["resumed_cells"] == 2
    assert without_timing(resumed.to_dict()) == without_timing(full.to_dict())


def test_resume_refuses_cells_of_a_different_run(
    tmp_path: Path, plain_model_path: Path, tiny_config
) -> None:
    state = tmp_path / ".robaudit"
    _scan(plain_model_path, tiny_config(tmp_path), checkpoint_dir=state)
    with pytest.raises(UserInputError, match="holds cells of a different run"):
        _scan(plain_model_path, tiny_config(tmp_path), checkpoint_dir=state, resume=True, seed=1)


def test_resume_refuses_cells_of_edited_data(
    tmp_path: Path, plain_model_path: Path, tiny_config
) -> None:
    """The data file's bytes are part of the run: the same path with other samples in it is
    another run, and --resume must not reuse its cells."""
    import numpy as np

    from robaudit.loading.data import digits_arrays

    xs, ys = digits_arrays("test")
    data = tmp_path / "d.npz"
    np.savez(data, x=xs[:40], y=ys[:40])
    cfg = tiny_config(tmp_path, data={"source": str(data)})
    state = tmp_path / ".robaudit"
    _scan(plain_model_path, cfg, checkpoint_dir=state)
    np.savez(data, x=xs[40:80], y=ys[40:80])
    with pytest.raises(UserInputError, match="holds cells of a different run"):
        _scan(plain_model_path, cfg, checkpoint_dir=state, resume=True)


def test_time_budget_stops_and_fails_the_gate_unless_partial_is_allowed(
    tmp_path: Path, plain_model_path: Path, tiny_config
) -> None:
    cfg = tiny_config(tmp_path, gate={"min_clean_accuracy": 0.5})
    spent = _scan(plain_model_path, cfg, time_budget=1e-6)
    inc = spent.incomplete
    assert inc is not None and inc.kind == "time-budget"
    assert len(inc.unrun) == 4  # nothing had time to run: every cell is listed
    assert [f.criterion for f in spent.gate.failures] == ["complete"]
    allowed = _scan(plain_model_path, cfg, time_budget=1e-6, allow_partial=True)
    assert allowed.incomplete is not None and allowed.passed
    with pytest.raises(UserInputError, match="time_budget"):
        _scan(plain_model_path, cfg, time_budget=-1)


class OutOfMemoryAbove(nn.Module):
    """A digits CNN that raises CUDA's out-of-memory error for gradient batches above ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inner = DigitsCNN().eval()
        self.limit = limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(x)


def test_out_of_memory_halves_the_batch_and_gives_the_small_batch_result() -> None:
    x = torch.rand(24, 1, 8, 8)
    model = OutOfMemoryAbove(limit=4)
    with torch.no_grad():
        y = model.inner(x).argmax(1)
    plan = [PlannedAttack(0, PGD(PGDParams(steps=3)), Threat("linf", 0.1))]

    control = RunControl()
    er = run_plan(
        Classifier(model, num_classes=10), x, y, plan, seed=0, batch_size=16,
        ctl=EngineControl(control=control),
    )
    assert er.failure is None and control.max_batch == 4
    # 16 -> 8 -> 4 on the first batch; the second batch starts at 4 (logged once, kept twice)
    assert len(control.oom_events) == 2
    small = run_plan(Classifier(OutOfMemoryAbove(limit=99), num_classes=10), x, y, plan,
                     seed=0, batch_size=4)
    (cell,), (ref,) = er.cells, small.cells
    assert bool(cell.attacked.all())
    assert torch.equal(cell.broken, ref.broken) and torch.equal(cell.adv_pred, ref.adv_pred)


class NaNAfterPerturbation(nn.Module):
    """Fine on the digits' own pixel values (multiples of 1/16), NaN on anything else."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inner = DigitsCNN().eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        off = ((x * 16) - (x * 16).round()).abs().flatten(1).amax(dim=1)
        return self.inner(x) + torch.where(off > 1e-4, float("nan"), 0.0)[:, None]


def test_failure_mid_run_carries_the_partial_result(tmp_path: Path, tiny_config) -> None:
    cfg = tiny_config(tmp_path)
    with pytest.raises(RuntimeFailure, match=r"fgsm linf eps=0.1: .*NaN or inf .* batch 1") as info:
        _scan(NaNAfterPerturbation(), cfg)
    partial = info.value.partial
    assert isinstance(partial, RunResult)
    assert partial.incomplete is not None and partial.incomplete.kind == "failure"
    assert len(partial.incomplete.unrun) == 4
    assert not partial.gate.passed


class StopAfterBatches:
    """A progress sink that asks the run to stop once ``after`` batches of cell ``cell`` are done."""

    def __init__(self, control: RunControl, cell: int, after: int) -> None:
        self.control, self.cell, self.after = control, cell, after
        self.started = self.done = 0

    def start(self, label: str, total: int) -> None:
        self.started += 1

    def advance(self, n: int) -> None:
        if self.started == self.cell:
            self.done += 1
            if self.done == self.after:
                self.control.request_stop(INTERRUPTED, "interrupted by a test")

    def finish(self) -> None:
        pass


def test_a_stop_mid_cell_keeps_its_finished_batches_and_resume_completes_them(
    tmp_path: Path, plain_model_path: Path, tiny_config, validate_report
) -> None:
    cfg = tiny_config(tmp_path, data={"batch_size": 16})
    full = _scan(plain_model_path, cfg)
    state = tmp_path / "out" / ".robaudit"
    control = RunControl()
    part = _scan(
        plain_model_path, cfg, checkpoint_dir=state, control=control,
        progress=StopAfterBatches(control, cell=3, after=1),
    )
    inc = part.incomplete
    assert inc is not None and inc.kind == "interrupted"
    first, *rest = inc.unrun
    cell = next(c for c in part.result.attacks if (c.attack, c.threat_key) == (
        first["attack"], first["threat"]
    ))  # the stopped cell is in the report with the samples it finished
    assert cell.attacked == 16 and first["samples_left"] == full.result.attacks[2].attacked - 16
    assert len(rest) == 1
    doc = part.to_dict()
    validate_report(doc)
    assert f"stopped with {first['samples_left']} sample(s) left" in part.gate.failures[-1].detail
    assert len(list((state / "cells").glob("*.pt"))) == 3  # two whole cells and the part
    resumed = _scan(plain_model_path, cfg, checkpoint_dir=state, resume=True)
    assert resumed.incomplete is None
    assert without_timing(resumed.to_dict()) == without_timing(full.to_dict())


class CallsThenStop(nn.Module):
    """A digits CNN that asks the run to stop on its ``at``-th call and counts calls after it."""

    def __init__(self, control: RunControl, at: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inner = DigitsCNN().eval()
        self.control, self.at, self.calls, self.after = control, at, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.at:
            self.control.request_stop(INTERRUPTED, "interrupted by a test")
        elif self.calls > self.at:
            self.after += 1
        return self.inner(x)


def test_a_stop_lands_within_one_model_call_of_an_attack() -> None:
    x = torch.rand(40, 1, 8, 8)
    control = RunControl()
    model = CallsThenStop(control, at=10**9)
    with torch.no_grad():
        y = model.inner(x).argmax(1)
    plan = [PlannedAttack(0, PGD(PGDParams(steps=500)), Threat("linf", 0.01))]
    clf = Classifier(model, num_classes=10)
    calls_clean = model.calls
    model.at = calls_clean + 1 + 50  # the stop comes 50 steps into the first batch's attack
    er = run_plan(clf, x, y, plan, seed=0, batch_size=20, ctl=EngineControl(control=control))
    assert model.after == 0  # not one model call after the request
    assert er.cells == [] and [u["attack"] for u in er.unrun] == ["pgd"]
    assert control.kind == INTERRUPTED


class StopInsideABatch(nn.Module):
    """The plain digits CNN; once armed, asks the run to stop on its third call (mid-batch)."""

    def __init__(self, inner: nn.Module, control: RunControl) -> None:
        super().__init__()
        self.inner, self.control, self.armed, self.calls = inner, control, False, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.armed:
            self.calls += 1
            if self.calls == 3:
                self.control.request_stop(INTERRUPTED, "interrupted by a test")
        return self.inner(x)


class ArmAfterFirstBatch(StopAfterBatches):
    """Arms the model after cell ``cell``'s first batch: the stop lands inside its second."""

    def __init__(self, model: StopInsideABatch, cell: int) -> None:
        super().__init__(model.control, cell, 10**9)
        self.model = model

    def advance(self, n: int) -> None:
        if self.started == self.cell:
            self.model.armed = True


def test_a_stop_inside_a_batch_drops_it_and_resume_gives_the_uninterrupted_report(
    tmp_path: Path, plain_model_path: Path, tiny_config
) -> None:
    """The dropped batch's queries and gradients are not the cell's (resume runs it again)."""
    cfg = tiny_config(tmp_path, data={"batch_size": 16}, attacks=[
        {"name": "pgd", "norm": "linf", "eps": [0.1], "steps": 6},
        {"name": "square", "norm": "linf", "eps": [0.1], "queries": 40},
    ])
    inner = torch.jit.load(str(plain_model_path)).eval()
    full = _scan(StopInsideABatch(inner, RunControl()), cfg)
    for cell in (1, 2):  # a white-box cell and a black-box one (per-sample queries)
        state = tmp_path / f"out{cell}" / ".robaudit"
        control = RunControl()
        model = StopInsideABatch(inner, control)
        part = _scan(model, cfg, checkpoint_dir=state, control=control,
                     progress=ArmAfterFirstBatch(model, cell))
        inc = part.incomplete
        assert inc is not None and inc.unrun[0]["samples_left"] > 0
        model.armed = False
        resumed = _scan(model, cfg, checkpoint_dir=state, resume=True)
        assert resumed.incomplete is None
        assert without_timing(resumed.to_dict()) == without_timing(full.to_dict())


def test_a_stop_during_the_natural_stage_lands_in_it_and_lists_it_as_not_run(
    tmp_path: Path, plain_model_path: Path, tiny_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The natural stage's forward passes poll the stop flag like an attack's: a stop that
    comes while it runs ends it at the next model call, and the report says it did not run."""
    import robaudit.pipeline as pipeline

    control = RunControl()
    real = pipeline.run_natural
    calls: list[int] = []

    def stop_then_run(*args: object, **kwargs: object) -> object:
        calls.append(1)
        control.request_stop(INTERRUPTED, "interrupted by a test")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "run_natural", stop_then_run)
    cfg = tiny_config(tmp_path, natural={"corruptions": {"names": ["gaussian_noise"], "severities": [1]}})
    part = _scan(plain_model_path, cfg, control=control)
    assert calls == [1]
    assert part.result.natural is None
    inc = part.incomplete
    assert inc is not None and inc.kind == "interrupted"
    assert "natural robustness" in inc.not_run
    assert not part.passed
