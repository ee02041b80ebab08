"""fit_genes at scale: cost in cells and genes, distance from the Hessian-product floor, memory.

Synthetic sparse Poisson counts (gene means log-uniform in 0.01–10, int32 CSR), X standard
normal with p = 10 and 30 columns, fixed λ = 1e-3, α = 0.5, log link, clip_coeffs = 0:
n ∈ {10⁴, 10⁵, 10⁶} × G ∈ {200, 1,000}, each job in its own process (scale_job.py: build,
fit, VmHWM, and the Zᵀ·W floor measured in the same process). Reports CPU and wall time,
the fit's own peak memory against the counts' bytes, the local exponents of CPU time in n
and in G, and the ratio to the floor; ``--before PYTHON`` runs some jobs with another
checkout's interpreter too (e.g. main's .venv/bin/python), interleaved with this one's.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/bench_scale.py \\
        --before /work/main/.venv/bin/python

Writes results/scale.json and results/scale.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CELLS = (10_000, 100_000, 1_000_000)
GENES = (200, 1_000)
PREDICTORS = (10, 30)
#: Jobs skipped unless --all (too slow for the shared 2-core VM); extrapolated instead.
SKIP = {(1_000_000, 1_000, 30)}
#: The job run again with n_jobs=2, right after its one-thread run.
NJOBS = (1_000_000, 200, 10)
#: The glum loop's job (n, G, p), run after the stglm job of the same n and p at G=200.
GLUM = (100_000, 100, 10)
#: Jobs also run with the --before interpreter.
BEFORE = [(100_000, 200, 10), (100_000, 200, 30), (1_000_000, 200, 10)]


def job(python: str, n: int, G: int, p: int, extra: list[str] | None = None) -> dict:
    """One scale_job.py run in a subprocess; its JSON summary."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "job.json"
        cmd = [python, str(HERE / "scale_job.py"), "--cells", str(n), "--genes", str(G),
               "--predictors", str(p), "--out", str(out), *(extra or [])]  # fmt: skip
        t = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if done.returncode != 0:
            return {"error": done.stderr[-2000:], "n_obs": n, "n_genes": G, "p": p}
        result = json.loads(out.read_text())
        result["process_wall"] = time.perf_counter() - t
        return result


def exponent(t1: float, t2: float, x1: float, x2: float) -> float:
    """Local exponent b of t ∝ x^b between two sizes."""
    return float(np.log(t2 / t1) / np.log(x2 / x1))


def key(n: int, G: int, p: int) -> str:
    return f"{n}x{G}xp{p}"


def summarise(after: dict) -> dict:
    """Exponents in n and G (CPU time), and the extrapolation of skipped jobs."""
    out = {"exp_n": {}, "exp_G": {}, "extrapolated": {}}
    for p in PREDICTORS:
        for G in GENES:
            for n1, n2 in zip(CELLS[:-1], CELLS[1:], strict=True):
                a, b = after.get(key(n1, G, p)), after.get(key(n2, G, p))
                if a and b and "fit_cpu" in a and "fit_cpu" in b:
                    out["exp_n"][f"{n1}->{n2}, G={G}, p={p}"] = exponent(
                        a["fit_cpu"], b["fit_cpu"], n1, n2
                    )
        for n in CELLS:
            a, b = after.get(key(n, GENES[0], p)), after.get(key(n, GENES[1], p))
            if a and b and "fit_cpu" in a and "fit_cpu" in b:
                out["exp_G"][f"n={n}, p={p}"] = exponent(
                    a["fit_cpu"], b["fit_cpu"], GENES[0], GENES[1]
                )
    for n, G, p in SKIP:
        small = after.get(key(n, GENES[0], p))
        b = out["exp_G"].get(f"n={CELLS[-2]}, p={p}")
        if small and b is not None and key(n, G, p) not in after:
            out["extrapolated"][key(n, G, p)] = {
                "fit_cpu": small["fit_cpu"] * (G / GENES[0]) ** b,
                "how": f"{key(n, GENES[0], p)} × ({G}/{GENES[0]})^{b:.2f} "
                f"(G exponent at n={CELLS[-2]})",
            }
    return out


def fmt_s(x: float) -> str:
    return f"{x:.2f} s" if x < 100 else f"{x:.0f} s"


def fmt_mib(b: float) -> str:
    return f"{b / 2**20:,.0f} MiB"


def bandwidth_cells(r: dict) -> str:
    """The bandwidth floor (at the triad's rate) and CPU over the larger of the two floors."""
    if "bandwidth_floor" not in r:
        return "- | -"
    worst = max(r["floor_seconds"], r["bandwidth_floor"])
    return (
        f"{fmt_s(r['bandwidth_floor'])} ({r['bandwidth_1'] / 1e9:.1f} GB/s) | "
        f"{r['fit_cpu'] / worst:.1f}×"
    )


def table(after: dict, before: dict, summary: dict) -> str:
    head = ("| n | G | p | CPU | wall | Σ iterations | floor (Zᵀ·W) | CPU / floor | "
            "bandwidth floor | CPU / max floor | chunk, Z | own peak | "
            "own / counts | counts | CPU before | before / after | load at end |")  # fmt: skip
    lines = [head, "|" + "---|" * 17]
    for p in PREDICTORS:
        for n in CELLS:
            for G in GENES:
                r = after.get(key(n, G, p))
                if r is None or "fit_cpu" not in r:
                    ext = summary["extrapolated"].get(key(n, G, p))
                    if ext:
                        lines.append(
                            f"| {n:,} | {G:,} | {p} | ≈ {fmt_s(ext['fit_cpu'])} (extrapolated) "
                            "| - | - | - | - | - | - | - | - | - | - | - | - | - |"
                        )
                    continue
                b = before.get(key(n, G, p))
                b_cpu = fmt_s(b["fit_cpu"]) if b and "fit_cpu" in b else "-"
                ratio = f"{b['fit_cpu'] / r['fit_cpu']:.2f}×" if b and "fit_cpu" in b else "-"
                lines.append(
                    f"| {n:,} | {G:,} | {p} | {fmt_s(r['fit_cpu'])} | {fmt_s(r['fit_wall'])} | "
                    f"{r['n_iter_sum']:,} | {fmt_s(r['floor_seconds'])} "
                    f"({r['floor_gflops']:.0f} GFLOP/s) | {r['ratio_to_floor']:.1f}× | "
                    f"{bandwidth_cells(r)} | {r['plan'].get('chunk_size', '-')}, "
                    f"{r['plan'].get('pair_products', '-')} | {fmt_mib(r['own_peak'])} | "
                    f"{r['own_peak'] / r['counts_bytes']:.2f}× | "
                    f"{fmt_mib(r['counts_bytes'])} | {b_cpu} | {ratio} | "
                    f"{' '.join(r['loadavg_end'])} |"
                )
    lines.append("")
    lines.append("Exponents of CPU time: in n " + ", ".join(
        f"{k}: {v:.2f}" for k, v in summary["exp_n"].items()) + "; in G " + ", ".join(
        f"{k}: {v:.2f}" for k, v in summary["exp_G"].items()) + ".")  # fmt: skip
    for k, v in summary["extrapolated"].items():
        lines.append(f"Extrapolated {k}: {v['how']}.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", help="another checkout's Python, for the BEFORE jobs")
    ap.add_argument("--all", action="store_true", help="run the skipped jobs too")
    ap.add_argument("--cells", type=int, nargs="*", default=list(CELLS))
    ap.add_argument("--no-glum", action="store_true", help="skip the glum loop")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "scale.json")
    ap.add_argument(
        "--resume", action="store_true",
        help="keep the jobs of the last cut-off run (OUT's .partial.json) that did not fail",
    )  # fmt: skip
    args = ap.parse_args(argv)
    after, before, extra, peers = {}, {}, {}, {}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    done = {}
    if args.resume:
        done = json.loads(args.out.with_suffix(".partial.json").read_text())
        started = done.get("started", started) + " (resumed)"

    def run(group: str, name: str, python: str, *spec, extra_args=()):
        """The job, or the resumed run's result for it (if it did not fail)."""
        kept = done.get(group, {}).get(name)
        if kept is not None and "error" not in kept:
            return kept
        return job(python, *spec, list(extra_args))

    for p in PREDICTORS:
        for n in args.cells:
            for G in GENES:
                if (n, G, p) in SKIP and not args.all:
                    continue
                if args.before and (n, G, p) in BEFORE:
                    before[key(n, G, p)] = job(args.before, n, G, p)
                    print("before", key(n, G, p), before[key(n, G, p)].get("fit_cpu"), flush=True)
                name = key(n, G, p)
                after[name] = r = run("after", name, sys.executable, n, G, p,
                                      extra_args=["--bandwidth"])  # fmt: skip
                print("after ", name, r.get("fit_cpu"), r.get("error", ""), flush=True)
                if (n, G, p) == NJOBS:  # two threads next to one: wall time and memory
                    extra["n_jobs=2 " + name] = run(
                        "extra", "n_jobs=2 " + name, sys.executable, *NJOBS,
                        extra_args=["--n-jobs", "2", "--bandwidth"],
                    )  # fmt: skip
                if (n, G, p) == (GLUM[0], GENES[0], GLUM[2]) and not args.no_glum:
                    peers["glum " + key(*GLUM)] = r = run(
                        "peers", "glum " + key(*GLUM), sys.executable, *GLUM,
                        extra_args=["--glum"],
                    )  # fmt: skip
                    print("glum  ", key(*GLUM), r.get("glum_cpu"), r.get("error", ""), flush=True)
                partial = {"after": after, "extra": extra, "peers": peers, "started": started}
                args.out.with_suffix(".partial.json").write_text(json.dumps(partial, indent=1))
    failed = {k: v["error"] for group in (after, extra, peers) for k, v in group.items()
              if "error" in v}  # fmt: skip
    if failed:
        raise SystemExit(f"jobs failed (rerun with --resume): {failed}")
    summary = summarise(after)
    md = table(after, before, summary)
    for name, r in extra.items():
        base = after.get(key(*NJOBS), {})
        md += (
            f"{name}: CPU {fmt_s(r['fit_cpu'])} (1 job: {fmt_s(base.get('fit_cpu', np.nan))}), "
            f"wall {fmt_s(r['fit_wall'])} (1 job: {fmt_s(base.get('fit_wall', np.nan))}), own "
            f"peak {fmt_mib(r['own_peak'])} (1 job: {fmt_mib(base.get('own_peak', np.nan))}), "
            f"chunk {r['plan'].get('chunk_size')} genes per thread (1 job: "
            f"{base.get('plan', {}).get('chunk_size')}); triad bandwidth 1 thread "
            f"{r.get('bandwidth_1', np.nan) / 1e9:.1f} GB/s, 2 threads "
            f"{r.get('bandwidth_2', np.nan) / 1e9:.1f} GB/s; load at end "
            f"{' '.join(r['loadavg_end'])}.\n"
        )
    for name, r in peers.items():
        md += (
            f"{name} (no size factors, glum's default gradient_tol, 1 BLAS thread): glum loop "
            f"CPU {fmt_s(r['glum_cpu'])}, fit_genes {fmt_s(r['fit_cpu'])}: "
            f"{r['glum_ratio']:.1f}×; max KKT residual (numpy, over each gene's scale) stglm "
            f"{r['kkt_stglm_max']:.1e}, glum {r['kkt_glum_max']:.1e}; largest coefficient "
            f"difference {r['coef_max_diff']:.1e}.\n"
        )
    md = f"Run {started}, python {sys.version.split()[0]}, 2-core shared AMD EPYC VM.\n\n" + md
    args.out.parent.mkdir(exist_ok=True)
    results = {"after": after, "before": before, "extra": extra, "peers": peers, "summary": summary}
    args.out.write_text(json.dumps(results, indent=1))
    args.out.with_suffix(".md").write_text(md)
    args.out.with_suffix(".partial.json").unlink(missing_ok=True)  # the run is whole
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
