"""The op vocabulary: which normalized operation names the rewrite rules recognize.

Names are normalized: namespace, overload and dunder stripped ("aten.gt.Scalar",
"operator.gt", "Tensor.__gt__" and "aten::gt" are all "gt").
"""

from __future__ import annotations

_IDENTITY = frozenset({"round", "floor", "ceil", "trunc", "fix", "sign", "sgn", "heaviside"})
_ROUNDING_DIV = frozenset({"floor_divide", "floordiv"})
_COMPARISONS = {
    "gt": 1.0, "greater": 1.0, "ge": 1.0, "greater_equal": 1.0,
    "lt": -1.0, "less": -1.0, "le": -1.0, "less_equal": -1.0,
}  # fmt: skip
_EQUALITIES = frozenset({"eq", "ne", "not_equal", "isclose"})
_CASTS = frozenset(
    {"to", "_to_copy", "type_as", "float", "double", "half", "bfloat16", "type",
     "convert_element_type"}
)  # fmt: skip
_MUL = frozenset({"mul", "multiply"})
_ADD = frozenset({"add"})
_SUB = frozenset({"sub", "subtract"})
_DIV = frozenset({"div", "divide", "true_divide", "truediv"})
_ARGMAX = {"argmax": 1.0, "argmin": -1.0}
_INDEXING = frozenset({"embedding", "index", "index_select", "gather", "getitem", "take"})
_QUANTIZE = frozenset({"quantize_per_tensor", "quantize_per_channel", "quantize_per_tensor_dynamic"})
_DEQUANTIZE = frozenset({"dequantize", "dequantize_per_tensor", "dequantize_per_channel"})
_BUCKETS = frozenset({"bucketize", "searchsorted"})
# ops whose output may alias their input: an in-place op on such a result is not rewritten
_VIEWS = frozenset(
    {"view", "reshape", "transpose", "permute", "select", "slice", "getitem", "narrow",
     "expand", "expand_as", "squeeze", "unsqueeze", "flatten", "unflatten", "t", "as_strided",
     "diagonal", "chunk", "split", "unbind", "detach", "alias", "view_as", "movedim", "T",
     "contiguous", "real", "imag", "swapaxes", "swapdims", "unfold"}
)  # fmt: skip
_FLOAT_SCALAR_TYPES = frozenset({5, 6, 7, 15})  # c10::ScalarType Half, Float, Double, BFloat16


def _is_fake_quant(name: str) -> bool:
    return "fake_quantize" in name or name.startswith("fused_moving_avg_obs_fake_quant")
