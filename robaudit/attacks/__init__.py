"""Attack families; importing this package registers the built-in attacks."""

from robaudit.attacks import (  # noqa: F401  (imported to register)
    apgd,
    constrained_search,
    cw,
    deepfool,
    fab,
    fgsm_pgd,
    hopskipjump,
    noise,
    patch_pgd,
    patch_rs,
    simba,
    square,
    transfer,
)
from robaudit.attacks.base import Attack, AttackOutput, AttackParams, get_attack, registry

__all__ = ["Attack", "AttackOutput", "AttackParams", "get_attack", "registry"]
