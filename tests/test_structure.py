"""The package's shape: imports run one way (no cycle, function-level imports included), and no
function grows past what a reader takes in at once."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pawnet"
LONGEST_FUNCTION = 60
# The package's layers, in the order they may import each other: photos and data sets; networks,
# what a model shows, trained models; training; the uses of a trained model; the command line.
LAYERS = [
    "errors",
    "version",
    "config_check",
    "atomic",
    "rundir",
    "progress",
    "images",
    "data",
    "cache",
    "augment",
    "devices",
    "allocator",
    "distributed",
    "audit",
    "download",
    "models",
    "architectures",
    "settings",
    "modeldir",
    "metrics",
    "calibration",
    "imagenet",
    "unknown",
    "plots",
    "explanations",
    "report",
    "predictor",
    "onnx_model",
    "classifier",
    "training",
    "onnx_export",
    "engine",
    "loader",
    "labels",
    "server",
    "cli",
    "__main__",
]


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    return (PACKAGE.parent / name.replace(".", "/")).with_suffix(".py").exists()


def _imports(path: Path) -> set[str]:
    """Every pawnet module `path` imports, wherever the import statement stands."""
    here = _module(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(filter(None, [package.rsplit(".", node.level - 1)[0], base]))
            # `from . import name` imports the module `name` where there is one.
            found |= {f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") else base for a in node.names}
    return {m for m in found if m == "pawnet" or m.startswith("pawnet.")} - {here}


def import_graph() -> dict[str, set[str]]:
    return {_module(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for after in sorted(graph.get(node, ())):
            if state.get(after) == "open":
                return path[path.index(after) :] + [after]
            if after not in state and (cycle := visit(after)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_imports_have_no_cycle():
    graph = import_graph()
    assert len(graph) > 20 and graph["pawnet.training"] >= {"pawnet.classifier", "pawnet.rundir"}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_each_module_imports_only_those_before_it():
    place = {f"pawnet.{name}": i for i, name in enumerate(LAYERS)}
    graph = import_graph()
    unlisted = set(graph) - set(place) - {"pawnet"}
    assert not unlisted, f"add {sorted(unlisted)} to LAYERS where it belongs"
    backwards = [(m, d) for m, deps in graph.items() if m != "pawnet" for d in deps if place.get(d, 1e9) >= place[m]]
    assert not backwards, backwards


def test_the_graph_holds_function_level_imports_and_the_finder_finds_cycles():
    assert "pawnet.training" in import_graph()["pawnet.cli"]  # imported inside cli._train only
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_function_is_longer_than_a_screen():
    lengths = {
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}": node.end_lineno - node.lineno + 1
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    }
    too_long = {name: n for name, n in lengths.items() if n > LONGEST_FUNCTION}
    assert not too_long, too_long
