"""Divergences of a stochastic-gradient chain: what counts as one, and what it does.

A draw whose state or log density turns non-finite is a divergence: it is recorded with
``diverging = 1`` and the chain goes on from its last finite state, with one
:class:`~pymc_sgmcmc.SamplerDivergenceWarning` per chain at its end (or, with
``on_divergence="raise"``, stops with :class:`SamplerDivergenceError`).
"""

from __future__ import annotations

import numpy as np

from pymc.exceptions import SamplingError
from pymc.step_methods.state import DataClassState, WithSamplingState, dataclass_state

from pymc_sgmcmc._warnings import SamplerDivergenceWarning, warn

__all__ = ["ON_DIVERGENCE", "DivergenceMonitor", "SamplerDivergenceError"]

ON_DIVERGENCE = ("warn", "raise")


class SamplerDivergenceError(SamplingError):
    """A chain diverged with ``on_divergence="raise"``; the chain was stopped."""


#: A draw that moves farther than this, in posterior sds on a preconditioner's whitened
#: scale, diverged though its values are still finite (as NUTS flags an energy error of
#: 1000): no sampler here moves a chain that far in one draw on a posterior with tails
#: lighter than a Cauchy's.
FAR_DISTANCE = 1000.0
FAR_PREFIX = "the position moved"


@dataclass_state
class DivergenceState(DataClassState):
    count: int
    tuning_count: int


class DivergenceMonitor(WithSamplingState):
    """Counts a chain's divergences and says what they mean.

    Parameters
    ----------
    sampler : str
        The sampler's name, for the messages.
    on_divergence : {"warn", "raise"}
    advice : str
        What to change, e.g. "Lower step_size (e.g. by a factor of 10)".
    restart_note : str
        What a divergence does to the auxiliary state, e.g. " (its momentum drawn afresh)".
    """

    _state_class = DivergenceState

    def __init__(
        self,
        sampler: str,
        on_divergence: str,
        *,
        advice: str,
        restart_note: str,
        adapting: bool = False,
    ):
        self.adapting = adapting
        if on_divergence not in ON_DIVERGENCE:
            raise ValueError(
                f'`on_divergence` must be "warn" (mark the draw diverging and go on from '
                f'the last finite state) or "raise" (stop the chain), got {on_divergence!r}.'
            )
        self.sampler = sampler
        self.on_divergence = on_divergence
        self.advice = advice
        self.restart_note = restart_note
        self.start_chain()

    def start_chain(self) -> None:
        self.count = 0
        self.tuning_count = 0

    @staticmethod
    def too_far(distance: float) -> list[str]:
        """A draw that moved more than ``FAR_DISTANCE`` posterior sds (on the whitened
        scale of a preconditioner): an instability that has not overflowed yet."""
        if distance <= FAR_DISTANCE:
            return []
        return [f"{FAR_PREFIX} {distance:.3g} posterior sds in one draw"]

    @staticmethod
    def non_finite(state: dict[str, np.ndarray], logp) -> list[str]:
        """What turned non-finite in a draw, by name (empty if nothing did)."""
        bad = [name for name, value in state.items() if not np.all(np.isfinite(value))]
        if not np.isfinite(logp):
            # -inf: the chain stepped out of the support (or the density underflowed).
            bad.append(f"log density ({float(logp)})")
        return bad

    def record(
        self,
        bad: list[str],
        *,
        step_size: float,
        tune: bool,
        chain: int | None,
        draw: int,
        sg_steps: tuple[int, int],
        total_draws: int | None,
    ) -> None:
        """Count a divergence; with ``on_divergence="raise"``, stop the chain."""
        self.count += 1
        if tune:
            self.tuning_count += 1
        if self.on_divergence == "warn":
            if total_draws is None and self.count == 1:
                # Outside pm.sample the chain's end is unknown: say it at the first one.
                self.warn_summary(step_size, chain=chain, total_draws=None)
            return
        chain_name = "" if chain is None else f" in chain {chain}"
        phase = "tuning " if tune else ""
        first, last = sg_steps
        steps = f"SG step {first}" if first == last else f"SG steps {first}-{last}"
        far = [item for item in bad if item.startswith(FAR_PREFIX)]
        non_finite = [item for item in bad if item not in far]
        what = ([f"the {' and '.join(non_finite)} became non-finite"] if non_finite else []) + far
        raise SamplerDivergenceError(
            f"{self.sampler} diverged{chain_name} at {phase}draw {draw}: "
            f"{' and '.join(what)} within {steps} at "
            f"step_size={step_size:.4g}. {self.advice}. The chain was stopped "
            '(on_divergence="raise") before any non-finite value reached the trace.'
        )

    def warn_summary(self, step_size: float, *, chain: int | None, total_draws: int | None):
        """One warning for the chain's divergences, if it had any (with an adapted step
        size, those while tuning only are the adaptation at work, as for NUTS)."""
        if self.count == 0 or (self.adapting and self.count == self.tuning_count):
            return
        chain_name = "" if chain is None else f" chain {chain}"
        total = "" if total_draws is None else f" of {total_draws}"
        tuning = f" ({self.tuning_count} while tuning)" if self.tuning_count else ""
        warn(
            f"{self.sampler}{chain_name}: {self.count}{total} draws diverged"
            f"{tuning} at step_size={step_size:.4g} (the last draw's). Each went back to "
            f"the chain's last finite state{self.restart_note} and is marked diverging = 1 "
            "in sample_stats. Divergences mean that the "
            "step is too large for parts of the posterior, which the draws then under-"
            f"represent. {self.advice}.",
            SamplerDivergenceWarning,
        )
