"""Validation errors as one line each: the YAML path, what was wrong, what would be valid,
and the closest known key for a typo."""

from __future__ import annotations

import difflib
import re
from typing import Any

from pydantic import (
    BaseModel,
    ValidationError,
)

from robaudit.threat import _short_repr

# "data.attack_only_class: …": a message that starts with the path of the key it is about
_NAMES_ITS_KEY = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*|\[\d+\])*: ")


def loc_str(loc: tuple[Any, ...]) -> str:
    s = ""
    for part in loc:
        if isinstance(part, int):
            s += f"[{part}]"
        else:
            s += ("." if s else "") + key_str(part)
    return s or "(top level)"


def key_str(key: Any) -> str:
    """A YAML key as it can be shown in a one-line path: quoted when it is not a plain word."""
    text = str(key)
    plain = text and text.isprintable() and text == text.strip() and len(text) <= 60
    return text if plain else _short_repr(text)


def did_you_mean(word: str, choices: list[str]) -> str:
    if len(word) > 100:  # no real typo is that long; and matching it would be slow
        return ""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f", did you mean {close[0]!r}?" if close else ""


def fields_at(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Known keys of the mapping that holds the last element of ``loc`` (for suggestions)."""
    model: Any = root
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
        field = model.model_fields.get(part)
        if field is None:
            return []
        model = inner_model(field.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = inner_model(arg)
        if found is not None:
            return found
    return None


def format_errors(
    source: str,
    exc: ValidationError,
    prefix: tuple[Any, ...],
    root: type[BaseModel],
    spec: bool = False,
) -> str:
    msgs = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if p not in ("function-after", "function-before"))
        full = prefix + loc
        where = f"{source}: {loc_str(full)}"
        if err["type"] == "extra_forbidden":
            known = list(root.model_fields) if spec and len(loc) == 1 else fields_at(root, loc)
            if spec:
                known += (
                    ["name", "backward", "label"]
                    if prefix[:1] == ("defenses",)
                    else ["name", "battery", "norm", "eps", "access"]
                )
            msgs.append(f"{where}: unknown key{did_you_mean(str(loc[-1]), known)}")
        elif err["type"] == "missing" and loc and isinstance(loc[-1], int):  # a short tuple
            msgs.append(
                f"{source}: {loc_str(full[:-1])}: too few values, item [{loc[-1]}] is missing"
                + (f" (got {_short_repr(err['input'])})" if isinstance(err.get("input"), list) else "")
            )
        elif err["type"] == "missing":
            msgs.append(f"{where}: required key is missing")
        elif err["type"] == "invalid_key":  # a YAML key such as 1, null or a date
            parent = loc_str(full[:-1])
            key = err.get("input", loc[-1])
            msgs.append(
                f"{source}: {parent}: key {'null' if key is None else _short_repr(key)} is not a "
                "string; keys are names such as "
                f"{', '.join(repr(k) for k in fields_at(root, loc)[:3]) or 'model'}"
            )
        else:
            msg = err["msg"]
            for lead in ("Value error, ", "Assertion failed, "):
                msg = msg.removeprefix(lead)
            got = err.get("input")
            short = _short_repr(got)
            shown = (
                "" if isinstance(got, (dict, list)) or got is None or short in msg else f" (got {short})"
            )
            if not full and _NAMES_ITS_KEY.match(msg):  # a whole-config check names its key
                where = source
            msgs.append(f"{where}: {msg}{shown}")
    # a misspelled key also shows up as a missing one: the unknown-key message explains both
    msgs.sort(key=lambda m: 0 if "unknown key" in m else 1)
    return with_others(msgs, source)


def with_others(problems: list[str], source: str) -> str:
    """The first problem, then the others on the same line (each without the file name again),
    so a user fixes them all in one pass; a long tail is cut."""
    if len(problems) == 1:
        return problems[0]
    others = "; ".join(p.removeprefix(f"{source}: ") for p in problems[1:])
    if len(others) > 400:
        others = others[:397] + "..."
    return f"{problems[0]} (and {len(problems) - 1} more: {others})"
