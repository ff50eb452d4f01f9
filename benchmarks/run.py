"""The benchmark suite: pymc-sgmcmc against the samplers users would pick instead.

    python benchmarks/run.py [--quick] [--sections startup throughput defaults scaling accuracy big_n]
        [--pythons .venv-py3.11/bin/python .venv-py3.12/bin/python]

Problem: Bayesian logistic regression, 20 features, Normal(0, 1) priors, synthetic data
from a fixed seed (``tasks.logistic_data``). Every measurement runs in its own process
(``tasks.py``) and reports its peak resident memory. Results are printed and written to
``benchmarks/results/`` as Markdown tables, JSON and PNG plots.

0. Start-up: the step's construction and first ``pm.sample`` of ``SGLD()`` / ``SGHMC()``
   against PyMC's default NUTS, cold compile caches, on each PyMC line given.
1. Throughput: SG steps per second of pymc-sgmcmc's SGLD and SGHMC through ``pm.sample``
   (``steps_per_draw`` 1, 10, 100), BlackJAX's SGLD and SGHMC (jitted ``lax.scan``), a
   NumPy SGLD loop and the bare compiled minibatch gradient, each as a ratio to BlackJAX.
2. Scaling: cost per SG step for N = 1e4 ... 1e6.
3. Time to accuracy: wall time (model building and compilation included) to posterior
   means within 0.1 posterior sd and sds within 20% of a long NUTS reference, for
   pymc-sgmcmc, PyMC's default NUTS and nutpie. The reference and the NUTS/nutpie
   timings take longer than the rest of the suite together: they are stored in
   ``results/`` and measured again only with ``--rerun-baselines``.
4. Big N: the same at N = 1e6 with control variates, against PyMC's default NUTS (its
   run is the reference there) and nutpie projected from N = 1e5.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
REPEATS = 2
#: The interpreters the startup section measures (``--pythons``).
PYTHONS = [sys.executable]


def run_task(
    task: str, *, cold_caches: bool = False, python: str = sys.executable, **arguments
) -> dict:
    """Run one measurement in a fresh process of ``python``; return its JSON result.

    ``cold_caches`` gives the process empty PyTensor and Numba compile caches, as on a
    machine that has never compiled the model: everything is compiled from scratch.
    """
    environment = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    if cold_caches:
        cache = tempfile.mkdtemp(prefix="pymc_sgmcmc_cold_")
        environment["NUMBA_CACHE_DIR"] = cache
        flags = os.environ.get("PYTENSOR_FLAGS", "")
        environment["PYTENSOR_FLAGS"] = ",".join(
            filter(None, [flags, f"base_compiledir={cache}/pytensor"])
        )
    completed = subprocess.run(
        [python, str(HERE / "tasks.py"), task, json.dumps(arguments)],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    if cold_caches:
        shutil.rmtree(cache, ignore_errors=True)
    if completed.returncode != 0:
        raise RuntimeError(f"{task}({arguments}) failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def best_of(task: str, repeats: int = REPEATS, **arguments) -> dict:
    """The fastest of ``repeats`` runs (timings on a shared machine only err slow)."""
    results = [run_task(task, **arguments) for _ in range(repeats)]
    best = max(results, key=lambda result: result["steps_per_second"])
    best["peak_memory_mb"] = max(result["peak_memory_mb"] for result in results)
    return best


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# ---- sections -----------------------------------------------------------------------------
def throughput(quick: bool) -> tuple[str, list[dict]]:
    # The main case (N = 1e5, batch 100) gets every steps_per_draw; the others the best.
    cases = [(100_000, 100, (1, 10, 100))]
    if not quick:
        cases += [(100_000, 1000, (100,)), (1_000_000, 100, (100,))]
    steps = 20_000 if quick else 60_000
    records = []
    for n, batch, steps_per_draw_values in cases:
        for sampler in ("SGLD", "SGHMC"):
            baseline = best_of("blackjax", sampler=sampler, n=n, batch=batch, steps=steps)
            records.append({"n": n, "batch": batch, "method": f"BlackJAX {sampler}", **baseline})
            for steps_per_draw in steps_per_draw_values:
                result = best_of(
                    "pymc_sgmcmc",
                    sampler=sampler,
                    n=n,
                    batch=batch,
                    steps_per_draw=steps_per_draw,
                    steps=steps if steps_per_draw > 1 else steps // 4,
                )
                method = f"pymc-sgmcmc {sampler}, steps_per_draw={steps_per_draw}"
                records.append({"n": n, "batch": batch, "method": method, **result})
        floor = best_of("bare_gradient", n=n, batch=batch, steps=steps // 2)
        records.append({"n": n, "batch": batch, "method": "bare compiled gradient", **floor})
        loop = best_of("numpy_sgld", repeats=1, n=n, batch=batch, steps=steps // 5)
        records.append({"n": n, "batch": batch, "method": "NumPy SGLD loop", **loop})

    rows = []
    for record in records:
        kind = "SGHMC" if "SGHMC" in record["method"] else "SGLD"
        case = (record["n"], record["batch"])
        reference = next(
            r["steps_per_second"]
            for r in records
            if r["method"] == f"BlackJAX {kind}" and (r["n"], r["batch"]) == case
        )
        overhead = record.get("pm_sample_overhead_us_per_draw")
        rows.append(
            [
                f"{record['n']:,}",
                record["batch"],
                record["method"],
                f"{record['steps_per_second']:,.0f}",
                f"{record['steps_per_second'] / reference:.2f}",
                "" if overhead is None else f"{overhead:.0f}",
                f"{record['peak_memory_mb']:.0f}",
            ]
        )
    header = ["N", "batch", "method", "SG steps/s", "× BlackJAX", "pm.sample µs/draw", "peak MB"]
    return markdown_table(header, rows), records


def startup(quick: bool) -> tuple[str, list[dict]]:
    """Cold start on N = 1e5, batch 100: the step's construction and the first
    ``pm.sample`` (defaults, one chain) of SGLD() and SGHMC() (control variates on) against
    PyMC's default NUTS on the full data, each in a process with empty compile caches, for
    every interpreter given with ``--pythons`` (one per PyMC line)."""
    n, batch = 100_000, 100
    records = []
    for python in PYTHONS:
        version = subprocess.run(
            [python, "-c", "import pymc; print(pymc.__version__)"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        nuts = run_task(
            "startup", cold_caches=True, python=python, sampler="NUTS", n=n, batch=batch
        )
        records.append({"pymc": version, "method": "NUTS (full data)", **nuts})
        for sampler in ("SGLD", "SGHMC"):
            result = run_task(
                "startup", cold_caches=True, python=python, sampler=sampler, n=n, batch=batch
            )
            records.append({"pymc": version, "method": f"{sampler}()", **result})
    rows = []
    for record in records:
        nuts = next(
            r["seconds"]
            for r in records
            if r["pymc"] == record["pymc"] and r["method"].startswith("NUTS")
        )
        rows.append(
            [
                record["pymc"],
                record["method"],
                f"{record['build_seconds']:.1f}",
                f"{record['build_seconds'] / nuts:.2f}",
                f"{record['sample_seconds']:.1f}",
                f"{record['seconds']:.1f}",
            ]
        )
    header = [
        "PyMC",
        "method",
        "step build s",
        "build / NUTS first sample",
        "first pm.sample s",
        "total s",
    ]
    return markdown_table(header, rows), records


def defaults(quick: bool) -> tuple[str, list[dict]]:
    """What the quick start gets (no sampler arguments, pm.sample's tune and draws, one
    chain) against BlackJAX, beside a large explicit steps_per_draw, on N = 1e5, batch 100.

    SG steps per second end to end (tuning included; the step's construction is its own
    column) and in the sampling phase alone (the adapted settings sampled again, tune=0).
    """
    n, batch, steps = 100_000, 100, 60_000
    draws = 200 if quick else None
    records = []
    for sampler in ("SGLD", "SGHMC"):
        baseline = best_of("blackjax", sampler=sampler, n=n, batch=batch, steps=steps)
        records.append({"method": f"BlackJAX {sampler}", "kind": sampler, **baseline})
        for label, mode, float_type in (
            ("", None, "float64"),
            (", float32", None, "float32"),
            (", JAX backend", "JAX", "float64"),
        ):
            result = best_of(
                "pymc_sgmcmc_defaults",
                sampler=sampler,
                n=n,
                batch=batch,
                draws=draws,
                mode=mode,
                float_type=float_type,
            )
            records.append({"method": f"{sampler}(){label}", "kind": sampler, **result})
        large = best_of(
            "pymc_sgmcmc", sampler=sampler, n=n, batch=batch, steps_per_draw=1000, steps=steps
        )
        method = f"{sampler}(step_size, steps_per_draw=1000)"
        records.append({"method": method, "kind": sampler, **large})
    rows = []
    for record in records:
        reference = next(
            r["steps_per_second"] for r in records if r["method"] == f"BlackJAX {record['kind']}"
        )
        sampling = record.get("sampling_steps_per_second")
        rows.append(
            [
                record["method"],
                f"{record['steps_per_second']:,.0f}",
                f"{record['steps_per_second'] / reference:.2f}",
                "" if sampling is None else f"{sampling:,.0f} ({sampling / reference:.2f})",
                record.get("steps_per_draw", ""),
                "yes" if record.get("control_variate") else "",
                f"{record['build_seconds']:.1f}",
            ]
        )
    header = [
        "method",
        "SG steps/s end to end",
        "× BlackJAX",
        "sampling phase steps/s (× BlackJAX)",
        "steps_per_draw",
        "control variates",
        "build / compile s",
    ]
    return markdown_table(header, rows), records


def scaling(quick: bool) -> tuple[str, list[dict]]:
    sizes = [10_000, 100_000] if quick else [10_000, 100_000, 1_000_000]
    records = []
    for n in sizes:
        for method, task, arguments in (
            (
                "pymc-sgmcmc SGLD, steps_per_draw=100",
                "pymc_sgmcmc",
                {"sampler": "SGLD", "steps_per_draw": 100},
            ),
            ("BlackJAX SGLD", "blackjax", {"sampler": "SGLD"}),
        ):
            result = best_of(task, n=n, batch=100, steps=50_000, **arguments)
            records.append({"n": n, "method": method, **result})
    rows = [
        [
            f"{r['n']:,}",
            r["method"],
            f"{1e6 / r['steps_per_second']:.2f}",
            f"{r['peak_memory_mb']:.0f}",
        ]
        for r in records
    ]
    return markdown_table(["N", "method", "µs per SG step", "peak MB"], rows), records


def accuracy(quick: bool, rerun_baselines: bool = False) -> tuple[str, list[dict]]:
    n = 10_000 if quick else 100_000
    reference_file = RESULTS / f"reference_n{n}.json"
    if not reference_file.exists():
        reference_file.write_text(json.dumps(run_task("reference", n=n, draws=3000, chains=4)))
    reference = json.loads(reference_file.read_text())
    # Step sizes follow the posterior scale s, which a user takes from a Laplace
    # approximation or a pilot run; here from the reference. With batch B the minibatch
    # noise is V ≈ (N/B) / s², so SGLD needs η ≪ 2 s² B / N to stay near temperature 1,
    # while SGHMC's friction absorbs it (B̂ = h V̂ / 2 ≤ Γ): larger steps, faster mixing.
    scale = float(np.sqrt(np.mean(np.square(reference["sd"]))))
    configs = {
        "pymc-sgmcmc SGHMC (estimated B̂)": (
            "SGHMC",
            {
                "batch": 1000,
                "draws": 3000,
                "tune": 300,
                "step": {
                    "step_size": 0.1 * scale,
                    "friction": 8.0 / scale,
                    "gradient_noise": "estimate",
                    "steps_per_draw": 20,
                },
            },
        ),
        "pymc-sgmcmc SGLD": (
            "SGLD",
            {
                "batch": 1000,
                "draws": 600,
                "tune": 100,
                "step": {"step_size": 0.003 * scale**2, "steps_per_draw": 200},
            },
        ),
    }
    records = []
    for name, (sampler, config) in configs.items():
        arguments = {"n": n, "reference_result": reference, "sampler": sampler, "config": config}
        run_task("sgmcmc_accuracy", **arguments)  # fills Numba's on-disk cache, as any rerun
        records.append({"method": name, **run_task("sgmcmc_accuracy", **arguments)})
    # Full-data NUTS takes many minutes at this N (its timings dominate the suite): they
    # are measured once, kept with the reference, and rerun with --rerun-baselines.
    baselines_file = RESULTS / f"nuts_baselines_n{n}.json"
    if rerun_baselines or not baselines_file.exists():
        baselines = [
            {"method": name, **run_task("nuts", n=n, reference_result=reference, engine=engine)}
            for name, engine in (("PyMC default NUTS", "pymc"), ("nutpie default", "nutpie"))
        ]
        baselines_file.write_text(json.dumps(baselines, indent=1))
    records += json.loads(baselines_file.read_text())
    nuts_seconds = next(r["seconds"] for r in records if r["method"] == "PyMC default NUTS")
    rows = [
        [
            r["method"],
            f"{r['seconds']:.1f}",
            f"{nuts_seconds / r['seconds']:.1f}",
            f"{r['max_mean_error_sd']:.3f}",
            f"{r['sd_ratio_min']:.2f}-{r['sd_ratio_max']:.2f}",
            "yes" if r["accurate"] else "no",
            f"{r['peak_memory_mb']:.0f}",
        ]
        for r in records
    ]
    header = [
        "method",
        "wall s",
        "speed-up vs NUTS",
        "max \\|mean err\\| / sd",
        "sd ratio",
        "accurate",
        "peak MB",
    ]
    return f"N = {n:,}\n\n" + markdown_table(header, rows), records


def plot(name: str, records: list[dict], path: Path) -> None:
    """A PNG per section: steps/s per method, µs per step against N, or wall time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(9, 4.5), layout="constrained")
    if name == "throughput":
        main_case = [r for r in records if (r["n"], r["batch"]) == (100_000, 100)]
        ax.barh([r["method"] for r in main_case], [r["steps_per_second"] for r in main_case])
        ax.set_xlabel("SG steps per second (N = 100,000, batch 100)")
        ax.invert_yaxis()
    elif name == "scaling":
        for method in dict.fromkeys(r["method"] for r in records):
            rows = [r for r in records if r["method"] == method]
            cost = [1e6 / r["steps_per_second"] for r in rows]
            ax.plot([r["n"] for r in rows], cost, marker="o", label=method)
        ax.set(xscale="log", xlabel="N (rows of data)", ylabel="µs per SG step", ylim=(0, None))
        ax.legend()
    else:
        records = [r for r in records if "seconds" in r]
        ax.barh([r["method"] for r in records], [r["seconds"] for r in records])
        ax.set_xlabel("wall seconds to the accuracy criterion (compile included)")
        ax.set_xscale("log")
        ax.invert_yaxis()
    ax.set_title(name)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def big_n_configs(scale: float) -> dict:
    """pymc-sgmcmc configurations at N = 1e6 (step sizes in units of the posterior sd)."""
    control_variate_sghmc = {
        "batch": 100,
        "draws": 1000,
        "tune": 100,
        "step": {
            "step_size": 0.3 * scale,
            "friction": 1.0 / scale,
            "steps_per_draw": 5,
            "control_variate": True,
        },
    }
    control_variate_sgld = {
        "batch": 100,
        "draws": 1000,
        "tune": 100,
        "step": {"step_size": 0.2 * scale**2, "steps_per_draw": 5, "control_variate": True},
    }
    # Without control variates the minibatch noise at N = 1e6 is V ≈ N / (B s²): SGHMC
    # needs friction Γ ≥ h V / 2 and a stable momentum decay hΓ < 2, so h ≤ 0.02 s here
    # even with batches of 1000, and mixing takes thousands of steps.
    plain_sghmc = {
        "batch": 1000,
        "draws": 2000,
        "tune": 200,
        "step": {
            "step_size": 0.02 * scale,
            "friction": 40.0 / scale,
            "gradient_noise": "estimate",
            "steps_per_draw": 100,
        },
    }
    return {
        "pymc-sgmcmc SGHMC + control variates": ("SGHMC", control_variate_sghmc),
        "pymc-sgmcmc SGLD + control variates": ("SGLD", control_variate_sgld),
        "pymc-sgmcmc SGHMC, plain minibatches": ("SGHMC", plain_sghmc),
    }


def big_n(quick: bool, rerun_baselines: bool = False) -> tuple[str, list[dict]]:
    """Time to accuracy at N = 1e6, where plain minibatch noise is large.

    A long NUTS reference is out of reach at this N (PyMC's default run alone takes most
    of an hour here), so that default run (4 chains of 1000 draws after 1000 tuning
    steps) is both the baseline and the reference; a Laplace approximation, nearly exact
    at this N, checks it. nutpie's time is projected from its measured time at N = 1e5
    by the ratio of full-data gradient costs, a projection checked on PyMC's NUTS.
    """
    n = 20_000 if quick else 1_000_000
    small_n = 10_000 if quick else 100_000
    baselines_file = RESULTS / f"nuts_baselines_n{n}.json"
    if rerun_baselines or not baselines_file.exists():
        measured = run_task("nuts", n=n, reference_result=None, engine="pymc")
        baselines_file.write_text(json.dumps([{"method": "PyMC default NUTS", **measured}]))
    nuts = json.loads(baselines_file.read_text())[0]
    reference = {"mean": nuts["mean"], "sd": nuts["sd"]}
    scale = float(np.sqrt(np.mean(np.square(reference["sd"]))))

    records = []
    for name, (sampler, config) in big_n_configs(scale).items():
        arguments = {"n": n, "reference_result": reference, "sampler": sampler, "config": config}
        cold = run_task("sgmcmc_accuracy", cold_caches=True, **arguments)
        run_task("sgmcmc_accuracy", **arguments)  # fills the on-disk caches, as any rerun
        warm = run_task("sgmcmc_accuracy", **arguments)
        records.append({"method": name, **warm, "cold_seconds": cold["seconds"]})

    laplace = run_task("laplace", n=n)
    laplace_check = accuracy_of(laplace, reference)
    costs = {
        size: run_task("gradient_cost", n=size)["seconds_per_gradient"] for size in (n, small_n)
    }
    ratio = costs[n] / costs[small_n]
    small_baselines = RESULTS / f"nuts_baselines_n{small_n}.json"
    projected = {}
    if small_baselines.exists():
        for row in json.loads(small_baselines.read_text()):
            projected[row["method"]] = row["seconds"] * ratio
    nuts_seconds = nuts["seconds"]
    records.append(
        {"method": "PyMC default NUTS (reference)", **nuts, "cold_seconds": nuts["seconds"]}
    )
    rows = [
        [
            r["method"],
            f"{r['seconds']:.1f}",
            f"{r['cold_seconds']:.1f}",
            f"{r.get('build_seconds', float('nan')):.1f}",
            f"{nuts_seconds / r['seconds']:.0f}",
            f"{nuts_seconds / r['cold_seconds']:.0f}",
            f"{projected['nutpie default'] / r['seconds']:.0f}"
            if "nutpie default" in projected
            else "—",
            f"{r.get('max_mean_error_sd', 0.0):.3f}",
            f"{r.get('sd_ratio_min', 1.0):.2f}-{r.get('sd_ratio_max', 1.0):.2f}",
            "yes" if r.get("accurate", True) else "no",
            f"{r['peak_memory_mb']:.0f}",
        ]
        for r in records
    ]
    header = [
        "method",
        "wall s",
        "cold caches s",
        "build s",
        "× vs NUTS",
        "× vs NUTS, cold caches",
        "× vs nutpie (projected)",
        "max \\|mean err\\| / sd",
        "sd ratio",
        "accurate",
        "peak MB",
    ]
    notes = [
        f"N = {n:,}. Full-data gradient: {1e3 * costs[n]:.1f} ms at N = {n:,}, "
        f"{1e3 * costs[small_n]:.2f} ms at N = {small_n:,} (ratio {ratio:.1f}).",
        f"Laplace approximation against the NUTS reference: max mean error "
        f"{laplace_check['max_mean_error_sd']:.3f} sd, sd ratio "
        f"{laplace_check['sd_ratio_min']:.3f}-{laplace_check['sd_ratio_max']:.3f}.",
    ]
    for method, seconds in projected.items():
        notes.append(f"{method} projected from N = {small_n:,}: {seconds:.0f} s.")
    if "PyMC default NUTS" in projected:
        notes.append(
            f"Check of the projection: PyMC's NUTS measured {nuts_seconds:.0f} s "
            f"({nuts.get('cpu_seconds', float('nan')):.0f} CPU s) against "
            f"{projected['PyMC default NUTS']:.0f} s projected."
        )
    records.append(
        {
            "method": "notes",
            "projected": projected,
            "gradient_costs": costs,
            "laplace_check": laplace_check,
        }
    )
    return "\n\n".join(notes) + "\n\n" + markdown_table(header, rows), records


def accuracy_of(candidate: dict, reference: dict) -> dict:
    """The accuracy criterion for given means and sds (as ``tasks.accuracy`` for draws)."""
    mean, sd = np.asarray(reference["mean"]), np.asarray(reference["sd"])
    error = float(np.max(np.abs(np.asarray(candidate["mean"]) - mean) / sd))
    ratio = np.asarray(candidate["sd"]) / sd
    return {
        "max_mean_error_sd": error,
        "sd_ratio_min": float(ratio.min()),
        "sd_ratio_max": float(ratio.max()),
    }


SECTIONS = {
    "startup": startup,
    "throughput": throughput,
    "defaults": defaults,
    "scaling": scaling,
    "accuracy": accuracy,
    "big_n": big_n,
}


def machine_description() -> str:
    import pymc
    import pytensor

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, PyMC {pymc.__version__}, "
        f"PyTensor {pytensor.__version__}, {datetime.date.today().isoformat()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few minutes")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument(
        "--rerun-baselines",
        action="store_true",
        help="measure NUTS and nutpie again instead of reading their stored timings",
    )
    parser.add_argument(
        "--pythons",
        nargs="+",
        default=[sys.executable],
        help="interpreters for the startup section (one per PyMC line)",
    )
    args = parser.parse_args()
    PYTHONS[:] = args.pythons
    RESULTS.mkdir(exist_ok=True)
    suffix = "_quick" if args.quick else ""
    machine = machine_description()
    sections = {}
    for name in args.sections:
        if name in ("accuracy", "big_n"):
            table, records = SECTIONS[name](args.quick, args.rerun_baselines)
        else:
            table, records = SECTIONS[name](args.quick)
        print(f"\n## {name}\n\n{table}\n", flush=True)
        sections[name] = f"Machine: {machine}\n\n{table}\n"
        (RESULTS / f"{name}{suffix}.json").write_text(json.dumps(records, indent=1))
        if name not in ("defaults", "startup"):
            plot(name, records, RESULTS / f"{name}{suffix}.png")
    report = RESULTS / f"report{suffix}.md"
    report.write_text(merged_report(report, sections))


def merged_report(path: Path, sections: dict[str, str]) -> str:
    """The report with the sections just run replaced (or added), the others kept as they
    were, so that running one section does not discard the rest."""
    kept = {}
    if path.exists():
        for block in ("\n" + path.read_text()).split("\n## ")[1:]:
            name, _, body = block.partition("\n\n")
            kept[name.strip()] = body
    kept.update(sections)
    ordered = [name for name in SECTIONS if name in kept]
    return "\n".join(f"## {name}\n\n{kept[name].rstrip()}\n" for name in ordered)


if __name__ == "__main__":
    main()
