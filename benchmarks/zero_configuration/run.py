"""Evaluate a sampler configuration on every zero-configuration benchmark posterior.

For each posterior with a stored NUTS reference (``references/<name>.json``, made by
``references.py``) and each sampler of the chosen configuration this runs
``pm.sample(step=..., chains=2)`` on the minibatch model and prints a markdown table:
max |mean error| / reference sd over all coordinates of the free variables
(constrained scale), min and max ratio of sampled to reference sd, wall time (model
compilation included), divergences, and whether the run meets the target
"max |mean error| < 0.3 sd and every sd ratio in [0.8, 1.25]". An exception is caught
and reported in the table: a blow-up is a result.

Configurations:

``zero configuration``
    ``SGHMC()`` and ``SGLD()``: no arguments at all.

``documented rules``
    SGHMC(control_variate=True, step_size=0.3 s, friction=1/s) and
    SGLD(control_variate=True, step_size=0.2 s²), where ``s`` is the smallest posterior
    sd of the reference on the unconstrained (value-variable) scale.

    python benchmarks/zero_configuration/run.py [--configuration "documented rules"]
        [--tune 500] [--draws 1000] [--only NAME ...] [--output results/table.md]

``--tune``/``--draws`` default to ``pm.sample``'s own defaults.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pymc as pm

from posteriors import POSTERIORS

import pymc_sgmcmc

HERE = Path(__file__).resolve().parent
REFERENCES = HERE / "references"
MAX_MEAN_ERROR = 0.3
SD_RATIO_RANGE = (0.8, 1.25)


def smallest_unconstrained_sd(reference: dict) -> float:
    """The smallest posterior sd over all value-variable coordinates of a reference."""
    return min(min(variable["sd"]) for variable in reference["unconstrained"].values())


def documented_rules(
    reference: dict,
) -> dict[str, Callable[[], pm.step_methods.arraystep.BlockedStep]]:
    """The step-size rules of the documentation, from the reference's smallest sd."""
    scale = smallest_unconstrained_sd(reference)
    return {
        "SGHMC": lambda: pymc_sgmcmc.SGHMC(
            step_size=0.3 * scale, friction=1.0 / scale, control_variate=True
        ),
        "SGLD": lambda: pymc_sgmcmc.SGLD(step_size=0.2 * scale**2, control_variate=True),
    }


def zero_configuration(
    reference: dict,
) -> dict[str, Callable[[], pm.step_methods.arraystep.BlockedStep]]:
    """No sampler arguments at all: every setting adapted."""
    return {"SGHMC": pymc_sgmcmc.SGHMC, "SGLD": pymc_sgmcmc.SGLD}


CONFIGURATIONS = {"documented rules": documented_rules, "zero configuration": zero_configuration}


def compare(idata, reference: dict) -> dict:
    """Mean errors in reference sds and sd ratios over all free-variable coordinates."""
    errors, ratios = [], []
    for name, summary in reference["variables"].items():
        draws = idata.posterior[name].values
        draws = draws.reshape(draws.shape[0] * draws.shape[1], -1)
        reference_mean = np.asarray(summary["mean"])
        reference_sd = np.asarray(summary["sd"])
        errors.append(np.abs(draws.mean(axis=0) - reference_mean) / reference_sd)
        ratios.append(draws.std(axis=0) / reference_sd)
    errors, ratios = np.concatenate(errors), np.concatenate(ratios)
    return {
        "max_mean_error": float(np.max(errors)),
        "min_sd_ratio": float(np.min(ratios)),
        "max_sd_ratio": float(np.max(ratios)),
    }


def evaluate(name: str, sampler: str, make_step, reference: dict, sample_options: dict) -> dict:
    """One sampler on one posterior; exceptions become a row with the error."""
    row = {"posterior": name, "sampler": sampler}
    start = time.perf_counter()
    try:
        with POSTERIORS[name].build():
            idata = pm.sample(
                step=make_step(),
                progressbar=False,
                compute_convergence_checks=False,
                **sample_options,
            )
        row.update(compare(idata, reference))
        row["divergences"] = int(idata.sample_stats["diverging"].sum())
        row["meets_target"] = bool(
            np.isfinite(row["max_mean_error"])
            and row["max_mean_error"] < MAX_MEAN_ERROR
            and SD_RATIO_RANGE[0] <= row["min_sd_ratio"]
            and row["max_sd_ratio"] <= SD_RATIO_RANGE[1]
        )
    except Exception as error:  # noqa: BLE001 (a blow-up is a result)
        row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
        row["traceback"] = traceback.format_exc()
        row["meets_target"] = False
    row["wall_seconds"] = time.perf_counter() - start
    return row


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| posterior | sampler | max \\|mean err\\|/sd | min sd ratio | max sd ratio "
        "| seconds | divergences | meets target |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(
                f"| {row['posterior']} | {row['sampler']} | error: {row['error']} | | "
                f"| {row['wall_seconds']:.0f} | | no |"
            )
            continue
        lines.append(
            f"| {row['posterior']} | {row['sampler']} | {row['max_mean_error']:.3g} "
            f"| {row['min_sd_ratio']:.3g} | {row['max_sd_ratio']:.3g} "
            f"| {row['wall_seconds']:.0f} | {row['divergences']} "
            f"| {'yes' if row['meets_target'] else 'no'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configuration", default="documented rules", choices=list(CONFIGURATIONS))
    parser.add_argument("--only", nargs="*", default=list(POSTERIORS))
    parser.add_argument("--tune", type=int, default=None)
    parser.add_argument("--draws", type=int, default=None)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    sample_options = {"chains": args.chains, "cores": 1, "random_seed": args.seed}
    if args.tune is not None:
        sample_options["tune"] = args.tune
    if args.draws is not None:
        sample_options["draws"] = args.draws
    rows = []
    for name in args.only:
        path = REFERENCES / f"{name}.json"
        if not path.exists():
            print(f"{name}: no stored reference ({path.name}); skipped", flush=True)
            continue
        reference = json.loads(path.read_text())
        for sampler, make_step in CONFIGURATIONS[args.configuration](reference).items():
            row = evaluate(name, sampler, make_step, reference, sample_options)
            rows.append(row)
            print(
                json.dumps({key: value for key, value in row.items() if key != "traceback"}),
                flush=True,
            )
    table = markdown_table(rows)
    header = (
        f"Configuration: {args.configuration}; pm.sample options {sample_options}; "
        f"PyMC {pm.__version__}\n\n"
    )
    print(header + table)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(header + table + "\n")


if __name__ == "__main__":
    main()
