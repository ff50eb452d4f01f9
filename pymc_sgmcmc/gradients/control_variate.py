"""Control-variate minibatch gradients (Baker, Fearnhead, Fox & Nemeth 2019).

The plain minibatch gradient's variance grows like ``N²/B``. Subtracting the same
minibatch's gradient at a fixed centre ``θ̂`` and adding back the full-data gradient there,

    g_cv(θ) = ∇ log π(θ̂) + ∇ log π̂(θ) − ∇ log π̂(θ̂),

keeps the estimate unbiased (the two minibatch terms share their rows, and ``E ∇ log
π̂(θ̂) = ∇ log π(θ̂)``) while its noise shrinks with ``‖θ − θ̂‖``. With the centre at
the mode the noise is of the order of the posterior's own scale rather than ``N/B``
times larger, so a sampler can take O(1) steps per effective sample whatever N is,
after one optimisation and one full pass over the data.
"""

from __future__ import annotations

import numbers

import numpy as np

from pymc.blocking import DictToArrayBijection
from pymc.step_methods.state import DataClassState, dataclass_state

from pymc_sgmcmc._named_function import NamedInput
from pymc_sgmcmc._validation import optional_positive_int, positive_int
from pymc_sgmcmc.gradients.estimator import GradientEstimator
from pymc_sgmcmc.gradients.full_data import FullDataLogPosterior, MaximumAPosteriori

__all__ = ["ControlVariate", "ControlVariateGradient", "control_variate_gradient"]


def control_variate_gradient(
    target, position, indices, centre, centre_gradient, minibatch_gradient=None
):
    """``g_cv(θ) = ∇ log π(θ̂) + ∇ log π̂(θ) − ∇ log π̂(θ̂)`` as a graph.

    Parameters
    ----------
    target : MinibatchLogPosterior
    position : TensorVariable
        ``θ``, shape ``(d,)``.
    indices : list of TensorVariable
        The minibatch of each stream; the same rows enter both minibatch terms.
    centre, centre_gradient : TensorVariable
        ``θ̂`` and the full-data ``∇ log π(θ̂)``, shape ``(d,)``.
    minibatch_gradient : TensorVariable, optional
        ``∇ log π̂(θ)`` on these indices where the caller has built it already.
    """
    if minibatch_gradient is None:
        minibatch_gradient = target.gradient_at(position, indices)
    return centre_gradient + minibatch_gradient - target.gradient_at(centre, indices)


class ControlVariate:
    """Configuration of control-variate gradients for a stochastic-gradient step method.

    Pass it as ``control_variate=`` to :class:`~pymc_sgmcmc.SGLD`, :class:`~pymc_sgmcmc.SGHMC`,
    :class:`~pymc_sgmcmc.SGNHT` or :class:`~pymc_sgmcmc.pSGLD`. Each SG step then uses

    .. math::

        g_{cv}(θ) = \\nabla \\log π(\\hat θ) + \\nabla \\log \\hat π(θ)
                    - \\nabla \\log \\hat π(\\hat θ),

    both minibatch terms on the same rows, at twice the cost of a plain minibatch gradient.

    Parameters
    ----------
    centre : "map", dict or array, default "map"
        ``θ̂``. ``"map"`` finds the maximum a posteriori point of the same model on the
        full data, by L-BFGS on full-data passes made in chunks (memory bounded by
        ``chunk_size``, not N; on PyMC's unconstrained space with log-Jacobians, the
        density the sampler sees). Otherwise a point: a dict of value-variable names
        (unconstrained, e.g. ``sigma_log__``) to arrays, such as ``pm.find_MAP``'s
        output, or a raveled array. For data too large for an optimiser's many passes,
        pass a point found otherwise, e.g. the last draw of a short SGD run
        (``SGLD(..., temperature=0)``).
    refresh_interval : int, optional
        Every this many draws, move the centre to the chain's current position and
        recompute the full-data gradient there (SVRG-style). The estimate stays
        unbiased, since the centre never depends on the minibatches it is used with;
        each refresh costs one full pass over the data. Off by default: with a centre
        at the mode, refreshing rarely pays.
    chunk_size : int, default 65536
        Rows per compiled call in the full-data passes.
    maxiter : int, default 1000
        Iterations of the MAP search.

    References
    ----------
    J. Baker, P. Fearnhead, E. B. Fox and C. Nemeth. Control variates for stochastic
    gradient MCMC. Statistics and Computing 29, 599-615, 2019.
    """

    def __init__(
        self,
        centre="map",
        *,
        refresh_interval: int | None = None,
        chunk_size: int = 65536,
        maxiter: int = 1000,
    ):
        if isinstance(centre, str) and centre != "map":
            raise ValueError(f'`centre` must be "map", a dict or an array, got {centre!r}.')
        self.centre = centre
        self.refresh_interval = optional_positive_int("refresh_interval", refresh_interval)
        self.chunk_size = positive_int("chunk_size", chunk_size)
        self.maxiter = positive_int("maxiter", maxiter)

    def __repr__(self):
        centre = self.centre if isinstance(self.centre, str) else "<given>"
        return (
            f"ControlVariate(centre={centre!r}, refresh_interval={self.refresh_interval!r}, "
            f"chunk_size={self.chunk_size!r})"
        )

    @classmethod
    def from_argument(cls, value) -> ControlVariate | None:
        """What a step method's ``control_variate=`` accepts: None, True, a centre, or this."""
        if value is None or value is False:
            return None
        if isinstance(value, cls):
            return value
        if value is True:
            return cls()
        if isinstance(value, numbers.Number | np.bool_) or (
            isinstance(value, np.ndarray) and value.ndim == 0
        ):
            # 0 or 1 is a flag mistyped, not a centre; a centre is a point or a vector.
            raise TypeError(
                '`control_variate` must be None or False (off), True or "map" (centre at '
                "the MAP), a point (dict of value-variable names to arrays), a raveled array "
                f"or a ControlVariate; got the number {value!r}. For a model with one scalar "
                "parameter pass the centre as an array, e.g. np.array([0.5])."
            )
        return cls(centre=value)

    def build(
        self, target, value_vars, start, compile_kwargs=None, *, guess=None
    ) -> ControlVariateGradient:
        """The estimator for one model: its centre and the full-data gradient there.

        ``guess`` (a step's :class:`~pymc_sgmcmc.step_methods.posterior_guess.PosteriorGuess`)
        gives a MAP found already, with its full-data passes, for ``centre="map"``.
        """
        if guess is not None and guess.map_result is not None and isinstance(self.centre, str):
            map_result = guess.map_result
            return ControlVariateGradient(
                target,
                guess.full_data,
                map_result.position,
                map_result.gradient,
                map_result,
                self.refresh_interval,
            )
        full_data = FullDataLogPosterior(
            target, chunk_size=self.chunk_size, compile_kwargs=compile_kwargs
        )
        map_result = None
        if isinstance(self.centre, str):
            map_result = full_data.find_map(start, maxiter=self.maxiter)
            centre, centre_gradient = map_result.position, map_result.gradient
        else:
            centre = _raveled_centre(self.centre, value_vars, target.size)
            logp, centre_gradient = full_data.logp_and_gradient(centre)
            if not (np.isfinite(logp) and np.all(np.isfinite(centre_gradient))):
                raise ValueError(
                    "The log posterior or its gradient is not finite at the given control-"
                    f"variate centre (log π = {logp!r}): pass a point inside the support."
                )
        return ControlVariateGradient(
            target, full_data, centre, centre_gradient, map_result, self.refresh_interval
        )


@dataclass_state
class ControlVariateState(DataClassState):
    """Each chain's centre and its full-data gradient: refreshing moves them."""

    centre: np.ndarray
    centre_gradient: np.ndarray


class ControlVariateGradient(GradientEstimator):
    """The control-variate estimate ``∇ log π(θ̂) + ∇ log π̂(θ) − ∇ log π̂(θ̂)``
    (Baker et al. 2019), both minibatch terms on the same rows.

    Built by :meth:`ControlVariate.build`. Each chain's centre starts at the one found
    when the step was built; with ``refresh_interval`` it moves to the chain's position
    every that many draws (SVRG-style), at the cost of one full pass over the data.

    Attributes
    ----------
    full_data : FullDataLogPosterior
        The full-data passes behind the centre's gradient.
    initial_centre, initial_centre_gradient : numpy.ndarray
        ``θ̂`` and ``∇ log π(θ̂)`` where every chain starts, raveled.
    centre, centre_gradient : numpy.ndarray
        The current chain's.
    map_result : MaximumAPosteriori or None
        The MAP search behind ``centre="map"``.
    refresh_interval : int or None
    """

    _state_class = ControlVariateState

    def __init__(
        self,
        target,
        full_data: FullDataLogPosterior,
        centre: np.ndarray,
        centre_gradient: np.ndarray,
        map_result: MaximumAPosteriori | None,
        refresh_interval: int | None,
    ):
        super().__init__(target)
        self.full_data = full_data
        self.initial_centre = np.asarray(centre, dtype=float)
        self.initial_centre_gradient = np.asarray(centre_gradient, dtype=float)
        self.map_result = map_result
        self.refresh_interval = refresh_interval
        self.inputs = (
            NamedInput("centre", target.dtype, 1),
            NamedInput("centre_gradient", target.dtype, 1),
        )
        self.start_chain()

    def gradient(self, position, indices, inputs: dict, minibatch_gradient=None):
        return control_variate_gradient(
            self.target,
            position,
            indices,
            inputs["centre"],
            inputs["centre_gradient"],
            minibatch_gradient,
        )

    def minibatch_part(self, position, indices, inputs: dict):
        # The full-data gradient at the centre is common to every estimate and cancels.
        return self.target.gradient_at(position, indices) - self.target.gradient_at(
            inputs["centre"], indices
        )

    def input_values(self) -> dict[str, np.ndarray]:
        return {"centre": self.centre, "centre_gradient": self.centre_gradient}

    def start_chain(self) -> None:
        self.centre = self.initial_centre.copy()
        self.centre_gradient = self.initial_centre_gradient.copy()

    def after_draw(self, draw: int, position: np.ndarray) -> bool:
        if self.refresh_interval is None or draw % self.refresh_interval:
            return False
        self.centre = np.array(position, dtype=float)
        self.centre_gradient = self.full_data.gradient(self.centre)
        return True

    def check_data(self) -> None:
        built = [stream.data_size for stream in self.full_data.streams]
        now = [stream.data_size for stream in self.target.streams]
        if built != now:
            raise ValueError(
                f"The data changed size since this step was built ({built} rows, now {now}; "
                "pm.set_data?), but its control variate's full-data gradient was computed "
                "on the old data. Build the step again after pm.set_data."
            )


def _raveled_centre(centre, value_vars, size: int) -> np.ndarray:
    """A user's centre as a raveled vector over ``value_vars``, checked."""
    if isinstance(centre, dict):
        missing = [var.name for var in value_vars if var.name not in centre]
        if missing:
            raise ValueError(
                f"The control-variate centre has no value for {missing}; it needs every "
                "value variable of the model, by its unconstrained name (e.g. 'sigma_log__', "
                "as in pm.find_MAP's output)."
            )
        pieces = []
        for var in value_vars:
            value = np.asarray(centre[var.name], dtype=float)
            expected = tuple(var.type.shape)
            if value.ndim != len(expected) or any(
                want is not None and want != got
                for want, got in zip(expected, value.shape, strict=True)
            ):
                raise ValueError(
                    f"The control-variate centre's {var.name!r} has shape {value.shape}; the "
                    f"variable has shape {expected}."
                )
            pieces.append(value)
        vector = DictToArrayBijection.map(
            {var.name: piece for var, piece in zip(value_vars, pieces, strict=True)}
        ).data
    else:
        vector = np.asarray(centre, dtype=float)
    if vector.shape != (size,):
        raise ValueError(
            f"The control-variate centre must have shape ({size},) (the raveled parameters), "
            f"got {vector.shape}."
        )
    if not np.all(np.isfinite(vector)):
        raise ValueError("The control-variate centre has non-finite values.")
    return vector
