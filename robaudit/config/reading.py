"""Reading a config: YAML text or a dict in, a validated :class:`Config` out, or one line
that names the YAML path and what would be valid. Hostile YAML (aliases that stand for a
billion nodes, deep nesting, huge files) is refused before it is expanded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from robaudit.attacks.base import registry
from robaudit.config.checks import (
    check_access,
    check_defenses,
    check_eps,
    check_gate,
    check_natural,
    input_spec,
)
from robaudit.config.messages import did_you_mean, format_errors, key_str, with_others
from robaudit.config.patch import check_patches
from robaudit.config.sections import (
    MAX_CONFIG_BYTES,
    MAX_CONFIG_DEPTH,
    MAX_CONFIG_NODES,
    PRESET_NAMES,
    PRESETS_DIR,
    STARTER_NAMES,
    Config,
)
from robaudit.errors import ConfigError
from robaudit.inputs import needs_image_error


def load_config(path: str | Path) -> Config:
    """Read, parse and validate a YAML config file; any problem is a one-line ConfigError."""
    p = Path(path)
    try:
        exists, is_dir = p.exists(), p.is_dir()
    except (OSError, ValueError) as exc:  # a name the OS refuses (NUL byte, too long)
        raise ConfigError(f"{str(p)!r}: not a usable config path ({exc})") from None
    if not exists:
        raise ConfigError(f"{p}: config file not found")
    if is_dir:
        raise ConfigError(f"{p}: is a directory, expected a YAML config file")
    try:
        size = p.stat().st_size
        raw = p.read_bytes() if size <= MAX_CONFIG_BYTES else b""
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config ({exc.strerror or exc})") from None
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{p}: config is {size} bytes, larger than the {MAX_CONFIG_BYTES} bytes allowed; "
            "is it the right file?"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{p}: config is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8"
        ) from None
    return config_from_yaml(text.removeprefix("\ufeff"), source=str(p))


def config_from_yaml(text: str, source: str = "<config>") -> Config:
    """Parse YAML text (``yaml.safe_load`` only) and validate it.

    Aliases are kept as shared references by the parser, so a "billion laughs" document
    parses cheaply; :func:`_check_size` then refuses it before anything expands it.
    """
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: config is larger than {MAX_CONFIG_BYTES} characters")
    try:
        data = yaml.load(text, Loader=_DepthLimitedLoader)  # safe_load with a depth limit
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if "\t" in problem or "\\t" in problem:
            problem += " (YAML indents with spaces, never tabs)"
        raise ConfigError(f"{source}: malformed YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(
            f"{source}: YAML nested too deeply to parse; a config nests at most "
            f"{MAX_CONFIG_DEPTH} levels"
        ) from None
    except Exception as exc:  # the parser failing on hostile input (a 5000-digit integer)
        raise ConfigError(
            f"{source}: malformed YAML: {type(exc).__name__}: {str(exc).split(';')[0][:200]}"
        ) from None
    if data is None:
        raise ConfigError(f"{source}: config is empty; start from `robaudit init --preset quick`")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: top level must be a mapping of sections (model, data, attacks, ...), "
            f"got {type(data).__name__}"
        )
    _check_size(data, source)
    return config_from_dict(data, source=source)


class _DepthLimitedLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, refusing nesting beyond MAX_CONFIG_DEPTH while composing:
    cheaper than letting the scanner go thousands of levels deep (quadratic) and overflow."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_CONFIG_DEPTH + 1:
                mark = self.peek_event().start_mark
                raise ConfigError(
                    f"line {mark.line + 1}, column {mark.column + 1}: nested more than "
                    f"{MAX_CONFIG_DEPTH} levels deep; a config is a few levels of mappings and lists"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _check_size(data: Any, source: str) -> None:
    """Refuse documents that are huge once aliases are expanded, nest too deeply, or refer to
    themselves; shared (aliased) nodes are counted once per use, each computed only once."""
    sizes: dict[int, int] = {}
    open_ids: set[int] = set()

    def size(node: Any, path: str, depth: int) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        path = path if len(path) <= 80 else path[:40] + "..." + path[-37:]
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_ids:
            raise ConfigError(
                f"{source}: {path or '(top level)'}: a YAML alias refers to a node that "
                "contains it (a self-referencing document)"
            )
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(
                f"{source}: {path}: nested more than {MAX_CONFIG_DEPTH} levels deep; "
                "a config is a few levels of mappings and lists"
            )
        open_ids.add(key)
        items = node.items() if isinstance(node, dict) else enumerate(node)
        total = 1
        for k, v in items:
            name = key_str(k)
            sub = f"{path}[{k}]" if isinstance(node, list) else (f"{path}.{name}" if path else name)
            total += size(v, sub, depth + 1)
            if total > MAX_CONFIG_NODES:
                raise ConfigError(
                    f"{source}: {sub}: the document expands to more than {MAX_CONFIG_NODES} "
                    "values (YAML aliases repeating aliases: a 'billion laughs' bomb?)"
                )
        open_ids.discard(key)
        sizes[key] = total
        return total

    size(data, "", 0)


def config_from_dict(data: dict[str, Any], source: str = "<config>") -> Config:
    """Validate a config given as a dict (YAML already parsed, or built in Python)."""
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(source, exc, (), Config)) from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
    problems: list[str] = []
    spec_in = input_spec(cfg)
    for i, spec in enumerate(cfg.attacks):
        try:
            spec._params = spec.params_model.model_validate(spec.model_extra or {})
        except ValidationError as exc:
            problems.append(format_errors(source, exc, ("attacks", i), spec.params_model, spec=True))
            continue
        entry = data["attacks"][i] if isinstance(data["attacks"][i], dict) else {}
        # db: snr budgets, size: patch budgets, as the issue writes them
        raw = entry.get("eps", entry.get("db", entry.get("size")))
        raw_list = raw if isinstance(raw, list) else [raw]
        spec._eps_labels = [str(r).strip() if isinstance(r, str) else "" for r in raw_list]
        for member, _ in spec.members():
            norms = registry()[member].norms
            if spec.norm not in norms:
                member_of = f"battery {spec.battery}'s member " if spec.battery else ""
                problems.append(
                    f"{source}: attacks[{i}].norm: {member_of}{member} supports "
                    f"{', '.join(norms)}, not {spec.norm!r}"
                )
            problems.extend(check_access(source, i, member, spec.access))
            if spec_in is not None and not spec_in.is_image and registry()[member].needs_image:
                part = f"attack '{member}'" + (f" (battery {spec.battery})" if spec.battery else "")
                problems.append(needs_image_error(part, spec_in, f"{source}: attacks[{i}]"))
        if spec.name is not None:
            problem = registry()[spec.name].config_problem(spec.params)
            if problem:
                problems.append(f"{source}: attacks[{i}].{problem}")
        problems.extend(check_eps(source, i, spec, cfg.model))
        problems.extend(check_patches(source, f"attacks[{i}]", spec, cfg.model.input_shape))
    raw_gate = data.get("gate") if isinstance(data.get("gate"), dict) else {}
    raw_min = raw_gate.get("min_robust_accuracy") if isinstance(raw_gate, dict) else None
    for k, g in enumerate(cfg.gate.min_robust_accuracy):
        entry = raw_min[k] if isinstance(raw_min, list) and k < len(raw_min) else None
        raw_eps = entry.get("eps", entry.get("size")) if isinstance(entry, dict) else None
        g._eps_label = raw_eps.strip() if isinstance(raw_eps, str) else ""
        where = f"gate.min_robust_accuracy[{k}]"
        problems.extend(check_patches(source, where, g, cfg.model.input_shape))
    problems.extend(check_defenses(source, cfg))
    problems.extend(check_gate(source, cfg))
    problems.extend(check_natural(source, cfg))
    if problems:
        raise ConfigError(with_others(problems, source))
    return cfg


def preset_path(name: str) -> Path:
    """Path of a bundled preset; unknown names are a ConfigError listing the valid ones."""
    names = [*PRESET_NAMES, *STARTER_NAMES]
    if name not in names:
        raise ConfigError(
            f"unknown preset {name!r}{did_you_mean(name, names)}; valid: {', '.join(names)}"
        )
    return PRESETS_DIR / f"{name}.yaml"
