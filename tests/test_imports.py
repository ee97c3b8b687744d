"""The module graph of src/: no import cycles, no module importing a higher layer, tracking/ only tracks.

Every import counts, at the top of a module or inside a function (a lazy import hides a cycle, it
does not remove it). The graph is read from the source with `ast`; nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. A module may import its own layer or a lower one, never a higher one. The first
# prefix that matches a module names its layer.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "base",
        (
            "cnnlab.paths",
            "cnnlab.config",
            "cnnlab.dvc_experiment",
            "cnnlab.redaction",
            "cnnlab.resume",
            "cnnlab.seeding",
            "cnnlab.slurm",
            "cnnlab.stopping",
            "cnnlab.tables",
        ),
    ),
    ("data, pictures, MLflow", ("cnnlab.data", "cnnlab.viz", "cnnlab.tracking")),
    ("architectures", ("cnnlab.models",)),
    ("tasks", ("cnnlab.tasks", "cnnlab.finetune", "cnnlab.checkpointing")),
    (
        "work",
        (
            "cnnlab.pretrained",
            "cnnlab.restore",
            "cnnlab.training",
            "cnnlab.training_run",
            "cnnlab.sweep",
            "cnnlab.evaluation",
            "cnnlab.prediction",
            "cnnlab.explain",
            "cnnlab.reproduce",
        ),
    ),
    ("commands", ("cnnlab.cli", "hydra_plugins")),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(SRC.rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The module of src/ that `name` (a module, or a module.attribute) is, or lies in; None outside src/."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> dict[str, int]:
    """The modules of src/ that `module` imports anywhere in its file -> the first line doing so.

    A module's own packages are left out: Python imports them before the module itself anyway.
    """
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name)
            if target and target != module and not module.startswith(target + "."):
                found.setdefault(target, node.lineno)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def layer_of(module: str) -> int:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return index
    return -1


def find_cycle() -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, str] = {}  # "open" while on the path, "done" after

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for target in sorted(GRAPH[module]):
            if state.get(target) == "open":
                return path[path.index(target) :] + [target]
            if target not in state:
                cycle = visit(target, path + [target])
                if cycle:
                    return cycle
        state[module] = "done"
        return None

    for module in sorted(GRAPH):
        if module not in state:
            cycle = visit(module, [module])
            if cycle:
                return cycle
    return None


def test_the_walk_sees_top_level_and_function_level_imports():
    # training.py imports the work at its top; cli/train.py imports training inside its Hydra main
    assert "cnnlab.data.prepare" in GRAPH["cnnlab.training"]
    assert "cnnlab.training" in GRAPH["cnnlab.cli.train"]


def test_no_import_cycle():
    cycle = find_cycle()
    assert cycle is None, (
        "import cycle: "
        + " -> ".join(f"{a} (line {GRAPH[a][b]})" for a, b in zip(cycle, cycle[1:]))
        + f" -> {cycle[-1]}"
    )


def test_every_module_has_a_layer():
    assert [m for m in MODULES if m != "cnnlab" and layer_of(m) < 0] == []


@pytest.mark.parametrize("layer", range(len(LAYERS)), ids=[name for name, _ in LAYERS])
def test_no_module_imports_a_higher_layer(layer):
    upward = [
        f"{module}:{line} imports {target} ({LAYERS[layer_of(target)][0]})"
        for module in sorted(MODULES)
        if layer_of(module) == layer
        for target, line in sorted(GRAPH[module].items())
        if layer_of(target) > layer
    ]
    assert upward == []


def test_tracking_imports_neither_data_nor_pictures():
    """tracking/ tracks: what a training or an evaluation logs lives with training.py and evaluation.py."""
    reaching = [
        f"{module}:{line} imports {target}"
        for module in sorted(MODULES)
        if module.startswith("cnnlab.tracking")
        for target, line in sorted(GRAPH[module].items())
        if target.startswith(("cnnlab.data", "cnnlab.viz"))
    ]
    assert reaching == []
