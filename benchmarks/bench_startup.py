"""Start-up cost of ``import stglm`` and ``stglm --help``, as ratios to what they cannot avoid.

Absolute start-up times swing several-fold with the machine's load, so each case is timed
against its baseline in the same run, the two interleaved (baseline, case, baseline, case,
...), each a fresh interpreter, after one warm-up of each (the file cache):

- ``import stglm`` vs ``import numpy, scipy.sparse, sklearn.base, pandas`` (goal ≤ 1.2×);
- ``stglm --help`` vs ``import numpy, click`` (goal ≤ 2×).

Run: ``.venv/bin/python benchmarks/bench_startup.py [--repeats 11] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import git_src_state, loadavg, machine_info, markdown_table

#: What ``import stglm`` could not avoid if it loaded its estimators' dependencies.
BASE_IMPORT = "import numpy, scipy.sparse, sklearn.base, pandas"

#: (case, its command — None for the console script —, the baseline's code, goal for the
#: ratio of the medians)
CASES = (
    ("import stglm", [sys.executable, "-c", "import stglm"], BASE_IMPORT, 1.2),
    ("stglm --help", None, "import numpy, click", 2.0),
)


def help_command() -> list[str]:
    """The ``stglm`` console script next to this interpreter, else ``python -m stglm``."""
    script = Path(sys.executable).with_name("stglm")
    if script.exists():
        return [str(script), "--help"]
    found = shutil.which("stglm")
    return [found, "--help"] if found else [sys.executable, "-m", "stglm", "--help"]


def wall(command: list[str]) -> float:
    """Seconds a fresh process running ``command`` takes, start to exit."""
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - started


def measure(repeats: int) -> list[dict]:
    """Median wall times of every case and its baseline, interleaved, and their ratio."""
    rows = []
    for name, command, baseline_code, goal in CASES:
        command = command or help_command()
        baseline = [sys.executable, "-c", baseline_code]
        wall(baseline), wall(command)  # warm-up: file cache, .pyc
        base_times, case_times = [], []
        for _ in range(repeats):
            base_times.append(wall(baseline))
            case_times.append(wall(command))
        base, case = statistics.median(base_times), statistics.median(case_times)
        rows.append(
            {
                "case": name,
                "baseline": baseline_code,
                "case_s": case,
                "baseline_s": base,
                "ratio": case / base,
                "goal": goal,
                "case_times": case_times,
                "baseline_times": base_times,
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    return markdown_table(
        ["case", "median", "baseline", "median", "ratio", "goal"],
        [
            [
                f"`{r['case']}`",
                f"{r['case_s'] * 1e3:.0f} ms",
                f"`{r['baseline']}`",
                f"{r['baseline_s'] * 1e3:.0f} ms",
                f"{r['ratio']:.2f}×",
                f"≤ {r['goal']:g}× {'met' if r['ratio'] <= r['goal'] else 'NOT met'}",
            ]
            for r in rows
        ],
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=11, help="timed runs of each (≥ 7)")
    ap.add_argument("--json", type=Path, help="write all numbers here")
    args = ap.parse_args(argv)
    if args.repeats < 7:
        ap.error("--repeats must be at least 7")
    load_before = loadavg()
    rows = measure(args.repeats)
    info = machine_info()
    state = git_src_state()
    print(
        f"Machine: {info['cpu']}, {info['cores']} cores; Python {info['python']}; "
        f"load average before {load_before}, after {loadavg()}; "
        f"{args.repeats} interleaved repeats each; source "
        f"{state[0] + (' (src/ modified)' if state[1] else '') if state else '?'}."
    )
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "rows": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
