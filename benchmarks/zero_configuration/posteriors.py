"""Realistic posteriors for measuring samplers that configure themselves.

Every builder returns a PyMC model written the way a user with big data would write it:
the data enter through one ``pm.Minibatch(...)`` call (arrays of the same rows sliced
together so that they stay aligned) and the observed variable carries ``total_size=N``.
``pymc_sgmcmc.full_data_model(model)`` gives the same model on the full data, which is
what ``references.py`` samples with NUTS.

The data ship inside installed packages (statsmodels and scikit-learn datasets) or are
simulated with a fixed seed; nothing is downloaded. ``POSTERIORS`` maps a name to a
:class:`Posterior` (builder, batch size, data source, what makes it hard).

    python benchmarks/zero_configuration/posteriors.py   # prints N, d and a logp check
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pymc as pm
import statsmodels.api as sm

from sklearn.datasets import load_diabetes, load_iris

from pymc_sgmcmc import full_data_model

__all__ = ["POSTERIORS", "Posterior"]


@dataclass(frozen=True)
class Posterior:
    """One benchmark posterior.

    Attributes
    ----------
    builder : callable
        ``builder(batch_size) -> pymc.Model``.
    batch_size : int
        The minibatch size a user would pick for this data set.
    data_source : str
        Where the data come from.
    difficulty : str
        What makes the posterior hard for a sampler that is not tuned by hand.
    """

    builder: Callable[[int], pm.Model]
    batch_size: int
    data_source: str
    difficulty: str

    def build(self, batch_size: int | None = None) -> pm.Model:
        """The minibatch model, with the registered batch size unless one is given."""
        return self.builder(self.batch_size if batch_size is None else batch_size)


def diabetes_polynomial(batch_size: int) -> pm.Model:
    """Disease progression on unstandardised quadratic features of diabetes data.

    Features bmi, blood pressure and log triglycerides (s5) in their raw units, plus
    bmi², bmi·bp and bp²; the design matrix has a condition number of about 5e5, so the
    coefficients are strongly correlated and their posterior sds span several orders of
    magnitude.
    """
    data = load_diabetes(scaled=False)
    bmi, blood_pressure, triglycerides = data.data[:, 2], data.data[:, 3], data.data[:, 8]
    features = np.column_stack(
        [
            bmi,
            blood_pressure,
            triglycerides,
            bmi**2,
            bmi * blood_pressure,
            blood_pressure**2,
        ]
    )
    target = data.target
    rows = len(target)
    with pm.Model(coords={"feature": ["bmi", "bp", "s5", "bmi2", "bmi_bp", "bp2"]}) as model:
        features_batch, target_batch = pm.Minibatch(features, target, batch_size=batch_size)
        intercept = pm.Normal("intercept", 0.0, 100.0)
        coefficients = pm.Normal("coefficients", 0.0, 10.0, dims="feature")
        sigma = pm.HalfNormal("sigma", 100.0)
        pm.Normal(
            "progression",
            intercept + features_batch @ coefficients,
            sigma,
            observed=target_batch,
            total_size=rows,
        )
    return model


def engel_food(batch_size: int) -> pm.Model:
    """Engel curve: log food expenditure on uncentred log income (Belgian households).

    log income has mean 6.8 and sd 0.45, so the posterior correlation of intercept and
    slope is about -0.998: a long thin ridge along which an isotropic sampler crawls.
    """
    data = sm.datasets.engel.load_pandas().data
    log_income = np.log(data["income"].to_numpy())
    log_food = np.log(data["foodexp"].to_numpy())
    rows = len(log_food)
    with pm.Model() as model:
        income_batch, food_batch = pm.Minibatch(log_income, log_food, batch_size=batch_size)
        intercept = pm.Normal("intercept", 0.0, 10.0)
        elasticity = pm.Normal("elasticity", 0.0, 10.0)
        sigma = pm.HalfNormal("sigma", 1.0)
        pm.Normal(
            "log_food",
            intercept + elasticity * income_batch,
            sigma,
            observed=food_batch,
            total_size=rows,
        )
    return model


def sunspots_autoregression(batch_size: int, order: int = 3) -> pm.Model:
    """AR(3) on yearly sunspot activity with Student-t innovations and a HalfCauchy scale.

    Two positive parameters (scale and degrees of freedom, the latter weakly identified
    and skewed) next to correlated autoregressive coefficients; the data are raw counts
    (0-190), so the intercept and the scale live on a very different scale from the
    coefficients.
    """
    activity = sm.datasets.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy()
    lags = np.column_stack(
        [activity[order - lag : len(activity) - lag] for lag in range(1, order + 1)]
    )
    current = activity[order:]
    rows = len(current)
    with pm.Model(coords={"lag": list(range(1, order + 1))}) as model:
        lags_batch, current_batch = pm.Minibatch(lags, current, batch_size=batch_size)
        intercept = pm.Normal("intercept", 0.0, 50.0)
        coefficients = pm.Normal("coefficients", 0.0, 1.0, dims="lag")
        sigma = pm.HalfCauchy("sigma", 10.0)
        degrees_of_freedom = pm.Gamma("degrees_of_freedom", alpha=2.0, beta=0.1)
        pm.StudentT(
            "activity",
            nu=degrees_of_freedom,
            mu=intercept + lags_batch @ coefficients,
            sigma=sigma,
            observed=current_batch,
            total_size=rows,
        )
    return model


def iris_mixture(batch_size: int) -> pm.Model:
    """Two-component normal mixture of iris petal lengths, means ordered, sds positive.

    The ordered transform keeps the components identified; the weight lives on the
    simplex and the two sds differ by a factor of about five (setosa vs the rest).
    """
    petal_length = load_iris().data[:, 2]
    rows = len(petal_length)
    with pm.Model(coords={"component": ["small", "large"]}) as model:
        petal_batch = pm.Minibatch(petal_length, batch_size=batch_size)
        weights = pm.Dirichlet("weights", a=np.ones(2), dims="component")
        means = pm.Normal(
            "means",
            mu=np.array([2.0, 5.0]),
            sigma=5.0,
            transform=pm.distributions.transforms.ordered,
            initval=np.array([1.5, 5.0]),
            dims="component",
        )
        sds = pm.HalfNormal("sds", 2.0, dims="component")
        pm.NormalMixture(
            "petal_length",
            w=weights,
            mu=means,
            sigma=sds,
            observed=petal_batch,
            total_size=rows,
        )
    return model


def randhie_visits(batch_size: int) -> pm.Model:
    """log(1 + doctor visits) in the RAND health insurance experiment, flat-ish priors.

    Dummies for insurance type and self-rated health (one of them set for only 1.5% of
    rows) next to unstandardised continuous covariates (disease count 0-59); Normal(0,
    100) priors leave the scale to the data.
    """
    data = sm.datasets.randhie.load_pandas().data
    covariates = ["lncoins", "idp", "lpi", "fmde", "physlm", "disea", "hlthg", "hlthf", "hlthp"]
    features = data[covariates].to_numpy()
    log_visits = np.log1p(data["mdvis"].to_numpy())
    rows = len(log_visits)
    with pm.Model(coords={"covariate": covariates}) as model:
        features_batch, visits_batch = pm.Minibatch(features, log_visits, batch_size=batch_size)
        intercept = pm.Normal("intercept", 0.0, 100.0)
        coefficients = pm.Normal("coefficients", 0.0, 100.0, dims="covariate")
        sigma = pm.HalfNormal("sigma", 10.0)
        pm.Normal(
            "log_visits",
            intercept + features_batch @ coefficients,
            sigma,
            observed=visits_batch,
            total_size=rows,
        )
    return model


def grunfeld_hierarchical(batch_size: int) -> pm.Model:
    """Firm investment with non-centred firm intercepts; the firm index is minibatched.

    ``pm.Minibatch(firm_index, log_value, log_capital, log_invest)`` keeps the group index
    aligned with the rows. Eleven firms with a HalfCauchy group scale: the funnel between
    the scale and the standardised effects is what non-centring softens but does not
    remove.
    """
    data = sm.datasets.grunfeld.load_pandas().data
    firms, firm_index = np.unique(data["firm"].to_numpy(dtype=str), return_inverse=True)
    log_value = np.log(data["value"].to_numpy())
    log_capital = np.log(data["capital"].to_numpy())
    log_invest = np.log(data["invest"].to_numpy())
    rows = len(log_invest)
    with pm.Model(coords={"firm": list(firms)}) as model:
        firm_batch, value_batch, capital_batch, invest_batch = pm.Minibatch(
            firm_index.astype("int64"), log_value, log_capital, log_invest, batch_size=batch_size
        )
        mean_intercept = pm.Normal("mean_intercept", 0.0, 5.0)
        group_scale = pm.HalfCauchy("group_scale", 1.0)
        standardised_effects = pm.Normal("standardised_effects", 0.0, 1.0, dims="firm")
        firm_intercepts = pm.Deterministic(
            "firm_intercepts", mean_intercept + group_scale * standardised_effects, dims="firm"
        )
        value_slope = pm.Normal("value_slope", 0.0, 2.0)
        capital_slope = pm.Normal("capital_slope", 0.0, 2.0)
        sigma = pm.HalfNormal("sigma", 1.0)
        pm.Normal(
            "log_invest",
            firm_intercepts[firm_batch] + value_slope * value_batch + capital_slope * capital_batch,
            sigma,
            observed=invest_batch,
            total_size=rows,
        )
    return model


def co2_basis(batch_size: int, harmonics: int = 8, trend_centres: int = 12) -> pm.Model:
    """Monthly Mauna Loa CO2 on a Fourier seasonal basis plus a Gaussian-bump trend basis.

    30 basis coefficients (16 seasonal, 12 trend bumps, intercept, slope) whose scales
    have HalfCauchy hyperpriors (d = 33); the overlapping bumps are nearly collinear with
    each other and with the linear trend. Eight harmonics are more than monthly data
    resolve, as in many a user's first basis: harmonics 7 and 8 alias onto 5 and 4 and
    ``sin(6·)`` is zero at every month, so nine seasonal directions are identified by
    their prior alone (posterior sds about 0.5-1 beside about 0.02 for the others) -- a
    posterior whose scales differ by two decades along directions no data inform.
    """
    monthly = sm.datasets.co2.load_pandas().data["co2"].resample("MS").mean().dropna()
    years = (monthly.index.year + (monthly.index.month - 1) / 12.0).to_numpy(dtype=float)
    concentration = monthly.to_numpy()
    decades = (years - years[0]) / 10.0
    angle = 2.0 * np.pi * years[:, None] * np.arange(1, harmonics + 1)[None, :]
    seasonal_basis = np.concatenate([np.cos(angle), np.sin(angle)], axis=1)
    centres = np.linspace(decades.min(), decades.max(), trend_centres)
    width = centres[1] - centres[0]
    trend_basis = np.exp(-0.5 * ((decades[:, None] - centres[None, :]) / width) ** 2)
    rows = len(concentration)
    with pm.Model(
        coords={"seasonal": list(range(2 * harmonics)), "trend": list(range(trend_centres))}
    ) as model:
        decades_batch, seasonal_batch, trend_batch, concentration_batch = pm.Minibatch(
            decades, seasonal_basis, trend_basis, concentration, batch_size=batch_size
        )
        intercept = pm.Normal("intercept", 340.0, 20.0)
        slope = pm.Normal("slope", 0.0, 20.0)
        seasonal_scale = pm.HalfCauchy("seasonal_scale", 1.0)
        trend_scale = pm.HalfCauchy("trend_scale", 1.0)
        seasonal_coefficients = pm.Normal(
            "seasonal_coefficients", 0.0, seasonal_scale, dims="seasonal"
        )
        trend_coefficients = pm.Normal("trend_coefficients", 0.0, trend_scale, dims="trend")
        sigma = pm.HalfCauchy("sigma", 1.0)
        pm.Normal(
            "concentration",
            intercept
            + slope * decades_batch
            + seasonal_batch @ seasonal_coefficients
            + trend_batch @ trend_coefficients,
            sigma,
            observed=concentration_batch,
            total_size=rows,
        )
    return model


def correlated_logistic(batch_size: int, rows: int = 100_000, features: int = 8) -> pm.Model:
    """Logistic regression, N = 100,000 simulated rows, features with correlation 0.9^|i-j|.

    Large N makes the posterior narrow (sd ~ 0.01) relative to the prior, and the
    correlated features make it elongated; the minibatch gradient noise dominates unless
    a control variate is used.
    """
    rng = np.random.default_rng(20261201)
    lag = np.abs(np.arange(features)[:, None] - np.arange(features)[None, :])
    cholesky = np.linalg.cholesky(0.9**lag)
    design = rng.normal(size=(rows, features)) @ cholesky.T
    true_coefficients = rng.normal(0.0, 0.5, size=features)
    outcome = rng.binomial(1, 1.0 / (1.0 + np.exp(-(0.3 + design @ true_coefficients))))
    with pm.Model(coords={"feature": list(range(features))}) as model:
        design_batch, outcome_batch = pm.Minibatch(
            design, outcome.astype("int32"), batch_size=batch_size
        )
        intercept = pm.Normal("intercept", 0.0, 2.5)
        coefficients = pm.Normal("coefficients", 0.0, 2.5, dims="feature")
        pm.Bernoulli(
            "outcome",
            logit_p=intercept + design_batch @ coefficients,
            observed=outcome_batch,
            total_size=rows,
        )
    return model


POSTERIORS: dict[str, Posterior] = {
    "diabetes_polynomial": Posterior(
        diabetes_polynomial,
        32,
        "scikit-learn load_diabetes(scaled=False)",
        "raw quadratic features, condition number ~5e5",
    ),
    "engel_food": Posterior(
        engel_food,
        32,
        "statsmodels engel",
        "uncentred predictor, intercept/slope correlation ~ -0.998",
    ),
    "sunspots_autoregression": Posterior(
        sunspots_autoregression,
        32,
        "statsmodels sunspots",
        "AR(3), Student-t with unknown dof, HalfCauchy scale, raw units",
    ),
    "iris_mixture": Posterior(
        iris_mixture,
        30,
        "scikit-learn load_iris (petal length)",
        "two-component mixture, ordered means, simplex weight",
    ),
    "randhie_visits": Posterior(
        randhie_visits,
        256,
        "statsmodels randhie",
        "categorical dummies (one rare), unstandardised covariates, flat-ish priors",
    ),
    "grunfeld_hierarchical": Posterior(
        grunfeld_hierarchical,
        32,
        "statsmodels grunfeld",
        "non-centred firm effects, HalfCauchy group scale, minibatched group index",
    ),
    "co2_basis": Posterior(
        co2_basis,
        64,
        "statsmodels co2 (monthly means)",
        "30 near-collinear basis coefficients with HalfCauchy hyperpriors",
    ),
    "correlated_logistic": Posterior(
        correlated_logistic,
        500,
        "simulated (seed 20261201)",
        "N = 100,000, correlated features, narrow posterior",
    ),
}


def main() -> None:
    for name, posterior in POSTERIORS.items():
        model = posterior.build()
        full_model = full_data_model(model)
        rows = int(full_model.observed_RVs[0].shape.eval()[0])
        point = full_model.initial_point()
        size = sum(value.size for value in point.values())
        logp = full_model.compile_logp()(point)
        print(f"{name:24s} N={rows:6d} d={size:3d} batch={posterior.batch_size:4d} logp={logp:.1f}")


if __name__ == "__main__":
    main()
