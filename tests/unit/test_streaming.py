"""Streamed samples: memory bounded by the batch, results identical to the in-memory set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from robaudit.attacks.fgsm_pgd import PGD, PGDParams
from robaudit.attacks.square import Square, SquareParams
from robaudit.certify import SmoothingParams, certify
from robaudit.classifier import Classifier
from robaudit.engine import PlannedAttack, run_plan
from robaudit.errors import DataError
from robaudit.loading import load_data
from robaudit.loading.samples import Samples
from robaudit.report.html import render_html
from robaudit.threat import Threat
from tests.helpers import without_timing

ARGS: dict[str, Any] = {
    "split": "test",
    "input_shape": (1, 8, 8),
    "bounds": (0.0, 1.0),
    "num_classes": 10,
    "seed": 0,
}


@pytest.fixture(scope="module")
def tiny_model(plain_model_path: Path) -> torch.nn.Module:
    from robaudit.loading import load_model

    return load_model(plain_model_path).module


def _digits(cache_mb: int, samples: int | None = 120) -> Any:
    return load_data("builtin:digits", samples=samples, cache_mb=cache_mb, **ARGS)


def test_streamed_samples_index_like_the_tensor() -> None:
    kept, streamed = _digits(1024), _digits(0)
    assert not kept.samples.streamed and streamed.samples.streamed
    full = kept.samples.tensor()
    s = streamed.samples
    assert s.shape == full.shape and len(s) == len(full) and s.dtype == torch.float32
    assert torch.equal(s[10:37], full[10:37])
    idx = torch.tensor([5, 0, 119, 64, 5])
    assert torch.equal(s[idx], full[idx])
    assert torch.equal(s[np.array([3, -1])], full[torch.tensor([3, -1])])
    mask = torch.zeros(len(full), dtype=torch.bool)
    mask[::7] = True
    assert torch.equal(s[mask], full[mask])
    assert torch.equal(s[42], full[42]) and torch.equal(s[-1], full[-1])
    assert torch.equal(s[np.int64(7)], full[7]) and torch.equal(s[torch.tensor(7)], full[7])
    assert torch.equal(s[100:200:3], full[100:200:3])
    assert s[0:0].shape == (0, 1, 8, 8)
    for bad in (torch.tensor([120]), 120, -121):
        with pytest.raises(IndexError):
            s[bad]
    assert torch.equal(streamed.x, full)  # the whole-set view still works when asked for


def test_streamed_set_holds_no_decoded_images_and_kept_set_decodes_once() -> None:
    streamed, kept = _digits(0), _digits(1024)
    assert streamed.samples.decoded == kept.samples.decoded == 120  # the load-time check
    before = kept.samples.decoded
    kept.samples[0:50]
    assert kept.samples.decoded == before  # served from memory
    streamed.samples[0:50]
    assert streamed.samples.decoded == 170  # decoded again, not kept


def test_cache_limit_decides_what_is_kept() -> None:
    one = 1 * 8 * 8 * 4
    assert Samples(lambda p: np.zeros((len(p), 1, 8, 8), np.float32), 10, (1, 8, 8),
                   cache_bytes=10 * one).streamed is False  # fmt: skip
    assert Samples(lambda p: np.zeros((len(p), 1, 8, 8), np.float32), 10, (1, 8, 8),
                   cache_bytes=10 * one - 1).streamed is True  # fmt: skip


def test_bad_images_are_reported_at_load_time_even_when_streamed(tmp_path: Path) -> None:
    for k, size in enumerate([(8, 8)] * 300 + [(9, 8)]):  # the bad one is in a later chunk
        d = tmp_path / "0"
        d.mkdir(exist_ok=True)
        Image.fromarray(np.zeros(size[::-1], np.uint8)).save(d / f"{k:04d}.png")
    with pytest.raises(DataError, match=r"0300\.png.*9x8"):
        load_data(str(tmp_path), samples=None, cache_mb=0, **{**ARGS, "split": ""})


def test_engine_on_streamed_samples_equals_in_memory_and_stays_within_a_batch(
    tiny_model: torch.nn.Module,
) -> None:
    kept, streamed = _digits(1024), _digits(0)
    clf = Classifier(tiny_model, num_classes=10, batch_size=32)
    plan = [
        PlannedAttack(0, PGD(PGDParams(steps=5)), Threat("linf", 0.1)),
        PlannedAttack(1, Square(SquareParams(queries=30)), Threat("l2", 0.5, "score")),
    ]
    first = streamed.samples.decoded
    streamed.samples.largest = 0  # the load-time check decodes in its own chunks
    a = run_plan(clf, kept.samples, kept.y, plan, seed=3, batch_size=32, examples=2)
    b = run_plan(clf, streamed.samples, streamed.y, plan, seed=3, batch_size=32, examples=2)
    assert torch.equal(a.correct, b.correct)
    for ca, cb in zip(a.cells, b.cells, strict=True):
        assert torch.equal(ca.broken, cb.broken)
    assert streamed.samples.largest <= 32  # never more than one batch at a time
    assert streamed.samples.decoded - first >= 120  # and really decoded during the run


def test_certification_counts_identical_on_streamed_samples(tiny_model: torch.nn.Module) -> None:
    kept, streamed = _digits(1024, samples=12), _digits(0, samples=12)
    streamed.samples.largest = 0
    clf = Classifier(tiny_model, num_classes=10)
    params = SmoothingParams(sigma=0.25, n0=5, n=40, alpha=0.01, batch_size=64)
    a = certify(clf, kept.samples, kept.y, params, torch.Generator().manual_seed(1))
    b = certify(clf, streamed.samples, streamed.y, params, torch.Generator().manual_seed(1))
    assert torch.equal(a.count, b.count) and torch.equal(a.pred, b.pred)
    assert streamed.samples.largest <= 64 // 5 + 2  # the samples one batch of 64 draws covers


def test_scan_report_identical_when_streamed(plain_model_path: Path) -> None:
    import robaudit

    cfg: dict[str, Any] = {
        "model": {"input_shape": [1, 8, 8], "num_classes": 10},
        "data": {"samples": 60, "batch_size": 16},
        "attacks": [{"name": "pgd", "norm": "linf", "eps": [0.05, 0.1], "steps": 5}],
        "report": {"examples": 2},
    }
    model = plain_model_path
    a = robaudit.scan(model, config=cfg, progress=None)
    b = robaudit.scan(model, config={**cfg, "data": {**cfg["data"], "cache_mb": 0}}, progress=None)
    assert a.to_dict()["meta"]["execution"]["streamed"] is False
    assert b.to_dict()["meta"]["execution"]["streamed"] is True
    note = "images streamed per batch"
    assert note in render_html(b.to_dict()) and note not in render_html(a.to_dict())
    da, db = without_timing(a.to_dict()), without_timing(b.to_dict())
    for d in (da, db):  # the configs differ in cache_mb only
        d["config"]["data"].pop("cache_mb", None)
        d["meta"].pop("config_sha256")
    assert da == db
