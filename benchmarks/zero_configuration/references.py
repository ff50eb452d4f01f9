"""NUTS references for the zero-configuration benchmark posteriors.

For each posterior in ``posteriors.POSTERIORS`` this samples
``pymc_sgmcmc.full_data_model(model)`` with NUTS and writes
``references/<name>.json``: per free variable (constrained scale, as in
``idata.posterior``) the flattened posterior mean, sd, their Monte Carlo standard errors,
bulk ESS and max r_hat (the sd's MCSE by the normal
approximation sd / sqrt(2 ESS_sd)); per value variable (unconstrained scale) the posterior sd; the
number of divergences, the NUTS settings, the PyMC version and the wall time.

A run with max r_hat > 1.01, min bulk ESS < 400 or any divergence is refused: it is
reported and written to ``references/<name>.rejected.json`` (which ``run.py`` ignores)
instead of ``<name>.json``.

    python benchmarks/zero_configuration/references.py [--only NAME ...] [--tune 1000]
        [--draws 2000] [--chains 4] [--cores 2]
"""

from __future__ import annotations

import argparse
import json
import time

from pathlib import Path

import arviz as az
import numpy as np
import pymc as pm

from posteriors import POSTERIORS

from pymc_sgmcmc import full_data_model

REFERENCES = Path(__file__).resolve().parent / "references"
MAX_R_HAT = 1.01
MIN_BULK_ESS = 400


def summarise(idata, full_model: pm.Model) -> dict:
    """Per-variable summaries of a NUTS run (constrained and unconstrained scale)."""
    free_names = [variable.name for variable in full_model.free_RVs]
    posterior = idata.posterior[free_names]
    mean = posterior.mean(("chain", "draw"))
    sd = posterior.std(("chain", "draw"))
    mcse_mean = az.mcse(posterior, method="mean")
    # az.mcse(method="sd") fails with this NumPy; use the normal approximation
    # mcse(sd) = sd / sqrt(2 ess_sd) with ArviZ's ESS of the sd.
    mcse_sd = sd / np.sqrt(2.0 * az.ess(posterior, method="sd"))
    ess_bulk = az.ess(posterior, method="bulk")
    r_hat = az.rhat(posterior)
    variables = {}
    for name in free_names:
        variables[name] = {
            "shape": list(posterior[name].shape[2:]),
            "mean": np.ravel(mean[name].values).tolist(),
            "sd": np.ravel(sd[name].values).tolist(),
            "mcse_mean": np.ravel(mcse_mean[name].values).tolist(),
            "mcse_sd": np.ravel(mcse_sd[name].values).tolist(),
            "ess_bulk": np.ravel(ess_bulk[name].values).tolist(),
            "r_hat_max": float(np.max(r_hat[name].values)),
        }
    unconstrained = {}
    for value_variable in full_model.value_vars:
        draws = idata.posterior[value_variable.name]
        unconstrained[value_variable.name] = {
            "mean": np.ravel(draws.mean(("chain", "draw")).values).tolist(),
            "sd": np.ravel(draws.std(("chain", "draw")).values).tolist(),
        }
    return {"variables": variables, "unconstrained": unconstrained}


def reference(name: str, settings: dict) -> tuple[dict, list[str]]:
    """Sample one posterior with NUTS; return its summary and the failed checks."""
    full_model = full_data_model(POSTERIORS[name].build())
    start = time.perf_counter()
    with full_model:
        idata = pm.sample(
            **settings,
            idata_kwargs={"include_transformed": True},
            progressbar=False,
            compute_convergence_checks=False,
        )
    wall_seconds = time.perf_counter() - start
    summary = summarise(idata, full_model)
    divergences = int(idata.sample_stats["diverging"].sum())
    r_hat_max = max(variable["r_hat_max"] for variable in summary["variables"].values())
    ess_bulk_min = min(min(variable["ess_bulk"]) for variable in summary["variables"].values())
    failures = []
    if not r_hat_max <= MAX_R_HAT:
        failures.append(f"max r_hat {r_hat_max:.4f} > {MAX_R_HAT}")
    if not ess_bulk_min >= MIN_BULK_ESS:
        failures.append(f"min bulk ESS {ess_bulk_min:.0f} < {MIN_BULK_ESS}")
    if divergences > 0:
        failures.append(f"{divergences} divergences")
    record = {
        "posterior": name,
        "data_source": POSTERIORS[name].data_source,
        "difficulty": POSTERIORS[name].difficulty,
        "batch_size": POSTERIORS[name].batch_size,
        "rows": int(full_model.observed_RVs[0].shape.eval()[0]),
        "dimension": int(sum(value.size for value in full_model.initial_point().values())),
        "sampler": "NUTS (pm.sample on full_data_model)",
        "settings": settings,
        "pymc_version": pm.__version__,
        "wall_seconds": wall_seconds,
        "divergences": divergences,
        "r_hat_max": r_hat_max,
        "ess_bulk_min": ess_bulk_min,
        "mean_tree_depth": float(idata.sample_stats["tree_depth"].mean()),
        **summary,
    }
    return record, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=list(POSTERIORS))
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--target-accept", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=20261201)
    args = parser.parse_args()
    REFERENCES.mkdir(exist_ok=True)
    for name in args.only:
        settings = {
            "tune": args.tune,
            "draws": args.draws,
            "chains": args.chains,
            "cores": args.cores,
            "target_accept": args.target_accept,
            "random_seed": args.seed,
        }
        record, failures = reference(name, settings)
        summary = (
            f"{name}: {record['wall_seconds']:.0f} s, min bulk ESS {record['ess_bulk_min']:.0f}, "
            f"max r_hat {record['r_hat_max']:.4f}, {record['divergences']} divergences"
        )
        if failures:
            record["refused_because"] = failures
            (REFERENCES / f"{name}.rejected.json").write_text(json.dumps(record, indent=1))
            print(f"REFUSED {summary}: {'; '.join(failures)}", flush=True)
        else:
            (REFERENCES / f"{name}.json").write_text(json.dumps(record, indent=1))
            (REFERENCES / f"{name}.rejected.json").unlink(missing_ok=True)
            print(f"stored  {summary}", flush=True)


if __name__ == "__main__":
    main()
