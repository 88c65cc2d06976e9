"""The package's layout rules (docs/architecture.md), read from the source: file sizes, import
direction, no import cycles, no private names imported across packages."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "omnifer"
#: top-level modules and packages, lowest layer first; a module imports only its own layer or
#: layers before it (__main__ -> cli -> pipeline -> stages -> data/models/faces -> base)
BASE = {"errors", "labels", "metrics", "uncertainty", "plots", "artifacts", "checks", "registry",
        "device", "allocator", "config", "host", "workspace", "records", "__init__"}
STAGES = {"synth", "pools", "mining", "distill", "train", "hub", "report"}
LAYERS = [BASE, {"data"}, {"models", "faces"}, STAGES, {"pipeline"}, {"cli"}, {"__main__"}]
#: stage packages that may import another stage (docs/architecture.md says why)
STAGE_IMPORTS = {("mining", "pools")}


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(path: Path, name: str, known: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every omnifer import, lazy ones included."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", "") == "TYPE_CHECKING"
                   for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("omnifer")]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([mod] if mod else []))
            if not mod.startswith("omnifer"):
                continue
            names = [a.name for a in node.names]
            subs = [n for n in names if f"{mod}.{n}" in known]  # `from pkg import module`
            out += [(f"{mod}.{n}", []) for n in subs]
            rest = [n for n in names if n not in subs]
            if rest or not subs:
                out.append((mod, rest))
    return out


def layer(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else "__init__"
    return next(i for i, names in enumerate(LAYERS) if top in names)


def test_files_are_small():
    big = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
           if (n := len(p.read_text().splitlines())) > 450}
    assert not big, f"files over 450 lines: {big}"
    cli = {p.name: n for p in (PACKAGE / "cli").glob("*.py")
           if (n := len(p.read_text().splitlines())) > 150}
    assert not cli, f"cli modules over 150 lines: {cli}"


def test_imports_point_down_and_take_no_private_names_across_packages():
    known = modules()
    wrong = []
    for name, path in known.items():
        for target, names in imports(path, name, known):
            if target not in known:
                wrong.append(f"{name} imports {target}, which does not exist")
                continue
            if layer(target) > layer(name):
                wrong.append(f"{name} imports {target} (a higher layer)")
            pair = (name.split(".")[1:2] or [""])[0], (target.split(".")[1:2] or [""])[0]
            if pair[0] != pair[1] and set(pair) <= STAGES and pair not in STAGE_IMPORTS:
                wrong.append(f"{name} imports {target}: a stage imports no other stage")
            own = name.split(".")[:2] if name.count(".") else ["omnifer"]
            if target.split(".")[:2] != own:
                wrong += [f"{name} imports the private {target}.{n}" for n in names
                          if n.startswith("_") and not n.endswith("__")]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    known = modules()
    graph = {name: {t for t, _ in imports(path, name, known) if t in known and t != name}
             for name, path in known.items()}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [node, nxt]))
            elif nxt not in state:
                visit(nxt, stack + [node])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    # a package's __init__ re-exporting its own modules is not a cycle of the code
    cycles = [c for c in cycles if not _only_package_init(c)]
    assert not cycles, "\n".join(cycles)


def _only_package_init(cycle: str) -> bool:
    parts = cycle.split(" -> ")
    return any(b.startswith(a + ".") and a.count(".") >= 1 for a, b in zip(parts, parts[1:])) \
        and all(p.split(".")[:2] == parts[0].split(".")[:2] for p in parts)
