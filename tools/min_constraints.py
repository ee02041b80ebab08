"""Print pip constraints pinning every dependency of pyproject.toml to its declared minimum.

``make test-min`` installs the package with them and runs the test suite, so the floors in
``pyproject.toml`` are versions that were seen to work, not guesses. The run-time
dependencies and the ``stglm[dask]`` extra (which the test extra installs) are pinned; the
test tools (pytest, statsmodels, ...) resolve to the newest versions compatible with those
pins. ``--extra NAME`` pins another optional extra's floors too (``make docs-min``: the site
built with the ``docs`` extra's floors).

Usage: ``python tools/min_constraints.py [--extra NAME] [pyproject.toml] > constraints.txt``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: pip vendors the same parser
    from pip._vendor import tomli as tomllib

#: A requirement with a lower bound: name, optional extras, ``>=`` version.
FLOOR = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*>=\s*([^,;\s]+)")


#: Optional extras whose floors are always pinned (their packages are in the test extra).
PINNED_EXTRAS = ("dask",)


def floors(pyproject: Path, extras: tuple[str, ...] = ()) -> list[str]:
    """``name==floor`` for every run-time dependency, ``PINNED_EXTRAS`` and ``extras``.

    Raises SystemExit if one has no ``>=`` floor.
    """
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"pyproject.toml has no extra {extra!r}.")
    for extra in dict.fromkeys((*PINNED_EXTRAS, *extras)):
        requirements += optional.get(extra, [])
    pins = []
    for requirement in requirements:
        match = FLOOR.match(requirement)
        if match is None:
            raise SystemExit(f"{requirement!r} declares no minimum version (name>=version).")
        pins.append(f"{match.group(1)}=={match.group(3)}")
    return pins


def main(argv: list[str]) -> int:
    """Print the pins for the given pyproject.toml (default: the repository's)."""
    args, extras = list(argv[1:]), []
    while "--extra" in args:
        at = args.index("--extra")
        extras.append(args[at + 1])
        del args[at : at + 2]
    root = Path(__file__).resolve().parents[1]
    path = Path(args[0]) if args else root / "pyproject.toml"
    print("\n".join(floors(path, tuple(extras))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
