"""The architecture rules of the package (issue 17, item 6), checked on the source with ``ast`` (no module is
imported, so the whole check takes well under a second):

1. dependencies point down the layer table :data:`LAYERS` (a package imports only packages of a lower layer;
   the leaves ``viz`` and ``data`` import only the few base modules named in :data:`LEAVES`);
2. no library module imports a ``cli`` module, and a ``cli.py`` imports at its top only the standard library,
   its own package and the base modules (``errors``, ``neurons``, ``lazy``) — the argument helpers it shares
   with a lower command line are listed in :data:`SHARED_CLI` —, so ``finegrain --help`` starts fast;
3. no module imports a private (``_name``) module or name of another package (tests and ``finegrain.testing``
   may: they are white-box);
4. imports sit at the module top; one inside a function carries its reason in a comment on its line or the
   line above (``# heavy: ...`` for a slow import such as torch, transformers, matplotlib, captum or the
   heavy modules a command runs; ``# optional: ...`` for an optional dependency such as ray, spaCy or h5py;
   ``# platform: ...`` for a module that exists on some systems only); a run of consecutive imports shares
   the comment of its first one. An import cycle is not a reason: move the shared piece down. The light
   base modules (``errors``, ``neurons``, ``lazy``) are never imported inside a function.

Re-exports through a package's lazy name table (``_API = {"name": "finegrain.pkg.module"}``, see
:func:`finegrain.lazy.lazy_api`) and attribute chains on the root package (``import finegrain`` ...
``finegrain.pkg.f``) count as imports.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "finegrain"

# -- the layer table ----------------------------------------------------------------------------------------
# package (first component below ``finegrain``; a top-level module is its own package) -> layer. A module may
# import modules of its own package and of packages in strictly lower layers; packages in one layer are
# independent of each other. ``finegrain`` itself (the root ``__init__``: ``__version__`` and lazy names) is
# importable from everywhere.
LAYERS: dict[str, int] = {
    "errors": 0,  # the exception classes
    "lazy": 0,  # lazy_api: names loaded on first use
    "neurons": 1,  # Neuron, NeuronIndex, parse_neurons
    "paths": 1,  # cache_dir: the one cache-directory default
    "results": 2,  # the result protocol, write_text_atomic
    "viz": 3,  # leaf: pictures and HTML of plain data
    "data": 3,  # leaf: corpora, readers, generators
    "store": 4,  # activation stores and views
    "models": 5,  # model adapters
    "extraction": 6,  # model x corpus -> store
    "testing": 6,  # tiny models for tests (never imported by the library)
    "testing_seq2seq": 7,
    "probe": 7,  # probes on views
    "rank": 8,  # neuron rankings from probes and statistics
    "evaluate": 9,  # control tasks, probe-side ablation
    # the analyses
    "attribute": 10,  # gradient attribution (models only)
    "describe": 10,  # top examples, compositional explanations of neurons
    "unsupervised": 10,  # similarity, correlation, redundancy, latent concepts (probe + rank)
    "intervene": 11,  # in-model edits (uses attribute's heads in its CLI, rank's AP)
    "translation": 11,  # encoder-decoder targets (attribute's Target protocol)
    "patching": 12,  # activation patching (intervene's edits)
    "mediation": 12,  # causal mediation (intervene's edits and scorers)
    "lens": 13,  # logit lens (patching's logit readers)
    "explain": 13,  # concept explanations of predictions (attribute + intervene + unsupervised concepts)
    # compositions
    "distributed": 14,  # ray: extraction and probing
    "report": 14,  # the HTML report: every analysis
    "cli": 15,  # the ``finegrain`` command
    "__main__": 16,
}

# the leaves: usable by every layer above, themselves using only these
LEAVES: dict[str, set[str]] = {
    "viz": {"errors", "lazy", "results"},
    "data": {"errors", "lazy", "neurons", "paths", "results"},
}

# (importing package, imported package) -> why an import against the table is right. Empty: there is none.
JUSTIFIED_UPWARD: dict[tuple[str, str], str] = {}

# (cli module, cli module of a lower package it takes argument helpers from) -> reason
SHARED_CLI: dict[tuple[str, str], str] = {
    ("finegrain.rank.cli", "finegrain.probe.cli"): "the data and probe arguments of every probe-based command",
    ("finegrain.evaluate.cli", "finegrain.probe.cli"): "the data and probe arguments of every probe-based command",
    ("finegrain.evaluate.cli", "finegrain.rank.cli"): "ablate-probe and evaluate rank as `finegrain rank` does",
}

LIGHT = {"finegrain.errors", "finegrain.neurons", "finegrain.lazy"}
REASON = re.compile(r"#.*\b(heavy|optional|platform)\b", re.IGNORECASE)

# modules that may import other packages' private names (white-box helpers for the tests)
WHITE_BOX = {"finegrain.testing", "finegrain.testing_seq2seq"}

@dataclass(frozen=True)
class Import:
    path: str  # file below src/finegrain
    module: str  # the importing module
    line: int
    target: str  # the imported module
    names: tuple[str, ...]  # the names a ``from`` import takes
    in_function: bool
    type_checking: bool
    reason: bool  # a function-level import with its reason (own, or of the run it starts with)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(dotted: str) -> bool:
    p = SRC.parent.joinpath(*dotted.split("."))
    return p.is_dir() or p.with_suffix(".py").is_file()


def package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _root_names() -> dict[str, str]:
    """Names the root package loads lazily (``_FUNCTIONS``): name -> module."""
    tree = ast.parse((SRC / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_FUNCTIONS" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def _has_reason(lines: list[str], node: ast.stmt) -> bool:
    above = lines[node.lineno - 2] if node.lineno > 1 else ""
    own = lines[node.lineno - 1 : node.end_lineno]
    return any(REASON.search(t) for t in [above, *own])


def _bodies(node: ast.stmt) -> list[list[ast.stmt]]:
    """The statement lists inside a compound statement (class, if, for, while, with, try, match)."""
    out = [getattr(node, f) for f in ("body", "orelse", "finalbody") if isinstance(getattr(node, f, None), list)]
    out += [h.body for h in getattr(node, "handlers", [])]
    out += [c.body for c in getattr(node, "cases", [])]
    return out


@cache
def imports() -> tuple[Import, ...]:
    root_names = _root_names()
    out: list[Import] = []
    for path in sorted(SRC.rglob("*.py")):
        out += _file_imports(path, root_names)
    return tuple(out)


def _file_imports(path: Path, root_names: dict[str, str]) -> list[Import]:
    out: list[Import] = []
    rel = path.relative_to(SRC).as_posix()
    module = _module_name(path)
    is_pkg = path.name == "__init__.py"
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    tree = ast.parse(text)

    def add(node, target, names, in_function, type_checking, reason):
        out.append(Import(rel, module, node.lineno, target, tuple(names), in_function, type_checking, reason))

    def visit(body, in_function, type_checking):
        prev_reason = None  # the reason of the import run this statement continues (None: no run)
        for node in body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                reason = _has_reason(lines, node) or bool(prev_reason)
                prev_reason = reason
                if isinstance(node, ast.Import):
                    for a in node.names:
                        add(node, a.name, (), in_function, type_checking, reason)
                    continue
                if node.level:
                    base = module.split(".") if is_pkg else module.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    if target == "finegrain" and a.name in root_names:
                        add(node, root_names[a.name], (a.name,), in_function, type_checking, reason)
                    elif _is_module(sub):
                        add(node, sub, (), in_function, type_checking, reason)
                    else:
                        add(node, target, (a.name,), in_function, type_checking, reason)
                continue
            prev_reason = None
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(node.body, True, type_checking)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.body, in_function, True)
                visit(node.orelse, in_function, type_checking)
            else:
                for inner in _bodies(node):
                    visit(inner, in_function, type_checking)

    visit(tree.body, False, False)
    # lazy name tables and root attribute chains
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") in ("_API", "_FUNCTIONS")
                                                for t in node.targets):
            try:
                table = ast.literal_eval(node.value)
            except ValueError:
                continue
            for name, target in table.items():
                add(node, target, (name,), False, False, False)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "finegrain":
            sub = f"finegrain.{node.attr}"
            if _is_module(sub):
                add(node, sub, (), False, False, False)
            elif node.attr in root_names:
                add(node, root_names[node.attr], (node.attr,), False, False, False)
    return out


def internal() -> list[Import]:
    return [i for i in imports() if i.target == "finegrain" or i.target.startswith("finegrain.")]


def _where(i: Import) -> str:
    return f"src/finegrain/{i.path}:{i.line}: {i.module} imports {i.target}" + (
        f" ({', '.join(i.names)})" if i.names else "")


def test_the_scan_sees_the_package():
    # guards against a rule passing because nothing was read
    found = internal()
    assert len({i.path for i in found}) > 80
    assert any(i.module == "finegrain.rank.ranking" and i.target == "finegrain.neurons" for i in found)
    assert any(i.in_function for i in found)
    assert any(i.module == "finegrain.viz" and i.target == "finegrain.viz.heatmap" for i in found)  # via _API


def test_every_package_has_a_layer():
    packages = {package_of(_module_name(p)) for p in SRC.rglob("*.py")} - {None}
    assert not packages - set(LAYERS), f"put these packages into LAYERS: {sorted(packages - set(LAYERS))}"


def test_dependencies_point_down():
    bad = []
    for i in internal():
        a, b = package_of(i.module), package_of(i.target)
        if a is None or b is None or a == b:
            continue
        if (a, b) in JUSTIFIED_UPWARD:
            continue
        if a in LEAVES and b not in LEAVES[a]:
            bad.append(f"{_where(i)}: the leaf {a} may import only {sorted(LEAVES[a])}")
        elif LAYERS[b] >= LAYERS[a]:
            bad.append(f"{_where(i)}: {b} (layer {LAYERS[b]}) is not below {a} (layer {LAYERS[a]})")
    assert not bad, "imports against the layer table:\n" + "\n".join(bad)


def test_the_testing_helpers_stay_out_of_the_library():
    bad = [_where(i) for i in internal() if package_of(i.target) in ("testing", "testing_seq2seq")
           and package_of(i.module) not in ("testing", "testing_seq2seq")]
    assert not bad, "\n".join(bad)


def _is_cli(module: str) -> bool:
    return module == "finegrain.cli" or module.endswith(".cli")


def test_no_library_module_imports_a_cli():
    bad = [_where(i) for i in internal() if _is_cli(i.target) and not _is_cli(i.module)
           and i.module != "finegrain.__main__"]
    assert not bad, "library modules importing a command line:\n" + "\n".join(bad)


def test_a_cli_imports_only_light_modules_at_its_top():
    stdlib = sys.stdlib_module_names
    bad = []
    for i in imports():
        if not _is_cli(i.module) or i.in_function or i.type_checking:
            continue
        top = i.target.split(".")[0]
        if top == "__future__" or (top in stdlib and top != "finegrain"):
            continue
        own = package_of(i.module) is not None and package_of(i.target) == package_of(i.module)
        if own or i.target in LIGHT or (i.module, i.target) in SHARED_CLI:
            continue
        if i.target == "finegrain" and not i.names:  # the root package: lazy, nothing imported with it
            continue
        bad.append(_where(i))
    assert not bad, "a cli.py imports these at its top (import them inside the command, `# heavy: ...`):\n" + \
        "\n".join(bad)


def test_shared_cli_helpers_are_argparse_level():
    # the cli modules others take helpers from import only the standard library and the base modules at the top
    stdlib = sys.stdlib_module_names
    shared = {b for _, b in SHARED_CLI}
    bad = [_where(i) for i in internal() if i.module in shared and not i.in_function and i.target not in LIGHT
           and i.target.split(".")[0] not in stdlib and (i.module, i.target) not in SHARED_CLI]
    assert not bad, "\n".join(bad)


def _private(i: Import) -> bool:
    parts = i.target.split(".")[1:] + list(i.names)
    return any(p.startswith("_") and not (p.startswith("__") and p.endswith("__")) for p in parts)


def test_no_private_imports_across_packages():
    bad = [_where(i) for i in internal() if package_of(i.target) != package_of(i.module)
           and i.module not in WHITE_BOX and _private(i)]
    assert not bad, "private names of another package (make them public in its API):\n" + "\n".join(bad)


def _local_violations() -> dict[tuple[str, int], tuple[Import, str]]:
    """Function-level imports that break rule 4, one per statement: ``(file, line) -> (import, what)``."""
    out: dict[tuple[str, int], tuple[Import, str]] = {}
    for i in imports():
        if not i.in_function or i.type_checking or (i.path, i.line) in out:
            continue
        if i.target in LIGHT:
            out[i.path, i.line] = (i, "a base module: import it at the top")
        elif not i.reason:
            out[i.path, i.line] = (i, "no `# heavy:` / `# optional:` / `# platform:` reason")
    return out


def test_function_level_imports_say_why():
    bad = [f"{_where(i)}: {what}" for i, what in _local_violations().values()]
    assert not bad, "function-level imports:\n" + "\n".join(bad)
