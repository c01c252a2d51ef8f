"""Attack families; importing this package registers the built-in attacks."""

from robaudit.attacks import (  # noqa: F401  (imported to register)
    apgd,
    cw,
    deepfool,
    ead,
    fab,
    fgsm_pgd,
    hopskipjump,
    noise,
    simba,
    square,
    transfer,
)
from robaudit.attacks.base import Attack, AttackOutput, AttackParams, get_attack, registry

__all__ = ["Attack", "AttackOutput", "AttackParams", "get_attack", "registry"]
