"""Attack indices: where each planned attack came from, and how reports name it.

A planned attack's ``index`` is its position in the config's ``attacks`` list, offset for
attacks the config did not list one by one, so saved cells, rows and findings can say which
entry they belong to (two PGDs at one threat, CE and margin, are told apart this way).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from robaudit.threat import Threat

BATTERY_ID = 1000  # member k of the battery at entry i: BATTERY_ID * (k + 1) + i
NON_ADAPTIVE_ID = 50_000  # a defense variant's non-adaptive twin of entry index i: + i
REACTION_ID = 90_000  # attacks an integrity reaction added (Square, margin PGD, ...)


def entry_name(index: int) -> str:
    """``attacks[2]``, ``attacks[0] battery member``, ``..., non-adaptive twin``, or where else
    the attack came from."""
    if index >= REACTION_ID:
        return "added by an integrity reaction"
    twin = index >= NON_ADAPTIVE_ID
    i = index - NON_ADAPTIVE_ID if twin else index
    if i < 0:
        where = "robaudit's own check"
    elif i < BATTERY_ID:
        where = f"attacks[{i}]"
    else:
        where = f"attacks[{i % BATTERY_ID}] battery member"
    return where + (", non-adaptive twin" if twin else "")


def cell_label(name: str, threat: Threat, variant: str, index: int) -> str:
    """How logs, bars and errors name a cell: the attack and threat, and on a defense variant
    the variant (and whether this is its non-adaptive twin)."""
    label = f"{name} {threat.norm} eps={threat.label}"
    if variant != "model":
        twin = " non-adaptive" if NON_ADAPTIVE_ID <= index < REACTION_ID else ""
        label += f" on {variant}{twin}"
    return label
