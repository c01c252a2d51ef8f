"""Import layers: a lower layer never imports a higher one (module-level imports only;
``if TYPE_CHECKING:`` blocks and imports inside functions are deferred and not counted).

Printed by layer when run with ``-s``; a back edge fails with the offending import. The rule
the architecture needs most: the config, the norms and the threat model load without the
engine, the results, the reports or the front ends (``robaudit validate`` stays cheap).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "robaudit"

# (layer name, module prefixes); a module takes the first layer whose prefix matches
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", (
        "robaudit.errors", "robaudit.access", "robaudit.inputs", "robaudit.norms", "robaudit.threat",
        "robaudit.entries", "robaudit.smoothing", "robaudit.allocator", "robaudit.control",
        "robaudit.profiles", "robaudit.verdicts", "robaudit.progress", "robaudit.threads",
    )),
    ("definitions", (
        "robaudit.attacks", "robaudit.classifier", "robaudit.config", "robaudit.defenses",
        "robaudit.loading", "robaudit.models", "robaudit.straight_through", "robaudit.guard",
        "robaudit.checkpoint", "robaudit.distributed", "robaudit.fitting", "robaudit.presets",
        "robaudit.natural", "robaudit.tabular",
    )),
    ("engine", (
        "robaudit.verification", "robaudit.naive", "robaudit.outcomes", "robaudit.stored_cells", "robaudit.cell",
        "robaudit.minimal", "robaudit.universal",
        "robaudit.engine",
        "robaudit.results", "robaudit.tables", "robaudit.integrity",
        "robaudit.variants", "robaudit.certify", "robaudit.scoring", "robaudit.evaluation",
        "robaudit.baseline", "robaudit.findings", "robaudit.documents", "robaudit.plan",
        "robaudit.judgement", "robaudit.record",
    )),
    ("reports", ("robaudit.report", "robaudit.export")),
    ("orchestration", ("robaudit.pipeline", "robaudit.harden", "robaudit.selftest")),
    ("front ends", (
        "robaudit.api", "robaudit.cli", "robaudit.pytest_plugin", "robaudit.starter",
        "robaudit.entry",
        "robaudit.__main__",
    )),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int | None:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return None


def imports(path: Path) -> set[str]:
    """robaudit modules imported at module level (executed when the module loads)."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for n in ast.walk(node):
            if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("robaudit"):
                for alias in n.names:
                    sub = f"{n.module}.{alias.name}"
                    known = (ROOT / (sub.replace(".", "/") + ".py")).exists() or (
                        ROOT / sub.replace(".", "/")
                    ).is_dir()
                    found.add(sub if known else n.module)
            elif isinstance(n, ast.Import):
                found.update(a.name for a in n.names if a.name.startswith("robaudit"))
    return found - {"robaudit"}


def test_every_module_has_a_layer_and_no_layer_imports_a_higher_one() -> None:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules.pop("robaudit", None)  # the package itself only re-exports, lazily
    unplaced = sorted(m for m in modules if layer_of(m) is None)
    assert not unplaced, f"modules without a layer: {unplaced}"
    by_layer: dict[int, list[str]] = {}
    back: list[str] = []
    for mod, path in sorted(modules.items()):
        mine = layer_of(mod)
        assert mine is not None
        by_layer.setdefault(mine, []).append(mod)
        for dep in sorted(imports(path)):
            theirs = layer_of(dep)
            if theirs is not None and theirs > mine:
                back.append(f"{mod} ({LAYERS[mine][0]}) imports {dep} ({LAYERS[theirs][0]})")
    for i, (name, _) in enumerate(LAYERS):
        print(f"{i} {name}: {', '.join(m.removeprefix('robaudit.') for m in by_layer.get(i, []))}")
    assert not back, "back edges:\n" + "\n".join(back)


def test_loading_the_config_loads_no_engine_results_reports_or_front_end() -> None:
    import subprocess
    import sys

    code = (
        "import sys, robaudit.config, robaudit.norms, robaudit.threat; "
        "print(sorted(m for m in sys.modules if m.split('.')[:2] in "
        "(['robaudit', 'engine'], ['robaudit', 'results'], ['robaudit', 'report'], "
        "['robaudit', 'cli'], ['robaudit', 'api'], ['robaudit', 'pipeline'])))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout


def test_no_submodule_shadows_a_public_function() -> None:
    """``import robaudit.X`` sets the package attribute X: a submodule named like a lazy public
    function (robaudit.scan, robaudit.verify, ...) would replace that function once imported."""
    import robaudit

    lazy = set(getattr(robaudit, "_LAZY", {}))
    assert lazy, "robaudit.__init__ no longer lists its lazy names"
    submodules = {p.stem for p in PACKAGE.glob("*.py")} | {
        p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()
    }
    assert not lazy & submodules, f"submodules shadowing public names: {sorted(lazy & submodules)}"
