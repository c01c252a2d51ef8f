"""Patch threats in the config: ``size`` (an alias of eps), ``location`` and ``universal``.

A patch budget is the region's share of the image, written ``"5%"`` or ``0.05`` (the label
stays as written, so the report reads as the config). ``location`` (``anywhere``, ``center``
or ``[row, col]``) and ``universal`` pick the threat's norm name (:mod:`robaudit.norms.patch`):
``patch``, ``patch@center``, ``patch@R,C``, ``patch-universal``; attack entries and gate
thresholds share these fields, so a gate names its threat exactly as an attack entry does.
Checks that need the input's shape (a fixed region inside the image, images only) are in
:func:`check_patches`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from robaudit.config.budgets import is_share, parse_share
from robaudit.inputs import InputSpec, needs_image_error
from robaudit.norms.patch import LOCATIONS, UNIVERSAL, location_name, region_dims
from robaudit.threat import _short_repr, parse_eps

PATCH = "patch"
UNIVERSAL_ATTACKS = ("patch-pgd",)  # trains one patch for all images (EOT)
Location = Literal["anywhere", "center"] | tuple[int, int]


def _share(value: Any) -> float:
    """A patch budget as a share of the image in (0, 1]; a ValueError naming the value else."""
    if is_share(value):
        return float(parse_share(value))
    eps = parse_eps(value)
    if not 0 < eps <= 1:
        raise ValueError(
            f"eps {_short_repr(value)}: a patch budget is its share of the image, > 0 and at "
            "most 1 (or a share like '5%')"
        )
    return eps


def _size_as_eps(data: dict[str, Any]) -> dict[str, Any]:
    """``size: ["1%", "5%"]``: a patch's budgets as the issue spells them."""
    if data.get("norm") != PATCH:
        raise ValueError(
            f"size gives patch budgets; with norm {data.get('norm', 'linf')!r} use eps"
        )
    if "eps" in data:
        raise ValueError("give the patch budgets as size or as eps, not both")
    out = {k: v for k, v in data.items() if k != "size"}
    out["eps"] = data["size"]
    return out


class PatchFields(BaseModel):
    """What an entry with a norm and budgets (an attack, a gate threshold) adds for patches."""

    location: Location = Field(
        "anywhere", exclude_if=lambda v: v == "anywhere",
        description=f"patch threats: where the region lies: {LOCATIONS} (its top-left corner)",
    )  # fmt: skip
    universal: bool = Field(
        False, exclude_if=lambda v: not v,
        description="patch-pgd: train ONE patch for all images on data the audit does not "
        "judge (EOT over place, scale, rotation) and judge it pasted at random places",
    )  # fmt: skip
    if TYPE_CHECKING:  # the entry's own fields
        norm: str
        eps: Any

    @model_validator(mode="before")
    @classmethod
    def _patch_budgets(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        key = "size" if "size" in data else "eps"
        if key == "size":
            data = _size_as_eps(data)
        raw = data.get("eps")
        if data.get("norm") != PATCH or raw is None or raw in ("profile", "headline"):
            return data
        try:
            shares = [_share(v) for v in (raw if isinstance(raw, list) else [raw])]
        except ValueError as exc:  # name the field as the user wrote it
            msg = str(exc)
            raise ValueError(key + msg[3:] if msg.startswith("eps ") else msg) from None
        return {**data, "eps": shares if isinstance(raw, list) else shares[0]}

    @field_validator("location", mode="before")
    @classmethod
    def _one_line_location(cls, v: Any) -> Any:
        location_name(v)  # a ValueError naming the valid spellings, in one line
        return v

    @model_validator(mode="after")
    def _patch_place(self) -> PatchFields:
        placed = self.location != "anywhere" or self.universal
        if placed and self.norm != PATCH:
            key = "universal" if self.universal else "location"
            raise ValueError(f"{key}: only a patch threat has one; norm is {self.norm!r}")
        if self.universal and self.location != "anywhere":
            raise ValueError(
                "universal: a universal patch is pasted at random places; drop location "
                f"{_short_repr(self.location)}"
            )
        name = getattr(self, "name", None) or getattr(self, "battery", None)
        if self.universal and name is not None and name not in UNIVERSAL_ATTACKS:
            raise ValueError(
                f"universal: {name} has no universal mode; valid: {', '.join(UNIVERSAL_ATTACKS)}"
            )
        return self

    @property
    def threat_norm(self) -> str:
        """The norm name of this entry's threats: the location (or universal) for a patch."""
        if self.norm != PATCH:
            return self.norm
        if self.universal:
            return UNIVERSAL
        loc = self.location
        return location_name(loc if isinstance(loc, str) else list(loc))


def _least_share(height: int, width: int) -> str:
    """The smallest share, in percent and rounded UP to 3 significant digits, whose region
    has a pixel on both axes (so the value the message suggests is one the config accepts)."""
    exact = 25.0 / min(height, width) ** 2  # a side rounds to 1 from half a pixel
    step = 10.0 ** (math.floor(math.log10(exact)) - 2)
    shown = math.ceil(exact / step - 1e-9) * step
    while 0 in region_dims(shown / 100, height, width):
        shown += step
    return f"{shown:.3g}"


def check_patches(source: str, where: str, entry: PatchFields, shape: tuple[int, ...] | None
                  ) -> list[str]:  # fmt: skip
    """Patch threats on this input: images only, a fixed region inside the image."""
    if entry.norm != PATCH or shape is None:
        return []
    spec = InputSpec.of(shape)
    if not spec.is_image:
        return [needs_image_error("a patch threat", spec, f"{source}: {where}.norm")]
    height, width = shape[-2], shape[-1]
    out = []
    for e in entry.eps if isinstance(entry.eps, list) else [entry.eps]:
        if e is None or isinstance(e, str):
            continue
        h, w = region_dims(float(e), height, width)
        if h == 0 or w == 0:  # a threat that cannot change a pixel would read as "robust"
            out.append(
                f"{source}: {where}: a patch of {100 * float(e):.4g}% of the "
                f"{height}x{width} image has no pixels (a side is round(sqrt(share) x side)); "
                f"the smallest that has one is {_least_share(height, width)}%"
            )
        elif isinstance(entry.location, tuple):
            row, col = entry.location
            if row + h > height or col + w > width:
                out.append(
                    f"{source}: {where}.location: a {h}x{w} patch ({100 * float(e):.4g}% of "
                    f"the image) at [{row}, {col}] reaches past the {height}x{width} image; its "
                    f"corner may be at most [{height - h}, {width - w}]"
                )
    return out
