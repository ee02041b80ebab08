"""Fail when a function in ``src/`` is more complex than ``MAX_COMPLEXITY`` (``make lint``).

Complexity is radon's cyclomatic complexity, as ``radon cc`` reports it (a function's nested
functions count towards it). The compiled numba kernels are exempt: their loops are written
out by hand for speed. Functions over the limit today are listed in ``ALLOWED``, each with
why; an entry that is no longer needed (the function got simpler, or is gone) fails too, so
the list only shrinks.

Usage: ``python tools/check_complexity.py [SRC]``; exit status 1 with a list of offenders.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

from radon.complexity import cc_visit
from radon.visitors import Function

ROOT = Path(__file__).resolve().parents[1]
#: The most decision points a function may have (radon's grade C ends at 20).
MAX_COMPLEXITY = 20
#: Files not checked (glob patterns relative to the folder above ``src``): the numba kernels.
EXCLUDED = ("src/stglm/_solvers/_*kernels.py",)
#: Functions allowed above the limit, as "path:qualified name" — none since the Newton
#: template and the cross-validation driver of issue 14 split the last two (fit_genes,
#: BatchedNewtonCD.solve). A function that must stay complex is listed here with why.
ALLOWED: set[str] = set()


def functions(src: Path) -> Iterator[tuple[str, int, int]]:
    """("path:qualified name", line, complexity) of every function and method under ``src``."""
    for path in sorted(src.rglob("*.py")):
        relative = path.relative_to(src.parent).as_posix()  # "src/stglm/..."
        if any(Path(relative).match(pattern) for pattern in EXCLUDED):
            continue
        for block in cc_visit(path.read_text(encoding="utf-8")):
            if isinstance(block, Function):
                yield f"{relative}:{block.fullname}", block.lineno, block.complexity


def check(src: Path) -> list[str]:
    """Messages for every function over the limit and every stale ``ALLOWED`` entry."""
    problems, seen = [], set()
    for name, line, complexity in functions(src):
        if complexity <= MAX_COMPLEXITY:
            continue
        seen.add(name)
        if name not in ALLOWED:
            problems.append(
                f"{name} (line {line}): cyclomatic complexity {complexity} > "
                f"{MAX_COMPLEXITY}; split it"
            )
    for name in sorted(ALLOWED - seen):
        problems.append(
            f"{name}: in ALLOWED but not over {MAX_COMPLEXITY} (or gone); remove it from "
            "tools/check_complexity.py"
        )
    return problems


def main(argv: list[str]) -> int:
    """Print the problems; exit status 1 if there are any."""
    src = Path(argv[1]).resolve() if len(argv) > 1 else ROOT / "src"
    problems = check(src)
    for problem in problems:
        print(problem)
    if not problems:
        print(f"complexity: every function in {src} is at most {MAX_COMPLEXITY} (or allowed)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
