"""Run every stglm benchmark and write the tables.

Writes benchmarks/results/solver.json, cv.json and results.md (the tables, the machine, the
command and the state of the source tree), and prints the tables.

Recommended command (from the repository root; see README.md for why the OpenBLAS
variables are unset for this command only):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/run_all.py

``--quick`` uses 2 of the 5 Visium genes (about half the time).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_cv  # noqa: E402
import bench_solver  # noqa: E402
import common as C  # noqa: E402


def git_state() -> str:
    """HEAD and the modified files of src/, so a table can be tied to the code it timed."""
    state = C.git_src_state()
    if state is None:
        return "unknown"
    head, dirty = state
    return head + (
        f" + uncommitted changes in {len(dirty)} file(s) of src/: " + ", ".join(dirty)
        if dirty
        else " (src/ clean)"
    )


def machine_block(info: dict, mm: dict) -> str:
    blas = "; ".join(
        f"{b['internal_api']} {b['version']}, kernel {b['architecture']}, "
        f"{b['num_threads']} threads"
        for b in info["blas"]
    )
    lines = [
        "## Machine",
        "",
        f"- CPU: {info['cpu']}, {info['cores']} cores (lscpu).",
        f"- numpy BLAS (threadpoolctl): {blas}.",
        f"- OPENBLAS_CORETYPE in this run: {info['OPENBLAS_CORETYPE'] or 'unset'}.",
        f"- Reference matmuls (1 process, numpy default threads): Gram of a 20,000 × 51 array "
        f"{C.fmt_time(mm['gram_seconds'])} = {mm['gram_gflops']:.0f} GFLOP/s; 2000×2000 @ "
        f"2000×2000 {mm['square_2000_gflops']:.0f} GFLOP/s.",
        f"- Python {info['python']}, numpy {info['numpy']}, scipy {info['scipy']}, numba "
        f"{info['numba']}, scikit-learn {info['sklearn']}, glum {info['glum']}; "
        f"{info.get('R', 'R not found')}.",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 Visium genes instead of 5")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    if os.environ.get("OPENBLAS_CORETYPE"):
        print(
            f"note: OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} forces an older "
            "OpenBLAS kernel; see README.md for the recommended command.",
            file=sys.stderr,
        )
    t0 = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    solver = bench_solver.run(quick=args.quick)
    print(solver["table"], "\n", flush=True)
    cv = bench_cv.run(quick=args.quick)
    print(cv["table"], flush=True)
    (args.out / "solver.json").write_text(json.dumps(solver, indent=1, default=C.jsonable))
    (args.out / "cv.json").write_text(json.dumps(cv, indent=1, default=C.jsonable))
    command = " ".join(
        [
            "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE"
            if not os.environ.get("OPENBLAS_CORETYPE")
            else "",
            ".venv/bin/python",
            "benchmarks/run_all.py",
            *(argv or sys.argv[1:]),
        ]
    )
    md = "\n\n".join(
        [
            "# stglm benchmark results",
            f"Command: `{command.strip()}` ({time.time() - t0:.0f} s). Source: {git_state()}. "
            f"Run at {time.strftime('%Y-%m-%d %H:%M %Z')}.",
            machine_block(solver["machine"], solver["matmul"]),
            solver["table"],
            cv["table"],
        ]
    )
    (args.out / "results.md").write_text(md + "\n")
    print(f"\nwrote {args.out / 'results.md'} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
