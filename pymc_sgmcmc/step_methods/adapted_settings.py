"""Each chain's adapted settings: gathered where ``pm.sample`` was called, and in the trace.

A chain's step size, mass matrix and SG steps per draw are final when its tuning ends. A
chain in one of PyMC's worker processes sends back only its draws and scalar stats, so the
step there writes its settings to a file in a folder named by the step in the calling
process, which reads them back (:class:`AdaptedSettingsRecord`). Records carry the run they
belong to, read from the chain's generator (``pm.sample`` gives every chain a child of one
``SeedSequence``), so settings of an earlier run are never mixed with the latest one's.

In the trace they are ``sample_stats`` variables with a ``chain`` dimension
(:func:`record_in_trace`), which ``to_netcdf`` and ``to_zarr`` keep, and which
:func:`pymc_sgmcmc.adapted_settings` reads back.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
import weakref

import numpy as np
import xarray as xr

from pymc_sgmcmc.diagnostics._trace import group_dataset, has_group

__all__ = ["AdaptedSettingsRecord", "adapted_settings", "pooled_settings", "record_in_trace"]

#: The ``sample_stats`` variables of the adapted settings, one value (or matrix) per chain.
TRACE_VARIABLES = {
    "step_size": "adapted_step_size",
    "mass": "adapted_mass",
    "steps_per_draw": "adapted_steps_per_draw",
}
_MASS_DIMS = ("adapted_mass_dim_0", "adapted_mass_dim_1")


def spawn_key(rng: np.random.Generator) -> tuple[int, ...]:
    """The spawn key of a generator's ``SeedSequence`` (empty without one)."""
    return tuple(getattr(getattr(rng.bit_generator, "seed_seq", None), "spawn_key", ()))


def run_of(rng: np.random.Generator) -> str | None:
    """The ``pm.sample`` run a chain's generator belongs to: its ``SeedSequence``'s entropy
    and the spawn key above the chain's own (None for a generator without one)."""
    key = spawn_key(rng)
    if not key:
        return None
    return f"{rng.bit_generator.seed_seq.entropy}/{key[:-1]}"


def settings_of(per_chain: dict[int, dict], chain: int | None) -> dict:
    """One chain's settings, or with ``chain`` None all chains' pooled."""
    if chain is None:
        return pooled_settings(per_chain)
    if chain not in per_chain:
        raise ValueError(
            f"Chain {chain} has no adapted settings; chains that have some: {sorted(per_chain)}."
        )
    return per_chain[chain]


class AdaptedSettingsRecord:
    """The adapted settings of each chain of the latest ``pm.sample`` run of one step.

    Chains that run in this process are kept here; those of PyMC's worker processes
    (forked or spawned, which hold a copy of the step) are written to files in a folder
    that this process removes when the step is garbage collected or at exit.
    """

    def __init__(self):
        self._owner = os.getpid()
        self._folder = os.path.join(tempfile.gettempdir(), f"pymc_sgmcmc-{uuid.uuid4().hex}")
        self._records: dict[tuple[str | None, int], dict] = {}
        weakref.finalize(self, _remove_folder, self._folder, self._owner)

    def adopt(self) -> None:
        """Keep the records in this process (a step unpickled to run its chains here, as
        :func:`pymc_sgmcmc.sample`'s workers do), instead of writing them for another."""
        self._owner = os.getpid()

    def add(self, run: str | None, chain: int, settings: dict) -> None:
        """Note a chain's settings when its tuning ends."""
        record = {"run": run, "chain": int(chain), "time": time.time(), "settings": settings}
        self._records[(run, int(chain))] = record
        if os.getpid() != self._owner:
            self._write(record)

    def chains(self) -> dict[int, dict]:
        """Settings by chain number, of the run whose chain finished tuning last."""
        records = list(self._records.values())
        if os.getpid() == self._owner:
            records.extend(self._read_folder())
        if not records:
            return {}
        latest = max(records, key=lambda record: record["time"])["run"]
        by_chain: dict[int, dict] = {}
        for record in sorted(records, key=lambda record: record["time"]):
            if record["run"] == latest:
                by_chain[record["chain"]] = record["settings"]
        return dict(sorted(by_chain.items()))

    def _write(self, record: dict) -> None:
        os.makedirs(self._folder, exist_ok=True)
        arrays = {
            "run": np.array("" if record["run"] is None else record["run"]),
            "chain": np.array(record["chain"]),
            "time": np.array(record["time"]),
        }
        arrays.update({f"setting_{name}": value for name, value in record["settings"].items()})
        name = os.path.join(self._folder, f"chain-{record['chain']}-{os.getpid()}")
        # Written whole, then renamed: the caller never reads a half-written file.
        with open(f"{name}.partial", "wb") as file:
            np.savez(file, **arrays)
        os.replace(f"{name}.partial", f"{name}.npz")

    def _read_folder(self) -> list[dict]:
        if not os.path.isdir(self._folder):
            return []
        records = []
        for entry in sorted(os.listdir(self._folder)):
            if not entry.endswith(".npz"):
                continue
            with np.load(os.path.join(self._folder, entry)) as arrays:
                run = str(arrays["run"])
                settings = {
                    key.removeprefix("setting_"): _setting(key, arrays[key])
                    for key in arrays.files
                    if key.startswith("setting_")
                }
                records.append(
                    {
                        "run": run or None,
                        "chain": int(arrays["chain"]),
                        "time": float(arrays["time"]),
                        "settings": settings,
                    }
                )
        return records


def _setting(key: str, value: np.ndarray):
    if key == "setting_mass":
        return value
    return int(value) if key == "setting_steps_per_draw" else float(value)


def _remove_folder(folder: str, owner: int) -> None:
    # A forked worker holds a copy of this finaliser: only the caller's process removes.
    if os.getpid() == owner:
        shutil.rmtree(folder, ignore_errors=True)


def pooled_settings(per_chain: dict[int, dict]) -> dict:
    """One set of settings from every chain's: the mass matrix whose covariance is the
    chains' mean covariance ``Σ = mean_c M_c⁻¹``, the median step size, and the most SG
    steps per draw any chain took."""
    if not per_chain:
        return {}
    settings = list(per_chain.values())
    pooled = {}
    if "step_size" in settings[0]:
        pooled["step_size"] = float(np.median([chain["step_size"] for chain in settings]))
    if "mass" in settings[0]:
        masses = [np.asarray(chain["mass"], dtype=float) for chain in settings]
        if masses[0].ndim == 2:
            covariance = np.mean([np.linalg.inv(mass) for mass in masses], axis=0)
            mass = np.linalg.inv(covariance)
            pooled["mass"] = 0.5 * (mass + mass.T)
        else:
            pooled["mass"] = 1.0 / np.mean([1.0 / mass for mass in masses], axis=0)
    if "steps_per_draw" in settings[0]:
        pooled["steps_per_draw"] = int(max(chain["steps_per_draw"] for chain in settings))
    return pooled


def record_in_trace(idata, per_chain: dict[int, dict], sampler: str):
    """``idata`` with each chain's settings as ``sample_stats`` variables (NaN for a chain
    with none), in place for InferenceData and DataTree alike; returns ``idata``."""
    if not has_group(idata, "sample_stats"):
        raise TypeError(
            "The adapted settings are written to the `sample_stats` group of what pm.sample "
            f"returns (InferenceData or DataTree); got a {type(idata).__name__} without one. "
            "Sample with return_inferencedata=True (the default)."
        )
    stats = group_dataset(idata, "sample_stats")
    chains = [int(chain) for chain in stats["chain"].values]
    if not per_chain:
        return idata
    example = next(iter(per_chain.values()))
    variables = {}
    for name, value in example.items():
        value = np.asarray(value, dtype=float)
        values = np.full((len(chains), *value.shape), np.nan)
        for position, chain in enumerate(chains):
            if chain in per_chain:
                values[position] = per_chain[chain][name]
        if name == "steps_per_draw" and not np.isnan(values).any():
            values = values.astype(np.int64)
        dims = ("chain", *_MASS_DIMS[: value.ndim])
        variables[TRACE_VARIABLES[name]] = xr.DataArray(values, dims=dims)
    stats = stats.assign(variables)
    stats.attrs["pymc_sgmcmc_adapted_sampler"] = sampler
    if isinstance(idata, xr.DataTree):
        idata["sample_stats"] = xr.DataTree(stats)
    else:
        idata.sample_stats = stats
    return idata


def adapted_settings(idata, chain: int | None = None) -> dict:
    """The adapted settings stored in a trace, to sample again without adapting them.

    ``type(step)(**pymc_sgmcmc.adapted_settings(idata))`` samples with the step size, mass
    matrix and SG steps per draw that a run adapted; they are in the trace once
    ``step.record_adapted_settings(idata)`` (or :func:`pymc_sgmcmc.sample`) wrote them, and
    survive ``to_netcdf`` and ``to_zarr``.

    Parameters
    ----------
    idata : arviz.InferenceData or xarray.DataTree
        What ``pm.sample`` returned, with the settings recorded.
    chain : int, optional
        One chain's settings. By default all chains' pooled as in
        ``step.adapted_settings()``: the mass matrix of their mean covariance, the median
        step size and the most SG steps per draw.

    Returns
    -------
    dict
        ``step_size``, ``mass`` and ``steps_per_draw``, those that were adapted.
    """
    stats = group_dataset(idata, "sample_stats") if has_group(idata, "sample_stats") else None
    names = {} if stats is None else {v: k for k, v in TRACE_VARIABLES.items() if v in stats}
    if not names:
        raise ValueError(
            "This trace holds no adapted settings: write them after pm.sample with "
            "`step.record_adapted_settings(idata)` (pymc_sgmcmc.sample writes them itself), or "
            "take them from the step with `step.adapted_settings()`."
        )
    per_chain = {}
    for position, number in enumerate(stats["chain"].values):
        values = {key: stats[name].values[position] for name, key in names.items()}
        if np.isnan(np.asarray(values[next(iter(values))], dtype=float)).any():
            continue
        per_chain[int(number)] = {
            key: (
                np.asarray(value, dtype=float)
                if key == "mass"
                else int(value)
                if key == "steps_per_draw"
                else float(value)
            )
            for key, value in values.items()
        }
    return settings_of(per_chain, chain)
