"""The package's structure: what importing it costs, that its names resolve, and its layers.

Start-up is checked by what gets imported (in a fresh interpreter), not by timing it: times
swing with the machine's load (``benchmarks/bench_startup.py`` measures them as ratios).
The layering is read from the source with ``ast``, imports inside functions included.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import stglm

SRC = Path(stglm.__file__).resolve().parent
#: Loaded by the functions that need them, never by ``import stglm``.
HEAVY_FOR_IMPORT = ("matplotlib", "anndata", "numba")
#: Not needed to print the command line's help either.
HEAVY_FOR_HELP = ("numba", "matplotlib", "anndata", "sklearn", "scipy")
#: Modules allowed to import the CLI: they run it (``python -m stglm``, ``make demo``).
CLI_RUNNERS = {"stglm.__main__", "stglm.demo"}


def loaded_after(code: str) -> set[str]:
    """Top-level packages in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = (
        "import json, sys\n"
        "try:\n" + "".join(f"    {line}\n" for line in code.splitlines()) + "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


# ---------------------------------------------------------------------------------------------
# start-up
# ---------------------------------------------------------------------------------------------
def test_import_stglm_loads_no_heavy_dependency():
    loaded = loaded_after("import stglm")
    assert "stglm" in loaded
    assert not loaded & set(HEAVY_FOR_IMPORT), sorted(loaded & set(HEAVY_FOR_IMPORT))


def test_public_names_resolve_and_load_their_dependencies_when_used():
    """Every name of __all__ resolves in a fresh interpreter, and then the heavy packages are
    loaded: the probe above is not vacuous."""
    code = (
        "import stglm\n"
        "missing = [n for n in stglm.__all__ if getattr(stglm, n, None) is None]\n"
        "assert not missing, missing"
    )
    assert set(HEAVY_FOR_IMPORT) <= loaded_after(code)


def test_cli_help_loads_no_heavy_dependency():
    code = "from stglm.cli import main\nmain(['--help'], prog_name='stglm')"
    loaded = loaded_after(code)
    assert {"click", "stglm"} <= loaded
    assert not loaded & set(HEAVY_FOR_HELP), sorted(loaded & set(HEAVY_FOR_HELP))


def test_cli_help_runs_as_a_program():
    done = subprocess.run(
        [sys.executable, "-m", "stglm", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "fit" in done.stdout, done.stderr


# ---------------------------------------------------------------------------------------------
# the public names
# ---------------------------------------------------------------------------------------------
def test_public_names_are_listed_and_unknown_names_fail():
    assert set(stglm.__all__) <= set(dir(stglm))
    assert {"generalized_lm", "__version__"} <= set(dir(stglm))
    for name in stglm.__all__:
        assert getattr(stglm, name) is not None
    from stglm import GLM, fit_genes, generalized_lm, spatial

    assert GLM.__module__ == "stglm._glm" and fit_genes.__module__ == "stglm._transcriptome"
    assert spatial.__name__ == "stglm.spatial" and generalized_lm.GLM is GLM
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        stglm.nope  # noqa: B018


# ---------------------------------------------------------------------------------------------
# layering
# ---------------------------------------------------------------------------------------------
def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _imports(tree: ast.AST):
    """Import nodes run at some point (module level or in functions), not TYPE_CHECKING ones."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if _type_checking_only(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    """stglm module -> the stglm modules it imports (importing a submodule runs its packages)."""
    files = {module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            else:
                base = package.split(".")
                base = base[: len(base) - node.level + 1] if node.level else []
                stem = ".".join([*base, *([node.module] if node.module else [])])
                # `from pkg import name` imports pkg.name when that is a module
                found = [stem] + [f"{stem}.{a.name}" for a in node.names]
            for target in found:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                # The module and every package above it, but not this module's own packages:
                # they are being imported already (a package importing its submodules is
                # no cycle).
                while target and not f"{name}.".startswith(f"{target}."):
                    targets.add(target)
                    target = target.rpartition(".")[0]
        graph[name] = targets
    return graph


GRAPH = import_graph()


def reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in GRAPH[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_the_import_graph_is_read():
    """Not vacuous: known edges, top-level and inside functions, are found."""
    assert "stglm._anndata" in GRAPH["stglm._transcriptome"]
    assert "stglm._solvers.batched" in GRAPH["stglm._transcriptome"]
    assert "stglm._transcriptome" in GRAPH["stglm.cli"]  # imported inside the command
    assert "stglm.cli" in GRAPH["stglm.demo"]
    assert "stglm._glm" not in GRAPH["stglm"]  # only under TYPE_CHECKING


def test_no_library_module_imports_the_cli():
    offenders = sorted(m for m, deps in GRAPH.items() if "stglm.cli" in deps)
    assert set(offenders) <= CLI_RUNNERS, offenders
    assert "stglm.cli" not in reachable("stglm.spatial")


def test_no_import_cycles():
    for module in GRAPH:
        assert module not in reachable(module), f"{module} imports itself through others"


# ---------------------------------------------------------------------------------------------
# the tools of `make lint` and `make test-min`
# ---------------------------------------------------------------------------------------------
TOOLS = SRC.parents[1] / "tools"


def load_tool(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_complexity_check_flags_complex_functions_and_stale_allowances(tmp_path):
    pytest.importorskip("radon")
    tool = load_tool("check_complexity")
    package = tmp_path / "src" / "stglm"
    (package / "_solvers").mkdir(parents=True)
    branches = "".join(
        f"    if x == {i}:\n        return {i}\n" for i in range(tool.MAX_COMPLEXITY)
    )
    (package / "busy.py").write_text(f"def busy(x):\n{branches}    return -1\n")
    (package / "_solvers" / "_cd_kernels.py").write_text(f"def kernel(x):\n{branches}")
    (package / "fine.py").write_text("def fine(x):\n    return x\n")
    problems = tool.check(tmp_path / "src")
    assert any(p.startswith("src/stglm/busy.py:busy (line 1)") for p in problems), problems
    assert not any("kernel" in p for p in problems)  # the numba kernels are exempt
    stale = {p.split(":")[0] + ":" + p.split(":")[1] for p in problems if "in ALLOWED" in p}
    assert stale == tool.ALLOWED  # none of them exists here: each is reported as stale
    assert tool.check(SRC.parent) == []  # and the real source passes


def test_min_constraints_pin_every_dependency_to_its_floor(tmp_path):
    import re

    tool = load_tool("min_constraints")
    pyproject = SRC.parents[1] / "pyproject.toml"
    pins = tool.floors(pyproject)
    text = pyproject.read_text(encoding="utf-8")
    assert "numpy==1.24" in pins and all("==" in p for p in pins)
    assert any(p.startswith("distributed==") for p in pins)  # the stglm[dask] extra's too
    for pin in pins:
        name, version = pin.split("==")
        assert re.search(rf'"{re.escape(name)}(\[[^\]]*\])?>={re.escape(version)}"', text), pin
    bad = tmp_path / "pyproject.toml"
    bad.write_text('[project]\nname = "x"\ndependencies = ["numpy"]\n')
    with pytest.raises(SystemExit, match="no minimum"):
        tool.floors(bad)


def test_every_third_party_import_is_declared():
    """Each package imported under src/ is a dependency in pyproject.toml, or one of the
    ``stglm[dask]`` extra imported only inside functions."""
    tomllib = load_tool("min_constraints").tomllib  # with its fallback for Python 3.10

    project = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text())["project"]

    def names(requirements):
        import_names = {"scikit_learn": "sklearn"}
        return {
            import_names.get(n, n)
            for n in (
                r.split(">")[0].split("=")[0].split("[")[0].strip().lower().replace("-", "_")
                for r in requirements
            )
        }

    declared = names(project["dependencies"])
    optional = names(project["optional-dependencies"]["dask"])  # the stglm[dask] extra
    imported, at_module_level = set(), set()
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = {id(node) for node in tree.body}
        for node in _imports(tree):
            if isinstance(node, ast.Import):
                found = {a.name.split(".")[0] for a in node.names}
            elif node.level == 0 and node.module:
                found = {node.module.split(".")[0]}
            else:
                continue
            imported |= found
            if id(node) in top:
                at_module_level |= found
    third_party = imported - set(sys.stdlib_module_names) - {"stglm", "__future__"}
    assert third_party, "no third-party import found: the walk is broken"
    assert third_party <= declared | optional, sorted(third_party - declared - optional)
    # The extra's packages are imported inside the functions that need them, so that the
    # library imports and runs in memory without them.
    assert {"dask", "distributed"} <= third_party
    assert not at_module_level & (optional - declared), sorted(at_module_level & optional)


def test_documents_cited_by_the_source_are_in_the_repository():
    import re

    root = SRC.parents[1]
    cited = {
        match
        for path in SRC.rglob("*.py")
        for match in re.findall(r"\bdocs/[\w./-]+\.(?:md|txt)", path.read_text(encoding="utf-8"))
    }
    assert "docs/SEMANTICS.md" in cited  # the docstrings point there
    assert all((root / c).is_file() for c in cited), sorted(
        c for c in cited if not (root / c).is_file()
    )
    # no docstring cites the bare name, which is not a path in the repository
    bare = [
        p.name for p in SRC.rglob("*.py") if re.search(r"(?<!docs/)SEMANTICS\.md", p.read_text())
    ]
    assert not bare, bare
