"""The seed's documented API: every name imports, with the documented signature.

The expected signatures are parsed from the API text itself (an in-repo copy of
``shared/seed/generalized_lm_api.txt``), so nothing documented can be forgotten.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

import stglm

API_FILE = Path(__file__).parent / "data" / "generalized_lm_api.txt"
# Beside the clone in CI and in the workspace: the original the in-repo copy was taken from.
SHARED_API_FILE = Path(__file__).resolve().parents[2] / "shared" / "seed" / "generalized_lm_api.txt"
MODULE = "spateo.tools.ST_regression.generalized_lm"

# Being built in issues 4/5; flip to passing when they land (strict=False).
PENDING: set[str] = set()

DOCUMENTED_NAMES = {
    "_z",
    "_nl",
    "_grad_nl",
    "batch_grad",
    "log_likelihood",
    "_loss",
    "pseudo_r2",
    "deviance",
    "GLM",
    "GLMCV",
    "fit_glm",
    "calc_1nd_moment",
}

_MISSING = object()


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split at ``sep`` outside brackets (``Literal[a, b]``, ``Union[...]`` keep their commas)."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur))
    return [p.strip() for p in parts]


def _param_list(text: str):
    """'a: T = 1, b, **kw' -> [(name, default or _MISSING, kind), ...]."""
    params = []
    for item in split_top_level(text):
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        if item.startswith("**"):
            kind, item = inspect.Parameter.VAR_KEYWORD, item[2:]
        elif item.startswith("*"):
            kind, item = inspect.Parameter.VAR_POSITIONAL, item[1:]
        head, *default = split_top_level(item, "=")
        name = split_top_level(head, ":")[0]
        value = ast.literal_eval(default[0]) if default else _MISSING
        params.append((name, value, kind))
    return params


def _balanced_args(line: str, start: int) -> str:
    """The text inside the parentheses that open at ``line[start]``."""
    depth = 0
    for i in range(start, len(line)):
        depth += line[i] in "[(" or -(line[i] in "])")
        if depth == 0:
            return line[start + 1 : i]
    raise ValueError(f"unbalanced signature: {line!r}")


def parse_api(path: Path = API_FILE):
    """Documented names -> ("function"|"class", params, {method: params})."""
    api, current_class = {}, None
    sig = re.compile(r"^(class )?" + re.escape(MODULE) + r"\.(\w+)\(")
    method = re.compile(r"^(\w+)\(")
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.rstrip().endswith("[source]#"):
            continue
        if m := sig.match(line):
            is_class, name = bool(m.group(1)), m.group(2)
            params = _param_list(_balanced_args(line, m.end() - 1))
            api[name] = ("class" if is_class else "function", params, {})
            current_class = name if is_class else None
        elif (m := method.match(line)) and current_class is not None:
            params = _param_list(_balanced_args(line, m.end() - 1))
            api[current_class][2][m.group(1)] = params
    return api


API = parse_api()


def _maybe_pending(name):
    marks = [pytest.mark.xfail(strict=False, reason="pending issue 4/5")] if name in PENDING else []
    return pytest.param(name, marks=marks, id=name)


NAMES = [_maybe_pending(n) for n in sorted(API)]
METHODS = [
    pytest.param(
        cls,
        meth,
        id=f"{cls}.{meth}",
        marks=[pytest.mark.xfail(strict=False, reason="pending issue 4/5")]
        if cls in PENDING
        else [],
    )
    for cls in sorted(API)
    if API[cls][0] == "class"
    for meth in sorted(API[cls][2])
]


def _import(name):
    module = importlib.import_module("stglm.generalized_lm")
    return getattr(module, name)


# ---------------------------------------------------------------------------------------------
def test_parser_finds_every_documented_name():
    assert set(API) == DOCUMENTED_NAMES
    kinds = {n: k for n, (k, _, _) in API.items()}
    assert {n for n, k in kinds.items() if k == "class"} == {"GLM", "GLMCV"}
    # Spot-check the bracket handling: `distr`'s Literal[...] holds commas.
    glm = API["GLM"][1]
    assert [p[0] for p in glm][:3] == ["distr", "alpha", "Tau"]
    assert glm[0][1] == "poisson" and glm[6][1] == 1e-6
    assert API["fit_glm"][1][-1] == ("kwargs", _MISSING, inspect.Parameter.VAR_KEYWORD)
    assert API["calc_1nd_moment"][1][-1][:2] == ("normalize_W", True)
    assert set(API["GLM"][2]) == {"__repr__", "_prox", "fit", "predict", "fit_predict", "score"}


def test_in_repo_copy_matches_shared_seed():
    if not SHARED_API_FILE.exists():
        pytest.skip("shared/seed is not beside this checkout")
    assert API_FILE.read_text(encoding="utf-8") == SHARED_API_FILE.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", NAMES)
def test_documented_name_imports(name):
    module = importlib.import_module("stglm.generalized_lm")
    ns: dict = {}
    exec(f"from stglm.generalized_lm import {name}", ns)  # the exact statement users write
    assert ns[name] is getattr(module, name)
    kind = API[name][0]
    assert inspect.isclass(ns[name]) if kind == "class" else callable(ns[name])


def _check_params(actual: inspect.Signature, documented, where: str):
    params = list(actual.parameters.values())
    positional = [p for p in documented if p[2] != inspect.Parameter.VAR_KEYWORD]
    assert len(params) >= len(positional), f"{where}: missing parameters"
    for (name, default, kind), got in zip(positional, params, strict=False):
        assert got.name == name, f"{where}: expected {name!r} at this position, got {got.name!r}"
        assert got.kind == kind, (
            f"{where}: {name} is {got.kind.description}, not {kind.description}"
        )
        if default is _MISSING:
            assert got.default is inspect.Parameter.empty, f"{where}: {name} must be required"
        else:
            assert got.default == default and type(got.default) is type(default), (
                f"{where}: default of {name} is {got.default!r}, documented {default!r}"
            )
    # Anything beyond the documented list must be optional and keyword-usable, so every
    # documented call still works (e.g. GLM's keyword-only `solver`).
    extras = [p for p in params[len(positional) :] if p.kind != inspect.Parameter.VAR_KEYWORD]
    for p in extras:
        assert p.kind is not inspect.Parameter.VAR_POSITIONAL, f"{where}: *{p.name}"
        assert p.default is not inspect.Parameter.empty, f"{where}: extra {p.name} needs a default"
    if any(k == inspect.Parameter.VAR_KEYWORD for _, _, k in documented):
        assert params[-1].kind == inspect.Parameter.VAR_KEYWORD, f"{where}: **kwargs missing"


@pytest.mark.parametrize("name", NAMES)
def test_documented_signature(name):
    kind, documented, _ = API[name]
    obj = _import(name)
    _check_params(inspect.signature(obj), documented, name)


def test_glm_extra_parameters_are_keyword_only():
    documented = {p[0] for p in API["GLM"][1]}
    extra = [
        p for p in inspect.signature(_import("GLM")).parameters.values() if p.name not in documented
    ]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in extra), extra


def test_glmcv_accepts_verbose():
    # SEMANTICS: the documented-but-missing `verbose` is accepted by stglm's GLMCV.
    assert "verbose" in inspect.signature(_import("GLMCV")).parameters


@pytest.mark.parametrize(("cls", "meth"), METHODS)
def test_documented_method(cls, meth):
    klass = _import(cls)
    assert callable(getattr(klass, meth, None)), f"{cls}.{meth} is missing"
    if meth == "__repr__":
        return
    sig = inspect.signature(getattr(klass, meth))
    sig = sig.replace(parameters=list(sig.parameters.values())[1:])  # drop self
    _check_params(sig, API[cls][2][meth], f"{cls}.{meth}")


@pytest.mark.parametrize("name", stglm.__all__)
def test_package_all_names_import(name):
    ns: dict = {}
    exec(f"from stglm import {name}", ns)
    assert ns[name] is getattr(stglm, name)


def test_face_all_names_exist():
    module = importlib.import_module("stglm.generalized_lm")
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing
