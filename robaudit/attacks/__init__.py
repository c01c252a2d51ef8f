"""Attack families; importing this package registers the built-in attacks."""

from robaudit.attacks import apgd, cw, deepfool, fgsm_pgd, noise  # noqa: F401
from robaudit.attacks.base import Attack, AttackOutput, AttackParams, get_attack, registry

__all__ = ["Attack", "AttackOutput", "AttackParams", "get_attack", "registry"]
