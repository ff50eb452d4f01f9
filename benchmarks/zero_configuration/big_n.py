"""Zero configuration at N = 10^6 against PyMC's default NUTS, compilation included.

The big-N benchmark of ``benchmarks/run.py`` (logistic regression, 20 features, N = 10^6,
batch 100): its stored PyMC default NUTS run (``results/nuts_baselines_n1000000.json``,
4 chains, wall time with compilation) is both the baseline and the reference. Each
sampler here is ``SGHMC()`` / ``SGLD()`` with no arguments, at ``pm.sample``'s default
tune and draws, 2 chains on one core, in a fresh process with empty compile caches (cold)
and again with filled ones (warm). It reports the max |mean error| and the sd ratios
against NUTS, the accuracy criterion of the zero-configuration benchmark
(``max |mean err| < 0.3 sd``, sd ratios in [0.8, 1.25]), and the speed-up.

    python benchmarks/zero_configuration/big_n.py [--n 1000000] [--output results/big_n.md]
"""

from __future__ import annotations

import argparse
import json
import sys

from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from run import RESULTS, run_task  # noqa: E402 (benchmarks/run.py)

SD_RATIO_RANGE = (0.8, 1.25)
MAX_MEAN_ERROR = 0.3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    nuts = json.loads((RESULTS / f"nuts_baselines_n{args.n}.json").read_text())[0]
    reference = {"mean": nuts["mean"], "sd": nuts["sd"]}
    lines = [
        f"N = {args.n}, batch {args.batch}, pm.sample defaults (tune 1000, draws 1000), "
        "2 chains on one core; reference and baseline: PyMC's default NUTS "
        f"({nuts['seconds']:.0f} s, compilation included).",
        "",
        "| sampler | max \\|mean err\\|/sd | sd ratio min-max | cold s | warm s | build s (cold) "
        "| NUTS / cold | meets target |",
        "|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for sampler in ("SGHMC", "SGLD"):
        arguments = {
            "n": args.n,
            "reference_result": reference,
            "sampler": sampler,
            "config": {"batch": args.batch, "draws": 1000, "tune": 1000, "step": {}},
        }
        cold = run_task("sgmcmc_accuracy", cold_caches=True, **arguments)
        warm = run_task("sgmcmc_accuracy", **arguments)
        meets = (
            cold["max_mean_error_sd"] < MAX_MEAN_ERROR
            and SD_RATIO_RANGE[0] <= cold["sd_ratio_min"]
            and cold["sd_ratio_max"] <= SD_RATIO_RANGE[1]
        )
        lines.append(
            f"| {sampler}() | {cold['max_mean_error_sd']:.3f} | {cold['sd_ratio_min']:.3f}-"
            f"{cold['sd_ratio_max']:.3f} | {cold['seconds']:.1f} | {warm['seconds']:.1f} "
            f"| {cold['build_seconds']:.1f} | {nuts['seconds'] / cold['seconds']:.0f}x "
            f"| {'yes' if meets else 'no'} |"
        )
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    print(table)
    if args.output is not None:
        args.output.write_text(table + "\n")


if __name__ == "__main__":
    main()
