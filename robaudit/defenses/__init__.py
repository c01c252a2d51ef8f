"""Defenses audited as variants of the model; importing this package registers them."""

from robaudit.defenses import audio, ensemble, transforms  # noqa: F401  (imported to register)
from robaudit.defenses.base import Defense, DefenseParams, Transform, defense_registry

__all__ = ["Defense", "DefenseParams", "Transform", "defense_registry"]
