"""Straight-through (BPDA) copies: same forward values, gradients where the original has none.

Every model kind robaudit loads is covered (in-memory module through torch.export, a .pt2
program, traced and scripted TorchScript saved and reloaded); each copy must give exactly the
original's outputs, leave the original untouched, and give the gradient the identity (or
documented) surrogate predicts. The last test is the point of it all: PGD on the copy, judged
by the original, breaks a quantized digits CNN that naive PGD cannot touch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robaudit.attacks.fgsm_pgd import PGD, PGDParams
from robaudit.classifier import Classifier
from robaudit.loading.model import load_model
from robaudit.models.digits import DigitsCNN
from robaudit.straight_through import NOTHING_FOUND, StraightThrough, straight_through_copy
from robaudit.threat import Threat
from tests.helpers import one_thread

# robaudit keeps TorchScript first-class; torch.jit's deprecation notices are noise here
pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit.*deprecated:FutureWarning")


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    yield from one_thread()


class Quantized(nn.Module):
    """An input quantizer in front of a classifier: zero input gradients almost everywhere."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.round(3 * x) / 3)


class Lambda(nn.Module):
    """``fn(x)`` followed by a fixed linear layer over the flattened result."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], features: int = 16) -> None:
        super().__init__()
        self.fn = fn
        self.head = nn.Linear(features, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fn(x).flatten(1))


def _digits(seed: int = 0) -> DigitsCNN:
    torch.manual_seed(seed)
    return DigitsCNN().eval()


def _images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _grad(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    out = model(x)
    if not out.requires_grad:  # nothing in the graph needs a gradient
        return torch.zeros_like(x)
    (g,) = torch.autograd.grad(out.pow(2).sum(), x, allow_unused=True)
    return torch.zeros_like(x) if g is None else g  # None: the graph never reached x


def _expected_quantized_grad(inner: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The identity straight-through gradient: the inner model's, taken at the rounded point
    (round(3x)/3 passes d/dx = 3 * 1 / 3 = 1)."""
    return _grad(inner, torch.round(3 * x) / 3)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equal values, NaNs in the same places, -0.0 kept."""
    both_nan = a.isnan() & b.isnan()
    return bool(
        a.shape == b.shape
        and a.dtype == b.dtype
        and ((a == b) | both_nan).all()
        and torch.equal(a.signbit(), b.signbit())
    )


def _check_copy(
    original: nn.Module, st: StraightThrough, inputs: list[torch.Tensor]
) -> nn.Module:
    """The copy exists and gives exactly the original's outputs on every input."""
    assert st.module is not None, st.reason
    assert st.reason is None
    for x in inputs:
        with torch.no_grad():
            assert _same(st.module(x), original(x))
    return st.module


def _quantized_inputs() -> list[torch.Tensor]:
    # batch sizes other than the example's, and pixels exactly on the rounding ties
    ties = torch.full((2, 1, 8, 8), 0.5 / 3)
    return [_images(1, 5), _images(7, 6), _images(32, 7), ties]


# ------------------------------------------------------------------------------ model kinds


def test_in_memory_module_round_is_replaced_via_export() -> None:
    inner = _digits()
    model = Quantized(inner).eval()
    st = straight_through_copy(model, _images(4))
    copy_ = _check_copy(model, st, _quantized_inputs())
    assert st.graph == "torch.export"
    assert [r.op for r in st.replacements] == ["aten.round.default"]
    assert st.replacements[0].backward == "identity"
    assert "test_straight_through.py" in st.replacements[0].where  # the source line is named
    x = _images(16, 3)
    assert _grad(model, x).abs().max() == 0  # what fools naive PGD
    g = _grad(copy_, x)
    assert g.abs().sum() > 0
    torch.testing.assert_close(g, _expected_quantized_grad(inner, x), rtol=1e-5, atol=1e-7)


def test_pt2_program_loaded_as_robaudit_loads_it(tmp_path: Path) -> None:
    inner = _digits()
    model = Quantized(inner).eval()
    program = torch.export.export(
        model, (_images(4),), dynamic_shapes=({0: torch.export.Dim("batch")},), strict=False
    )
    path = tmp_path / "quantized.pt2"
    torch.export.save(program, str(path))
    loaded = load_model(path)
    assert loaded.format == "export"
    st = straight_through_copy(loaded.module, _images(4))
    copy_ = _check_copy(loaded.module, st, _quantized_inputs())
    assert st.graph == "torch.export"
    assert [r.op for r in st.replacements] == ["aten.round.default"]
    copy_.eval()  # an exported graph module refuses eval(); the copy must not
    x = _images(16, 3)
    assert _grad(loaded.module, x).abs().max() == 0
    torch.testing.assert_close(
        _grad(copy_, x), _expected_quantized_grad(inner, x), rtol=1e-5, atol=1e-7
    )


@pytest.mark.parametrize("how", ["trace", "script"])
def test_torchscript_saved_and_loaded(tmp_path: Path, how: str) -> None:
    inner = _digits()
    model = Quantized(inner).eval()
    ts = torch.jit.trace(model, (_images(4),)) if how == "trace" else torch.jit.script(model)
    path = tmp_path / f"{how}.pt"
    torch.jit.save(ts, str(path))
    loaded = load_model(path)
    assert loaded.format == "torchscript"
    st = straight_through_copy(loaded.module, _images(4))
    copy_ = _check_copy(loaded.module, st, _quantized_inputs())
    assert st.graph == "torchscript"
    assert [r.op for r in st.replacements] == ["aten::round"]
    x = _images(16, 3)
    assert _grad(loaded.module, x).abs().max() == 0
    torch.testing.assert_close(
        _grad(copy_, x), _expected_quantized_grad(inner, x), rtol=1e-5, atol=1e-7
    )


def test_module_export_cannot_capture_falls_back_to_symbolic_trace(plain_model_path: Path) -> None:
    """An eager wrapper around a TorchScript model (the committed digits CNN) defeats
    torch.export; fx.symbolic_trace keeps the scripted model as one call and still sees the
    wrapper's round and threshold."""

    class Wrapped(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(torch.round(3 * x) / 3 + 0.1 * (x > 0.5).float())

    inner = load_model(plain_model_path).module
    model = Wrapped(inner).eval()
    st = straight_through_copy(model, _images(4))
    copy_ = _check_copy(model, st, _quantized_inputs())
    assert st.graph == "fx.symbolic_trace"
    assert sorted(r.op for r in st.replacements) == ["operator.gt -> Tensor.float", "torch.round"]
    assert all("test_straight_through.py" in r.where for r in st.replacements)
    x = _images(16, 3)
    assert _grad(model, x).abs().max() == 0
    q = (torch.round(3 * x) / 3 + 0.1 * (x > 0.5).float()).requires_grad_(True)
    (g_inner,) = torch.autograd.grad(inner(q).pow(2).sum(), q)
    torch.testing.assert_close(_grad(copy_, x), 1.1 * g_inner, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------ the ops


def test_threshold_cast_is_a_step_with_identity_backward() -> None:
    model = Lambda(lambda x: (x > 0.5).float()).eval()
    x = torch.rand(8, 16, generator=torch.Generator().manual_seed(0))
    st = straight_through_copy(model, x)
    copy_ = _check_copy(model, st, [x, torch.rand(3, 16), torch.full((2, 16), 0.5)])
    assert [r.op for r in st.replacements] == ["aten.gt.Scalar -> aten.to.dtype"]
    assert "step" in st.replacements[0].backward
    assert _grad(model, x).abs().max() == 0
    # identity through (x - 0.5): the gradient of head(x) at the thresholded point
    step = (x > 0.5).float().requires_grad_(True)
    (want,) = torch.autograd.grad(model.head(step).pow(2).sum(), step)
    torch.testing.assert_close(_grad(copy_, x), want)


def test_a_mask_that_gates_a_live_value_is_left_alone() -> None:
    """``x * (x > 0.5)`` is a ReLU-like gate: its gradient is already informative."""
    model = Lambda(lambda x: x * (x > 0.5).float()).eval()
    st = straight_through_copy(model, torch.rand(4, 16))
    assert st.module is None
    assert st.reason == NOTHING_FOUND


def test_floor_and_sign_get_identity_gradients() -> None:
    model = Lambda(lambda x: torch.floor(4 * x) / 4 + torch.sign(x - 0.5)).eval()
    x = torch.rand(8, 16, generator=torch.Generator().manual_seed(0))
    st = straight_through_copy(model, x)
    copy_ = _check_copy(model, st, [x, torch.rand(5, 16) * 4 - 2])
    assert sorted(r.op for r in st.replacements) == ["aten.floor.default", "aten.sign.default"]
    assert _grad(model, x).abs().max() == 0
    # each passes d/dx = 1, so the input gets twice the head's gradient at the forward value
    h = (torch.floor(4 * x) / 4 + torch.sign(x - 0.5)).requires_grad_(True)
    (want,) = torch.autograd.grad(model.head(h).pow(2).sum(), h)
    torch.testing.assert_close(_grad(copy_, x), 2 * want)


def test_scripted_threshold_where_and_argmax_one_hot() -> None:
    """The TorchScript IR gets the same rules: where on a mask, a mask in arithmetic, and a
    one-hot argmax (softmax surrogate)."""

    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.flatten(1)
            hard = torch.where(x < 0.3, 1.0, 0.0) + (x > 0.6) * 2.0
            pick = F.one_hot(x.argmax(-1), 16).float()
            return self.head(hard + pick)

    model = torch.jit.script(Mixed().eval())
    x = torch.rand(8, 16, generator=torch.Generator().manual_seed(0))
    st = straight_through_copy(model, x)
    copy_ = _check_copy(model, st, [x, torch.rand(3, 16)])
    ops = sorted(r.op for r in st.replacements)
    assert ops == [
        "aten::argmax -> aten::one_hot -> aten::to",
        "aten::gt -> aten::mul",
        "aten::lt -> aten::where",
    ]
    assert _grad(model, x).abs().max() == 0
    assert (_grad(copy_, x) != 0).float().mean() > 0.9


def test_detach_and_no_grad_inside_forward_are_removed() -> None:
    class Detaching(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                scaled = x * 2
            return self.head(x.detach() + scaled)

    model = Detaching().eval()
    x = torch.rand(8, 16, generator=torch.Generator().manual_seed(0))
    for candidate, kind in [(model, "torch.export"), (torch.jit.script(model), "torchscript")]:
        st = straight_through_copy(candidate, x)
        copy_ = _check_copy(candidate, st, [x])
        assert st.graph == kind
        assert len(st.replacements) == 2
        assert _grad(candidate, x).abs().max() == 0
        h = (3 * x).requires_grad_(True)
        (want,) = torch.autograd.grad(model.head(h).pow(2).sum(), h)
        torch.testing.assert_close(_grad(copy_, x), 3 * want)


class _QuantDequant(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.dequantize(torch.quantize_per_tensor(x, 0.1, 0, torch.quint8)))


class _InPlaceRound(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * 10
        y.round_()
        return self.head(y / 10)


@pytest.mark.parametrize("script", [False, True], ids=["eager", "scripted"])
@pytest.mark.parametrize(
    ("cls", "ops"),
    [
        (_QuantDequant, {"torch.quantize_per_tensor -> torch.dequantize",
                         "aten::quantize_per_tensor -> aten::dequantize"}),
        (_InPlaceRound, {"aten.round_.default", "aten::round_"}),
    ],
    ids=["quantize-dequantize", "in-place-round"],
)  # fmt: skip
def test_quantize_dequantize_and_in_place_rounding(
    cls: type[nn.Module], ops: set[str], script: bool
) -> None:
    """Both quantize x to a 0.1 grid: identity backward gives the head's gradient there."""
    eager = cls().eval()
    model = torch.jit.script(eager) if script else eager
    x = torch.rand(8, 16, generator=torch.Generator().manual_seed(0))
    st = straight_through_copy(model, x)
    copy_ = _check_copy(model, st, [x, torch.rand(3, 16)])
    assert len(st.replacements) == 1 and st.replacements[0].op in ops
    grid = torch.dequantize(torch.quantize_per_tensor(x, 0.1, 0, torch.quint8))
    grid = grid.requires_grad_(True)
    (want,) = torch.autograd.grad(eager.head(grid).pow(2).sum(), grid)  # type: ignore[operator]
    torch.testing.assert_close(_grad(copy_, x), want)


def test_fake_quantize_and_quantized_kernels_are_not_rewritten() -> None:
    import torch.ao.nn.quantized as nnq

    class FakeQuant(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.fake_quantize_per_tensor_affine(x, 0.1, 0, 0, 255)

    class QuantizedLinear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nnq.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q = torch.quantize_per_tensor(x, 0.1, 0, torch.quint8)
            return self.linear(q).dequantize()

    x = torch.rand(4, 16)
    model: nn.Module
    for model in (FakeQuant().eval(), torch.jit.script(FakeQuant().eval())):
        st = straight_through_copy(model, x)
        assert st.module is None
        assert st.reason is not None and st.reason.startswith(NOTHING_FOUND)
        assert "fake_quantize" in st.reason  # it already has a straight-through backward
    for model in (QuantizedLinear().eval(), torch.jit.script(QuantizedLinear().eval())):
        st = straight_through_copy(model, x)
        assert st.module is None
        assert st.reason is not None and "quantized kernels" in st.reason


def test_forward_values_are_exact_for_negative_zero_inf_and_nan() -> None:
    model = Lambda(lambda x: torch.round(x) * 1.0, features=6).eval()
    special = torch.tensor([[-0.3, 0.3, float("inf"), float("-inf"), float("nan"), 2.5]])
    st = straight_through_copy(model, torch.rand(4, 6))
    assert st.module is not None
    with torch.no_grad():
        assert _same(st.module(special), model(special))
    # the rounded values themselves: -0.0 stays -0.0, infinities and NaN survive
    from robaudit.straight_through.surrogates import _st_identity

    rounded = torch.round(special)
    assert _same(_st_identity(rounded, special), rounded)


def test_replacements_say_where_they_sit() -> None:
    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.quantizer = Lambda(lambda x: torch.round(x), features=4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.quantizer(x)

    model = Outer().eval()
    x = torch.rand(4, 4)
    for candidate in (model, torch.jit.trace(model, (x,))):
        st = straight_through_copy(candidate, x)
        assert st.module is not None, st.reason
        (rep,) = st.replacements
        assert "in quantizer" in rep.where
        assert "test_straight_through.py:" in rep.where


# ------------------------------------------------------------------------------ refusals


def test_equality_masks_are_reported_as_left() -> None:
    model = Lambda(lambda x: (x == 0.5).float()).eval()
    st = straight_through_copy(model, torch.rand(4, 16))
    assert st.module is None
    assert st.reason == (
        "gradient-killing operations found but none can be rewritten: aten.eq.Scalar"
    )
    assert [r.op for r in st.left] == ["aten.eq.Scalar"]


def test_a_copy_whose_outputs_differ_is_not_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    """The final check is the safety net: a wrong rewrite yields a reason, never a copy."""
    import robaudit.straight_through.rules as module  # where the rules look the helper up

    monkeypatch.setattr(module, "_st_identity", lambda value, x: value + 1)
    st = straight_through_copy(Quantized(_digits()).eval(), _images(4))
    assert st.module is None
    assert st.reason is not None and st.reason.startswith("the rewritten copy's outputs differ")
    assert [r.op for r in st.replacements] == ["aten.round.default"]



def test_no_gradient_killer_means_no_copy(plain_model_path: Path) -> None:
    for model in (_digits(), load_model(plain_model_path).module):
        st = straight_through_copy(model, _images(4))
        assert st.module is None
        assert st.replacements == ()
        assert st.reason == NOTHING_FOUND


def test_torchscript_control_flow_is_rewritten_in_every_branch() -> None:
    """The TorchScript IR keeps if/loop blocks: killers inside them are rewritten in place."""

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.flatten(1)
            if bool(x.mean() > 0.5):
                y = torch.round(4 * x) / 4
                y = y - 0.125
            else:
                y = torch.floor(4 * x) / 4
            for _ in range(2):
                y = y + torch.sign(x - 0.5)
            return self.head(y)

    model = torch.jit.script(Branchy().eval())
    low, high = torch.rand(4, 16) * 0.5, 0.5 + torch.rand(4, 16) * 0.5
    st = straight_through_copy(model, low)
    copy_ = _check_copy(model, st, [low, high])
    assert sorted(r.op for r in st.replacements) == ["aten::floor", "aten::round", "aten::sign"]
    for x in (low, high):
        assert _grad(model, x).abs().max() == 0
        assert _grad(copy_, x).abs().min() > 0


def test_data_dependent_control_flow_in_python_is_refused_with_a_reason() -> None:
    class Branchy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:
                return torch.round(x)
            return x

    st = straight_through_copy(Branchy().eval(), torch.rand(4, 3))
    assert st.module is None
    assert st.reason is not None and st.reason.startswith("could not capture a graph")
    assert "torch.export" in st.reason and "symbolic_trace" in st.reason
    assert "\n" not in st.reason


def test_opaque_torchscript_and_other_refusals() -> None:
    class Forking(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            fut = torch.jit.fork(torch.round, x)
            return torch.jit.wait(fut)

    st = straight_through_copy(torch.jit.script(Forking()).eval(), torch.rand(2, 3))
    assert st.module is None
    assert st.reason == "TorchScript graph forks asynchronous work (prim::fork); no rewrite"

    trained = Quantized(_digits()).train()
    st = straight_through_copy(trained, _images(2))
    assert st.module is None and st.reason is not None and "training mode" in st.reason

    st = straight_through_copy(Quantized(_digits()).eval(), "not a tensor")  # type: ignore[arg-type]
    assert st.module is None and st.reason is not None


def test_randomized_model_is_checked_under_the_same_noise() -> None:
    class Noisy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.round(4 * (x + 0.05 * torch.randn_like(x))) / 4)

    st = straight_through_copy(Noisy().eval(), torch.rand(4, 16))
    assert st.module is not None, st.reason


# ------------------------------------------------------------------------------ the original


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_the_original_is_untouched(tmp_path: Path) -> None:
    eager = Quantized(_digits()).eval()
    scripted = torch.jit.script(Quantized(_digits()).eval())
    program = torch.export.export(
        Quantized(_digits()).eval(),
        (_images(4),),
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        strict=False,
    )
    torch.export.save(program, str(tmp_path / "q.pt2"))
    exported = load_model(tmp_path / "q.pt2").module
    for model in (eager, scripted, exported):
        before = _snapshot(model)
        graph = getattr(model, "program", model)
        code = str(graph.graph) if hasattr(graph, "graph") else None
        ids = {k: v.data_ptr() for k, v in model.state_dict().items()}
        st = straight_through_copy(model, _images(4))
        assert st.module is not None, st.reason
        after = _snapshot(model)
        assert before.keys() == after.keys()
        assert all(torch.equal(before[k], after[k]) for k in before)
        if code is not None:
            assert str(graph.graph) == code
        assert not model.training
        # the copy owns its tensors: moving or editing it leaves the original alone
        shared = {v.data_ptr() for v in st.module.state_dict().values()} & set(ids.values())
        assert not shared
        st.module.double()
        assert all(v.dtype == torch.float32 for v in model.state_dict().values())
        with torch.no_grad():
            x = _images(3)
            assert _same(st.module(x.double()).float(), model(x)) or torch.allclose(
                st.module(x.double()).float(), model(x), atol=1e-5
            )
        cloned = copy.deepcopy(st.module)
        assert cloned(x.double()).dtype == torch.float64
        # a backward pass through the copy never reaches the original's parameters
        params = list(st.module.parameters())
        assert params and all(p.is_leaf and p.requires_grad for p in params)
        st.module(_images(2).double().requires_grad_(True)).sum().backward()
        assert all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------------------ BPDA at work


def test_bpda_pgd_breaks_a_quantized_digits_cnn_that_naive_pgd_cannot(
    repo_root: Path, digits_test: tuple[torch.Tensor, torch.Tensor]
) -> None:
    inner = DigitsCNN()
    inner.load_state_dict(
        torch.load(repo_root / "sample_models" / "digits_cnn.state_dict.pt", weights_only=True)
    )
    model = Quantized(inner.eval()).eval()
    x, y = digits_test[0][:100], digits_test[1][:100]
    st = straight_through_copy(model, x[:8])
    assert st.module is not None, st.reason

    judge = Classifier(model, num_classes=10)
    clean = judge.predict(x) == y
    assert clean.float().mean() > 0.9
    threat = Threat("linf", 0.2)
    broken = {}
    for name, attacked in (("naive", model), ("bpda", st.module)):
        clf = Classifier(attacked, num_classes=10)
        out = PGD(PGDParams(steps=20)).run(clf, x, y, threat, torch.Generator().manual_seed(0))
        x_adv = torch.min(torch.max(out.x_adv, x - 0.2), x + 0.2).clamp(0, 1)
        broken[name] = int((clean & (judge.predict(x_adv) != y)).sum())  # verdicts: original
    n = int(clean.sum())
    assert broken["naive"] <= 0.1 * n, broken
    assert broken["bpda"] >= 0.9 * n, broken
