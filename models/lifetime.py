"""Buy till you die: how many more orders each customer will place, what they will be worth, and the CLV.

**BG/NBD** (Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005), "'Counting Your Customers' the Easy Way:
An Alternative to the Pareto/NBD Model", Marketing Science 24(2), 275-284). While alive, a customer buys
in a Poisson process of rate lambda; after each purchase they drop out for good with probability p.
Across customers lambda ~ Gamma(r, alpha) (shape r, rate alpha) and p ~ Beta(a, b). A customer's history
is `frequency` x (repeat purchases: distinct purchase periods minus one), `recency` t_x (age at the last
repeat purchase, 0 without one) and `T` (age now, both counted from the first purchase). The likelihood is
the one of Fader, Hardie & Lee's note "Implementing the BG/NBD Model for Customer Base Analysis in Excel"
(2005, brucehardie.com/notes/004), summed in logs as a log-sum-exp of its two terms so that large x and T
neither underflow nor overflow; P(alive) is from their note "Computing P(alive) Using the BG/NBD Model"
(2008, brucehardie.com/notes/021).

**MBG/NBD** (`ModifiedBetaGeoModel`; Batislam, Denizel & Filiztekin 2007) is BG/NBD with a dropout
chance at the first purchase too, so one-time buyers are not certainly alive; the same code with one
more dropout chance (`first_purchase_dropout`). `PURCHASE_MODELS` names both for `clv.purchase_model`.

**Gamma-Gamma** (Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005), "RFM and CLV: Using Iso-Value
Curves for Customer Base Analysis", Journal of Marketing Research 42(4), 415-430; written out in Fader &
Hardie's note "The Gamma-Gamma Model of Monetary Value", 2013, brucehardie.com/notes/025). Each order of a
customer is worth z ~ Gamma(p, nu), nu ~ Gamma(q, v) across customers; it is fitted on the repeat buyers'
mean repeat order value m, and assumes order value independent of how often a customer buys.

**CLV** over the next months follows lifetimes' `customer_lifetime_value`: per month, the expected
purchases in that month times the expected order value, times the margin, discounted monthly. Its
interval comes from posterior predictive simulation (`customer_lifetime_value_interval`).

Units: time is in whatever unit `recency` and `T` are given in (the pipeline uses days, the CDNOW tests
weeks); alpha and every horizon `t` are in that unit, and `period_length` is the length of one month in it
(`DAYS_PER_MONTH` for days). Money is in the currency of `monetary_value`; v carries that unit.

Speed: the BG/NBD fit collapses identical histories into one row with a count and keeps each row as
indexes into the distinct x, t_x and T (`_collapse_indexed`), so that terms in one of them are evaluated
once per distinct value; it uses analytic gradients (digamma) on log-parameters with L-BFGS-B, on time
rescaled by its mean, and on more than 200,000 rows starts from a fit on a systematic sample of about
50,000 (`WARM_START_ROWS`), which leaves a dozen evaluations on all rows. The Gamma-Gamma fit takes
Newton steps on its exact Hessian (trust region), money rescaled by its mean. On 1M generated customers
in days (680k distinct histories; 2-core VM, nothing else running, measured by hand) a BG/NBD fit takes
about 1.1 s, MBG/NBD 1.0 s, a Gamma-Gamma fit 0.3 s, and the 12-month CLV with its interval (200 draws)
about 22 s.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, astuple, dataclass

import numpy as np
from scipy.optimize import OptimizeResult, minimize
from scipy.special import digamma, expit, gammaln, hyp2f1, polygamma

#: The mean month in days (a Julian year over 12): `period_length` when recency and T are in days.
DAYS_PER_MONTH = 365.25 / 12
#: The MLflow artifact of a night's value-model run holding the fits' `FitDiagnostics` and the holdout check.
DIAGNOSTICS_ARTIFACT = "lifetime_diagnostics.json"
#: Customers simulated together in `customer_lifetime_value_interval`. Each block draws from its own
#: stream (seed, block number), so a customer's interval depends on the seed and its block's rows only;
#: the value is fixed here, not an option, so that the same input always gives the same intervals.
SIMULATION_BLOCK = 5_000
#: Bound on the fitted log-parameters (in the rescaled units): only keeps exp() finite during the search.
LOG_PARAMETER_BOUND = 30.0


class LifetimeInputError(ValueError):
    """Customer arrays that the models cannot take; the message names the argument and the rows."""


class ConvergenceError(RuntimeError):
    """A maximum-likelihood fit that did not converge; the message names the model and the optimizer's."""


@dataclass(frozen=True)
class BetaGeoParams:
    """BG/NBD parameters: lambda ~ Gamma(r, rate alpha) in purchases per time unit, p ~ Beta(a, b)."""

    r: float
    alpha: float  # time units (a rate parameter of lambda)
    a: float
    b: float


@dataclass(frozen=True)
class GammaGammaParams:
    """Gamma-Gamma parameters: order value ~ Gamma(p, rate nu), nu ~ Gamma(q, rate v); v in currency."""

    p: float
    q: float
    v: float


@dataclass(frozen=True)
class FitDiagnostics:
    """How a maximum-likelihood fit ended, and whether its parameters can be read as the model means them.

    `log_likelihood` is the total over the customers (natural log, without the fit's penalty);
    `gradient_norm` the largest |d mean negative log-likelihood / d ln parameter| at the end (time and
    money rescaled by their means, as the fit sees them); `boundary` maps a parameter (or a combination such
    as a/(a+b)) that sits at or near a boundary of its space to what that means; `problems` maps what the
    fitted model cannot be used for to why (`dropout_not_identifiable`, `order_value_mean_undefined`), so a
    caller leaves those outputs out; `figures` holds the fit's further checks (e.g. the likelihood-ratio
    statistic of dropout).
    """

    model: str
    params: dict[str, float]
    customers: float
    log_likelihood: float
    converged: bool
    optimizer_status: int
    optimizer_message: str
    iterations: int
    evaluations: int
    gradient_norm: float
    boundary: dict[str, str]
    problems: dict[str, str]
    figures: dict[str, float]

    def as_dict(self) -> dict:
        """The diagnostics as plain JSON-ready values."""
        return asdict(self)


def _diagnostics(
    model: str,
    params: object,
    result: OptimizeResult,
    customers: float,
    log_likelihood: float,
    boundary: dict[str, str],
    problems: dict[str, str],
    figures: dict[str, float],
) -> FitDiagnostics:
    return FitDiagnostics(
        model=model,
        params={name: float(value) for name, value in asdict(params).items()},
        customers=float(customers),
        log_likelihood=float(log_likelihood),
        converged=bool(result.success),
        optimizer_status=int(result.status),
        optimizer_message=str(result.message),
        iterations=int(result.nit),
        evaluations=int(result.nfev),
        gradient_norm=float(np.max(np.abs(result.jac))),
        boundary=boundary,
        problems=problems,
        figures={name: float(value) for name, value in figures.items()},
    )


#: A fitted log-parameter (time and money in units of their means) this close to the search bound
#: LOG_PARAMETER_BOUND is "near the boundary": the parameter is exp(+-20) times its natural scale or more.
NEAR_BOUND_MARGIN = 10.0
#: BG/NBD: a mean dropout probability per repeat purchase, a / (a + b), below this is no dropout: one
#: customer in 10,000 leaving after a purchase leaves no trace in any shop's data.
MIN_MEAN_DROPOUT = 1e-4
#: BG/NBD: the likelihood-ratio statistic 2 (ln L(BG/NBD) - ln L(NBD, no dropout)) below which the data show
#: no dropout: the 95% quantile of chi-square with 2 degrees of freedom (a, b). Under no dropout the
#: statistic's law is not quite that (p = 0 is a boundary, b is undefined there); the quantile is a
#: conservative bar, as a dropout that this test cannot see cannot rank customers either.
DROPOUT_EVIDENCE = 5.99
#: Gamma-Gamma: q below this (but above 1) makes the mean order value p v / (q - 1) rest on a near-zero
#: denominator: flagged at the boundary, still used.
NEAR_UNDEFINED_MEAN_Q = 1.1


def collapse_rows(*columns: np.ndarray, weights: np.ndarray | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """The distinct rows of equal-length `columns` and how many customers each stands for.

    `weights` (default 1 per row) are summed over identical rows; the likelihood of a row counted w times
    is w times its likelihood, so a fit on the collapsed rows equals the fit on all of them.
    """
    weights = np.ones(len(columns[0])) if weights is None else np.asarray(weights, dtype=float)
    distinct, where = _distinct_rows(*columns)
    return distinct, np.bincount(where, weights=weights, minlength=len(distinct[0]))


def _collapse_indexed(*columns: np.ndarray, weights: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray]]:
    """`collapse_rows`, with each collapsed column given as an index into its own distinct values.

    Returns (indexes, weights, distinct values): column k of distinct row i is `values[k][indexes[k][i]]`.
    A likelihood then evaluates a function of one column once per distinct value and gathers it. The
    rows are told apart by one integer key (the columns' value numbers in mixed radix): one sort of
    integers, not a lexicographic sort of float columns (0.1 s instead of 0.5 s at 1M customers).
    """
    values, codes = zip(*(_value_codes(column) for column in columns))
    sizes = [len(distinct) for distinct in values]
    if np.prod(np.array(sizes, dtype=float)) >= 2.0**62:  # too many combinations for one int64 key
        indexes, weights = collapse_rows(*codes, weights=weights)
        return indexes, weights, list(values)
    key = np.zeros(len(columns[0]), dtype=np.int64)
    for code, size in zip(codes, sizes):
        key = key * size + code
    (distinct_keys,), where = _distinct_rows(key)
    indexes = []
    for size in reversed(sizes):
        distinct_keys, code = np.divmod(distinct_keys, size)
        indexes.insert(0, code)
    return indexes, np.bincount(where, weights=weights, minlength=len(indexes[0])), list(values)


def _value_codes(column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of `column` (sorted) and each row's position among them.

    Whole numbers over a range not much longer than the column (days, counts) are looked up in a table;
    other values are searched for (np.unique's return_inverse sorts the column: slower than both).
    """
    distinct = np.unique(column)
    if len(distinct) and np.all(distinct == np.floor(distinct)) and distinct[-1] - distinct[0] <= 4 * len(column):
        table = np.zeros(int(distinct[-1] - distinct[0]) + 1, dtype=np.int64)
        table[(distinct - distinct[0]).astype(np.int64)] = np.arange(len(distinct))
        return distinct, table[(column - distinct[0]).astype(np.int64)]
    return distinct, np.searchsorted(distinct, column)


def _distinct_rows(*columns: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """The distinct rows of equal-length columns (sorted), and for each original row its distinct row's index."""
    columns = [np.asarray(column) for column in columns]
    n = len(columns[0])
    if n == 0:
        return columns, np.zeros(0, dtype=np.intp)
    order = np.argsort(columns[0]) if len(columns) == 1 else np.lexsort(columns[::-1])
    ordered = [column[order] for column in columns]
    starts = np.ones(n, dtype=bool)
    starts[1:] = np.logical_or.reduce([column[1:] != column[:-1] for column in ordered])
    where = np.empty(n, dtype=np.intp)
    where[order] = np.cumsum(starts) - 1
    return [column[starts] for column in ordered], where


def _arrays(where: str, **columns: object) -> dict[str, np.ndarray]:
    """The columns as equal-length, finite float arrays, or an error naming the column and the rows."""
    arrays = {name: np.atleast_1d(np.asarray(values, dtype=float)) for name, values in columns.items()}
    for name, values in arrays.items():
        if values.ndim != 1:
            raise LifetimeInputError(f"{where}: {name} must be one-dimensional, got shape {values.shape}")
    lengths = {name: len(values) for name, values in arrays.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name} has {length} rows" for name, length in lengths.items())
        raise LifetimeInputError(f"{where}: the arrays must have one row per customer, but {shown}")
    for name, values in arrays.items():
        _reject(where, name, ~np.isfinite(values), "not finite (NaN or infinite)")
    return arrays


def _reject(where: str, name: str, bad: np.ndarray, what: str) -> None:
    count = int(np.count_nonzero(bad))
    if count:
        raise LifetimeInputError(f"{where}: {name} {what} in {count} of {len(bad)} rows")


def _histories(where: str, frequency: object, recency: object, T: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated (x, t_x, T): x whole and >= 0, 0 <= t_x <= T, and t_x = 0 where x = 0."""
    arrays = _arrays(where, frequency=frequency, recency=recency, T=T)
    x, recency, T = arrays["frequency"], arrays["recency"], arrays["T"]
    for name, values in arrays.items():
        _reject(where, name, values < 0, "negative")
    _reject(where, "frequency", x != np.floor(x), "not a whole number (it counts repeat purchases)")
    _reject(where, "recency", recency > T, "greater than T (recency is the age at the last repeat purchase, at most the age T)")
    _reject(where, "recency", (x == 0) & (recency != 0), "nonzero where frequency is 0 (no repeat purchase)")
    return x, recency, T


def _order_values(where: str, frequency: object, monetary_value: object) -> tuple[np.ndarray, np.ndarray]:
    """Validated (x, m): x whole and >= 0; m >= 0 for repeat buyers (ignored, may be anything, where x = 0)."""
    x = np.atleast_1d(np.asarray(frequency, dtype=float))
    m = np.atleast_1d(np.asarray(monetary_value, dtype=float))
    if x.ndim != 1 or m.ndim != 1 or len(x) != len(m):
        raise LifetimeInputError(
            f"{where}: the arrays must have one row per customer, but frequency has shape {x.shape} and monetary_value has shape {m.shape}"
        )
    _reject(where, "frequency", ~np.isfinite(x), "not finite (NaN or infinite)")
    _reject(where, "frequency", x < 0, "negative")
    _reject(where, "frequency", x != np.floor(x), "not a whole number (it counts repeat purchases)")
    repeat = x > 0
    _reject(where, "monetary_value", repeat & ~np.isfinite(m), "not finite for a repeat buyer")
    _reject(where, "monetary_value", repeat & (m < 0), "negative")
    return x, np.where(repeat, m, 0.0)


#: BG/NBD: the concentration a + b beyond which a penalty (this weight x (ln excess)^2, in the mean negative
#: log-likelihood) holds the fit; see `_bg_nbd_negative_log_likelihood`.
MAX_DROPOUT_CONCENTRATION = 1_000.0
DROPOUT_CONCENTRATION_PENALTY = 1e-4
#: |gradient| of the mean negative log-likelihood (largest over the log-parameters) at which a fit stops.
#: Summed over a million customers the likelihood is exact to about 1e-12 and its gradient to about 1e-8;
#: a tighter bound spends dozens of evaluations on rounding noise once the optimum is found.
CONVERGED_GRADIENT = 1e-7
#: The largest |gradient| accepted as an optimum when the optimizer stopped for another reason.
STATIONARY_GRADIENT = 1e-6


#: Rows above which a fit first runs on a systematic sample of about this many rows, and starts the fit on
#: all rows from there: a few evaluations on all rows instead of a few dozen (the optimum is the same).
WARM_START_ROWS = 50_000


def _warm_start(rows: int) -> int:
    """The sampling step for a warm start on `rows` rows; 1 (no warm start) for few rows."""
    return rows // WARM_START_ROWS if rows >= 4 * WARM_START_ROWS else 1


class _Newton:
    """A negative log-likelihood that also gives its Hessian (`hessian=True`), evaluated once per point for
    scipy's trust-region Newton method, which asks for the value and gradient, then the Hessian."""

    def __init__(self, negative_log_likelihood, args: tuple) -> None:
        self.function, self.args, self.point, self.values = negative_log_likelihood, args, None, None

    def _at(self, log_params: np.ndarray):
        if self.point is None or not np.array_equal(log_params, self.point):
            if np.max(np.abs(log_params)) > LOG_PARAMETER_BOUND:  # a step too far: rejected, the region shrinks
                self.values = (np.inf, np.zeros(len(log_params)), np.eye(len(log_params)))
            else:
                self.values = self.function(log_params, *self.args, hessian=True)
            self.point = np.array(log_params, copy=True)
        return self.values

    def value_and_gradient(self, log_params: np.ndarray) -> tuple[float, np.ndarray]:
        return self._at(log_params)[:2]

    def hessian(self, log_params: np.ndarray) -> np.ndarray:
        return self._at(log_params)[2]


def _minimize(
    model: str, negative_log_likelihood, start: np.ndarray, args: tuple, newton: bool = False, may_vanish: tuple[int, ...] = ()
) -> OptimizeResult:
    """scipy's result (`x`: the log-parameters that minimise the mean negative log-likelihood), or a ConvergenceError.

    L-BFGS-B from the gradient; with `newton`, scipy's trust-region Newton method on the exact Hessian
    (the function then takes `hessian=True`), which also walks a flat ridge to its end. A parameter that
    runs off to exp(+-LOG_PARAMETER_BOUND) is an error, except one in `may_vanish` going to 0 (a boundary
    the model has a meaning for, which the fit's diagnostics flag: BG/NBD's a, no dropout).
    """
    if newton:
        objective = _Newton(negative_log_likelihood, args)
        result = minimize(
            objective.value_and_gradient,
            start,
            jac=True,
            hess=objective.hessian,
            method="trust-exact",
            options={"gtol": CONVERGED_GRADIENT, "maxiter": 1000},
        )
    else:
        result = minimize(
            negative_log_likelihood,
            start,
            args=args,
            jac=True,
            method="L-BFGS-B",
            bounds=[(-LOG_PARAMETER_BOUND, LOG_PARAMETER_BOUND)] * len(start),
            options={"ftol": 1e-11, "gtol": CONVERGED_GRADIENT, "maxiter": 1000},
        )
    # The line search can stop short ("ABNORMAL") at the optimum itself, where the likelihood is flat
    # to machine precision: a gradient this small is converged whatever the message says.
    stationary = np.all(np.isfinite(result.jac)) and np.max(np.abs(result.jac)) < STATIONARY_GRADIENT
    if not (result.success or stationary) or not np.all(np.isfinite(result.x)):
        raise ConvergenceError(f"{model}.fit did not converge after {result.nit} iterations: {result.message}")
    at_bound = np.abs(result.x) >= LOG_PARAMETER_BOUND - 1e-6
    at_bound[list(may_vanish)] &= result.x[list(may_vanish)] > 0
    if at_bound.any():
        raise ConvergenceError(
            f"{model}.fit did not converge: parameter(s) {list(np.flatnonzero(at_bound))} ran off to "
            f"exp(+-{LOG_PARAMETER_BOUND:g}); the data do not determine them"
        )
    return result


@dataclass(frozen=True)
class _MixedRows:
    """Distinct histories whose likelihood mixes "alive at T" and "dropped out right after t_x", as indexes
    into the distinct x, t_x and T (see `_collapse_indexed`), with their weights w and w x precomputed."""

    x_index: np.ndarray
    recency_index: np.ndarray
    T_index: np.ndarray
    weights: np.ndarray
    weighted_x: np.ndarray

    def every(self, step: int) -> _MixedRows:
        """Every `step`-th row, standing for `step` times its customers: a systematic sample (the rows are
        sorted by x, t_x and T, so it spreads over all of them)."""
        return _MixedRows(
            self.x_index[::step],
            self.recency_index[::step],
            self.T_index[::step],
            self.weights[::step] * step,
            self.weighted_x[::step] * step,
        )


def _bg_nbd_negative_log_likelihood(
    log_params: np.ndarray,
    first_dropout: int,
    distinct_x: np.ndarray,
    customers_by_x: np.ndarray,
    T_no_repeat: np.ndarray,
    weights_no_repeat: np.ndarray,
    distinct_recency: np.ndarray,
    distinct_T: np.ndarray,
    rows: _MixedRows,
) -> tuple[float, np.ndarray]:
    """Mean negative BG/NBD (MBG/NBD) log-likelihood per customer and its gradient in (ln r, ln alpha, ln a, ln b).

    ln L = A1 + A2 + ln(exp(A3) + [x > 0 or s = 1] exp(A4)), the log of FHL (2005) eq. (6) as note 004 splits it
    (Batislam et al. for MBG/NBD; tests/lifetime_reference.py writes both as printed), with
    s = `first_dropout` (1 for MBG/NBD: a dropout chance at the first purchase too, else 0),
    A1 = ln G(r+x) - ln G(r) + r ln alpha, A2 = ln G(a+b) + ln G(b+x+s) - ln G(b) - ln G(a+b+x+s),
    A3 = -(r+x) ln(alpha+T), A4 = ln a - ln(b+x+s-1) - (r+x) ln(alpha+t_x).
    A1, A2 and the x-terms of A4 depend on x alone and are evaluated once per distinct x, the logarithms
    once per distinct t_x and T (days: about a thousand each); BG/NBD customers without a repeat purchase
    have only A3 (`T_no_repeat`). Per mixed row there remain a few gathers, one expit and one log:
    ln(exp(A3) + exp(A4)) = A3 - ln P(alive part), P(alive part) = expit(A3 - A4); sums of (r+x) f are
    r (w . f) + (w x . f), so (r+x) is never formed per row for them.
    """
    r, alpha, a, b = np.exp(log_params)
    total = customers_by_x.sum()

    b_x = b + distinct_x + first_dropout
    a1 = gammaln(r + distinct_x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b_x) - gammaln(b) - gammaln(a + b_x)
    log_likelihood = customers_by_x @ (a1 + a2)
    gradient = np.array(
        [
            customers_by_x @ (digamma(r + distinct_x) - digamma(r) + np.log(alpha)),
            r / alpha * total,
            customers_by_x @ (digamma(a + b) - digamma(a + b_x)),
            customers_by_x @ (digamma(a + b) + digamma(b_x) - digamma(b) - digamma(a + b_x)),
        ]
    )

    log_alpha_T = np.log(alpha + T_no_repeat)
    log_likelihood -= r * (weights_no_repeat @ log_alpha_T)
    gradient[0] -= weights_no_repeat @ log_alpha_T
    gradient[1] -= r * (weights_no_repeat @ (1 / (alpha + T_no_repeat)))

    # b+x+s-1: only where a dropout at t_x is possible (not for BG/NBD's x = 0, where it would be b - 1)
    dropout_b = np.where(distinct_x + first_dropout > 0, b_x - 1, 1.0)
    w, wx = rows.weights, rows.weighted_x
    log_alpha_T = np.log(alpha + distinct_T)[rows.T_index]
    inverse_T = (1 / (alpha + distinct_T))[rows.T_index]
    # (r+x) (ln(alpha+t_x) - ln(alpha+T)) + ln(b+x+s-1) - ln a = A3 - A4, the log-odds of the alive part
    log_alpha_recency = np.log(alpha + distinct_recency)[rows.recency_index]
    log_odds = log_alpha_recency - log_alpha_T
    shape = (r + distinct_x)[rows.x_index]
    log_odds *= shape
    log_odds += (np.log(dropout_b) - np.log(a))[rows.x_index]
    alive = expit(log_odds, out=log_odds)  # the share of the likelihood from "alive at T"
    with np.errstate(divide="ignore"):
        log_alive = np.log(alive)
    if not np.isfinite(log_alive).all():  # alive part below 1e-308: ln(1 + e^-z) ~ -z for the log-odds z
        far = ~np.isfinite(log_alive)
        z = (r + distinct_x)[rows.x_index[far]] * (log_alpha_recency[far] - log_alpha_T[far])
        log_alive[far] = z + (np.log(dropout_b) - np.log(a))[rows.x_index[far]]
    log_likelihood += -(r * (w @ log_alpha_T) + wx @ log_alpha_T) - w @ log_alive
    weighted_dropped = np.subtract(1.0, alive, out=alive)
    weighted_dropped *= w
    dropped_by_x = np.bincount(rows.x_index, weights=weighted_dropped, minlength=len(distinct_x))
    gradient[0] -= w @ log_alpha_T + weighted_dropped @ log_alpha_recency - weighted_dropped @ log_alpha_T
    shape *= weighted_dropped
    gradient[1] -= r * (w @ inverse_T) + wx @ inverse_T + shape @ (1 / (alpha + distinct_recency))[rows.recency_index] - shape @ inverse_T
    gradient[2] += dropped_by_x.sum() / a
    gradient[3] -= dropped_by_x @ (1 / dropout_b)

    # A penalty on the concentration a + b of the dropout probability's Beta distribution, beyond
    # MAX_DROPOUT_CONCENTRATION only: when customers hardly differ in their dropout probability, the
    # likelihood keeps rising as a and b grow together (a / (a + b) fixed) and has no finite optimum.
    # The penalty puts one on that ridge, where the Beta is a point mass in all but name; below the
    # threshold (CDNOW: a + b = 3.2) it is zero and the fit is the plain maximum likelihood.
    penalty, penalty_gradient = _concentration_penalty(log_params)
    return -log_likelihood / total + penalty, -gradient * np.array([r, alpha, a, b]) / total + penalty_gradient


def _concentration_penalty(log_params: np.ndarray) -> tuple[float, np.ndarray]:
    """The penalty on a + b beyond MAX_DROPOUT_CONCENTRATION and its gradient in (ln r, ln alpha, ln a, ln b)."""
    a, b = np.exp(log_params[2:4])
    excess = max(0.0, np.logaddexp(log_params[2], log_params[3]) - np.log(MAX_DROPOUT_CONCENTRATION))
    gradient = 2 * DROPOUT_CONCENTRATION_PENALTY * excess * np.array([0.0, 0.0, a / (a + b), b / (a + b)])
    return DROPOUT_CONCENTRATION_PENALTY * excess**2, gradient


def _bg_nbd_rows(
    first_dropout: int, x: np.ndarray, recency: np.ndarray, T: np.ndarray, weights: np.ndarray, scale: float = 1.0
) -> tuple[tuple, _MixedRows]:
    """The arguments of `_bg_nbd_negative_log_likelihood` after the log-parameters, for these rows with time
    divided by `scale`: the ones that stay fixed during a fit, and the mixed rows (which a warm start samples)."""
    (x_index, recency_index, T_index), weights, (distinct_x, distinct_recency, distinct_T) = _collapse_indexed(
        x, recency, T, weights=weights
    )
    # Rescaled after collapsing: whole days are collapsed by table lookup (`_value_codes`).
    distinct_recency, distinct_T = distinct_recency / scale, distinct_T / scale
    customers_by_x = np.bincount(x_index, weights=weights, minlength=len(distinct_x))
    # BG/NBD customers without a repeat purchase cannot have dropped out: their likelihood is A3 alone.
    mixed = (distinct_x[x_index] > 0) | bool(first_dropout)
    rows = _MixedRows(
        x_index=x_index[mixed],
        recency_index=recency_index[mixed],
        T_index=T_index[mixed],
        weights=weights[mixed],
        weighted_x=weights[mixed] * distinct_x[x_index[mixed]],
    )
    fixed = (first_dropout, distinct_x, customers_by_x, distinct_T[T_index[~mixed]], weights[~mixed], distinct_recency, distinct_T)
    return fixed, rows


def _time_unit_log_likelihood(x: np.ndarray, weights: np.ndarray, scale: float) -> float:
    """sum w x ln(scale): the BG/NBD (and NBD) likelihood is a density of x purchase times, so with time
    divided by `scale` it is scale^x times the one in the original unit; subtracted, the log-likelihood is
    the original unit's."""
    return float(weights @ x) * float(np.log(scale))


def _nbd_negative_log_likelihood(log_params: np.ndarray, x: np.ndarray, T: np.ndarray, weights: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean negative NBD log-likelihood and its gradient in (ln r, ln alpha): BG/NBD's A1 + A3 alone,
    ln L = ln G(r+x) - ln G(r) + r ln alpha - (r+x) ln(alpha+T), the purchase times' density without dropout."""
    r, alpha = np.exp(log_params)
    total = weights.sum()
    log_alpha_T = np.log(alpha + T)
    log_likelihood = weights @ (gammaln(r + x) - gammaln(r) + r * np.log(alpha) - (r + x) * log_alpha_T)
    gradient = np.array(
        [
            r * (weights @ (digamma(r + x) - digamma(r) + np.log(alpha) - log_alpha_T)),
            alpha * (weights @ (r / alpha - (r + x) / (alpha + T))),
        ]
    )
    return -log_likelihood / total, -gradient / total


def negative_binomial_log_likelihood(frequency: object, T: object, weights: object | None = None) -> float:
    """The maximised log-likelihood of the NBD model: BG/NBD without dropout (Ehrenberg 1959; FHL 2005 eq. 6
    at a = 0), repeat purchases at Poisson rate lambda ~ Gamma(r, alpha) over the whole age T. Natural log,
    in the time unit of T; BG/NBD's fit compares its own with it (`DROPOUT_EVIDENCE`)."""
    where = "negative_binomial_log_likelihood"
    x, _, T = _histories(where, frequency, np.zeros(np.shape(frequency)), T)
    weights = _weights(where, weights, len(x))
    scale = float(weights @ T / weights.sum()) or 1.0
    (distinct_x, distinct_T), counts = collapse_rows(x, T / scale, weights=weights)
    result = _minimize("NBD", _nbd_negative_log_likelihood, np.zeros(2), (distinct_x, distinct_T, counts))
    return float(-result.fun * counts.sum() - _time_unit_log_likelihood(distinct_x, counts, scale))


def _gamma_gamma_negative_log_likelihood(
    log_params: np.ndarray,
    distinct_x: np.ndarray,
    customers_by_x: np.ndarray,
    log_m_sums: tuple[float, float],
    xm: np.ndarray,
    weights: np.ndarray,
    weighted_x: np.ndarray,
    hessian: bool = False,
) -> tuple[float, np.ndarray] | tuple[float, np.ndarray, np.ndarray]:
    """Mean negative Gamma-Gamma log-likelihood per repeat buyer and its gradient in (ln p, ln q, ln v);
    with `hessian`, also its Hessian in those (for Newton steps: a dozen evaluations instead of fifty).

    ln L = ln G(px+q) - ln G(px) - ln G(q) + q ln v + (px-1) ln m + px ln x - (px+q) ln(xm+v) (note 025).
    The terms in x alone are evaluated once per distinct x, the ln m terms enter through their sums
    `log_m_sums` = (sum w x ln m, sum w ln m); per row only ln(xm+v) and 1/(xm+v) are evaluated (`xm` is
    x m, `weighted_x` w x: sums of (px+q) f are p (w x . f) + q (w . f)).
    """
    p, q, v = np.exp(log_params)
    total = customers_by_x.sum()
    px = p * distinct_x
    digamma_pxq = digamma(px + q)
    x_log_m, log_m = log_m_sums
    spent_v = xm + v
    inverse = np.divide(1.0, spent_v)
    log_xm_v = np.log(spent_v, out=spent_v)
    x_log_xm_v, sum_log_xm_v = weighted_x @ log_xm_v, weights @ log_xm_v
    log_likelihood = (
        customers_by_x @ (gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(v) + px * np.log(distinct_x))
        + p * x_log_m
        - log_m
        - p * x_log_xm_v
        - q * sum_log_xm_v
    )
    gradient = np.array(
        [
            customers_by_x @ (distinct_x * (digamma_pxq - digamma(px) + np.log(distinct_x))) + x_log_m - x_log_xm_v,
            customers_by_x @ (digamma_pxq - digamma(q) + np.log(v)) - sum_log_xm_v,
            q / v * total - p * (weighted_x @ inverse) - q * (weights @ inverse),
        ]
    )
    params = np.array([p, q, v])
    value, log_gradient = -log_likelihood / total, -gradient * params / total
    if not hessian:
        return value, log_gradient
    # Second derivatives of ln L in (p, q, v); per row only the sums of w x / (xm+v), w / (xm+v) and
    # their squares enter.
    trigamma_pxq = polygamma(1, px + q)
    inverse_squared = inverse * inverse
    x_inverse, sum_inverse = weighted_x @ inverse, weights @ inverse
    pp = customers_by_x @ (distinct_x**2 * (trigamma_pxq - polygamma(1, px)))
    pq = customers_by_x @ (distinct_x * trigamma_pxq)
    qq = customers_by_x @ (trigamma_pxq - polygamma(1, q))
    vv = -q / v**2 * total + p * (weighted_x @ inverse_squared) + q * (weights @ inverse_squared)
    natural = -np.array([[pp, pq, -x_inverse], [pq, qq, total / v - sum_inverse], [-x_inverse, total / v - sum_inverse, vv]])
    # In log-parameters theta = ln(params): d2F/dtheta_i dtheta_j = P_i P_j d2F/dP_i dP_j + [i = j] dF/dtheta_i.
    return value, log_gradient, natural / total * np.outer(params, params) + np.diag(log_gradient)


def _gamma_gamma_rows(x: np.ndarray, m: np.ndarray, weights: np.ndarray) -> tuple:
    """The arguments of `_gamma_gamma_negative_log_likelihood` after the log-parameters, for these rows."""
    distinct_x, x_index = _value_codes(x)
    log_m = np.log(m)
    return (
        distinct_x,
        np.bincount(x_index, weights=weights, minlength=len(distinct_x)),
        (float((weights * x) @ log_m), float(weights @ log_m)),
        x * m,
        weights,
        weights * x,
    )


class BetaGeoModel:
    """BG/NBD: P(alive), expected repeat purchases and time to the next purchase of each customer.

    Arguments are arrays with one row per customer: `frequency` (repeat purchases), `recency` and `T`
    (in one time unit, see the module docstring). Results are arrays in the same order.
    """

    #: What `MODELS` and the configuration call it.
    name = "bgnbd"
    #: 1 when a customer may also drop out at the first purchase (MBG/NBD), 0 when only at repeat ones.
    first_purchase_dropout = 0

    def __init__(self, params: BetaGeoParams | None = None) -> None:
        """A model with known parameters (e.g. stored from an earlier fit), or to be fitted."""
        self.params_ = params

    def fit(self, frequency: object, recency: object, T: object, weights: object | None = None) -> BetaGeoModel:
        """Maximum-likelihood fit; `weights` counts the customers each row stands for (default 1). Sets `params_`."""
        x, recency, T = _histories(f"{type(self).__name__}.fit", frequency, recency, T)
        weights = _weights(f"{type(self).__name__}.fit", weights, len(x))
        if not np.any((x > 0) & (weights > 0)):
            raise LifetimeInputError(f"{type(self).__name__}.fit: no customer has a repeat purchase (frequency > 0)")
        # Time in units of its mean: the fit then starts from the same point whatever the unit.
        scale = float(weights @ T / weights.sum()) or 1.0
        fixed, rows = _bg_nbd_rows(self.first_purchase_dropout, x, recency, T, weights, scale)
        start, step = np.zeros(4), _warm_start(len(rows.weights))
        name = type(self).__name__
        if step > 1:
            start = _minimize(name, _bg_nbd_negative_log_likelihood, start, (*fixed, rows.every(step)), may_vanish=(2,)).x
        result = _minimize(name, _bg_nbd_negative_log_likelihood, start, (*fixed, rows), may_vanish=(2,))
        r, alpha, a, b = np.exp(result.x)
        self.params_ = BetaGeoParams(r=float(r), alpha=float(alpha * scale), a=float(a), b=float(b))
        customers = float(weights.sum())
        log_likelihood = -(result.fun - _concentration_penalty(result.x)[0]) * customers - _time_unit_log_likelihood(x, weights, scale)
        self.diagnostics_ = self._diagnose(result, customers, log_likelihood, x, T, weights)
        return self

    def _diagnose(
        self, result: OptimizeResult, customers: float, log_likelihood: float, x: np.ndarray, T: np.ndarray, weights: np.ndarray
    ) -> FitDiagnostics:
        """The fit's diagnostics: boundaries of (r, alpha, a, b), and whether dropout is identifiable.

        Dropout is not identifiable when the fit has none (a / (a + b) < MIN_MEAN_DROPOUT: a -> 0) or when
        it explains the data no better than the NBD model, which is BG/NBD without dropout (likelihood-ratio
        statistic below DROPOUT_EVIDENCE). P(alive) is then about 1 for everyone, or a guess: it does not rank.
        """
        r, alpha, a, b = astuple(self.params_)
        boundary = {
            name: f"ln {name} = {value:.1f} (time in units of its mean) is near the search bound +-{LOG_PARAMETER_BOUND:g}"
            for name, value in zip(("r", "alpha", "a", "b"), result.x)
            if abs(value) >= LOG_PARAMETER_BOUND - NEAR_BOUND_MARGIN
        }
        mean_dropout = a / (a + b)
        if mean_dropout < MIN_MEAN_DROPOUT:
            boundary["a/(a+b)"] = f"mean dropout probability per repeat purchase a/(a+b) = {mean_dropout:.2g} -> 0: no dropout"
        if a + b >= MAX_DROPOUT_CONCENTRATION:
            boundary["a+b"] = (
                f"a + b = {a + b:.4g} is held by the concentration penalty (MAX_DROPOUT_CONCENTRATION "
                f"{MAX_DROPOUT_CONCENTRATION:g}): customers hardly differ in their dropout probability"
            )
        problems = {}
        figures = {"mean_dropout_probability": mean_dropout}
        if self.first_purchase_dropout == 0:  # NBD is BG/NBD at a = 0; MBG/NBD has no such nested model
            no_dropout = negative_binomial_log_likelihood(x, T, weights)
            figures["nbd_log_likelihood"] = no_dropout
            figures["dropout_likelihood_ratio"] = 2 * (log_likelihood - no_dropout)
        statistic = figures.get("dropout_likelihood_ratio", np.inf)
        if mean_dropout < MIN_MEAN_DROPOUT or statistic < DROPOUT_EVIDENCE:
            problems["dropout_not_identifiable"] = (
                f"{type(self).__name__}: the fitted dropout is a/(a+b) = {mean_dropout:.2g} per repeat purchase and "
                f"2 (ln L - ln L without dropout) = {statistic:.2f} (evidence of dropout needs >= {DROPOUT_EVIDENCE}): "
                "the purchase log does not show customers leaving, so P(alive) is about 1 for everyone and does not rank"
            )
        return _diagnostics(type(self).__name__, self.params_, result, customers, log_likelihood, boundary, problems, figures)

    def _params(self) -> BetaGeoParams:
        if self.params_ is None:
            raise RuntimeError(f"{type(self).__name__}: no parameters; call fit() or pass params")
        return self.params_

    def probability_alive(self, frequency: object, recency: object, T: object) -> np.ndarray:
        """P(alive at T | x, t_x, T), a probability; 1 for customers without a repeat purchase (note 021)."""
        x, recency, T = _histories(f"{type(self).__name__}.probability_alive", frequency, recency, T)
        return self._probability_alive(x, recency, T)

    def _probability_alive(self, x: np.ndarray, recency: np.ndarray, T: np.ndarray) -> np.ndarray:
        r, alpha, a, b = astuple(self._params())
        s = self.first_purchase_dropout
        log_odds_dead = np.log(a / (b + np.maximum(x, 1 - s) + s - 1)) + (r + x) * np.log((alpha + T) / (alpha + recency))
        return np.where((x > 0) | bool(s), expit(-log_odds_dead), 1.0)

    def expected_purchases(self, t: float | np.ndarray, frequency: object, recency: object, T: object) -> np.ndarray:
        """Expected repeat purchases in (T, T + t], t in the time unit of T (a scalar or one per customer); FHL (2005) eq. (10)."""
        where = f"{type(self).__name__}.expected_purchases"
        x, recency, T = _histories(where, frequency, recency, T)
        return self._expected_purchases(_horizon(where, t, len(x)), x, recency, T)

    def _expected_purchases(self, t: float | np.ndarray, x: np.ndarray, recency: np.ndarray, T: np.ndarray) -> np.ndarray:
        # Eq. (10): E[Y(t) | x, t_x, T] = P(alive) (a+b+x-1)/(a-1)
        #     x [1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; t/(alpha+T+t))],
        # the paper's denominator 1 + [x > 0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x) being 1 / P(alive);
        # for MBG/NBD (s = 1) b+x+s and a+b+x+s-1 in place of b+x and a+b+x-1 (Wagner & Hoppe 2008).
        r, alpha, a, b = astuple(self._params())
        s = self.first_purchase_dropout
        z, x = np.broadcast_arrays(t / (alpha + T + t), x)
        c = a + b + x + s - 1
        log_hyp = _log_hyp2f1(r + x, b + x + s, c, z)
        bracket = -np.expm1(log_hyp + (r + x) * np.log1p(-z))
        # Where c < 0 (x = 0 and a + b < 1) 2F1 is negative and has no logarithm: the product as printed.
        negative = np.isnan(log_hyp) & (c < 0)
        if negative.any():
            xn, zn = x[negative], z[negative]
            bracket[negative] = 1 - hyp2f1(r + xn, b + xn + s, c[negative], zn) * (1 - zn) ** (r + xn)
        return self._probability_alive(x, recency, T) * (c / (a - 1) * bracket)

    def probability_no_purchase(self, t: float | np.ndarray, frequency: object, recency: object, T: object) -> np.ndarray:
        """P(no repeat purchase in (T, T + t]), t in the time unit of T: dropped out, or alive and still waiting.

        Alive, the next purchase comes after an Exponential(lambda) wait with lambda | alive ~ Gamma(r+x,
        rate alpha+T), so P(still waiting at T + t | alive) = ((alpha+T)/(alpha+T+t))^(r+x).
        """
        where = f"{type(self).__name__}.probability_no_purchase"
        x, recency, T = _histories(where, frequency, recency, T)
        t = _horizon(where, t, len(x))
        r, alpha, _, _ = astuple(self._params())
        alive = self._probability_alive(x, recency, T)
        return 1 - alive + alive * ((alpha + T) / (alpha + T + t)) ** (r + x)

    def time_to_next_purchase(self, frequency: object, recency: object, T: object, probability: float = 0.5) -> np.ndarray:
        """Time after T (unit of T) by which the customer has bought again with `probability`; NaN if never.

        Solves 1 - `probability_no_purchase`(t) = probability for t: P(alive) (1 - ((alpha+T)/(alpha+T+t))^(r+x))
        = probability. Customers whose P(alive) is at most `probability` never reach it: NaN.
        """
        if not 0 < probability < 1:
            raise LifetimeInputError(f"{type(self).__name__}.time_to_next_purchase: probability must be in (0, 1), got {probability}")
        x, recency, T = _histories(f"{type(self).__name__}.time_to_next_purchase", frequency, recency, T)
        r, alpha, _, _ = astuple(self._params())
        alive = self._probability_alive(x, recency, T)
        reachable = alive > probability
        waiting = 1 - probability / np.where(reachable, alive, 1.0)  # ((alpha+T)/(alpha+T+t))^(r+x) at the answer
        t = (alpha + T) * np.expm1(-np.log(np.where(reachable, waiting, 1.0)) / (r + x))
        return np.where(reachable, t, np.nan)


class ModifiedBetaGeoModel(BetaGeoModel):
    """MBG/NBD (Batislam, E. P., Denizel, M. and Filiztekin, A. (2007), "Empirical validation and comparison
    of models for customer base analysis", International Journal of Research in Marketing 24(3), 201-209):
    BG/NBD in which a customer may also drop out right at the first purchase, so a customer without a
    repeat purchase is not certainly alive. Same parameters and methods as `BetaGeoModel` (lifetimes'
    `ModifiedBetaGeoFitter`)."""

    name = "mbgnbd"
    first_purchase_dropout = 1


#: The repeat-purchase models by the name the configuration uses (`clv.purchase_model`).
PURCHASE_MODELS: dict[str, type[BetaGeoModel]] = {model.name: model for model in (BetaGeoModel, ModifiedBetaGeoModel)}


def _horizon(where: str, t: float | np.ndarray, rows: int) -> np.ndarray:
    """A validated horizon: finite, >= 0, a scalar or one per customer."""
    t = np.asarray(t, dtype=float)
    if t.ndim != 0 and t.shape != (rows,):
        raise LifetimeInputError(f"{where}: t must be a scalar or have one row per customer ({rows}), got shape {t.shape}")
    _reject(where, "t", ~np.isfinite(np.atleast_1d(t)) | (np.atleast_1d(t) < 0), "negative or not finite")
    return t


def _log_hyp2f1(a: np.ndarray, b: np.ndarray, c: np.ndarray, z: np.ndarray) -> np.ndarray:
    """ln 2F1(a, b; c; z) for 0 <= z < 1; where 2F1 overflows, via Euler's transformation (as lifetimes)."""
    a, b, c, z = np.broadcast_arrays(a, b, c, z)
    with np.errstate(divide="ignore", invalid="ignore"):  # a negative 2F1 gives NaN: the caller takes it as it is
        value = np.log(hyp2f1(a, b, c, z))
        overflow = ~np.isfinite(value)
        if overflow.any():
            a, b, c, z = a[overflow], b[overflow], c[overflow], z[overflow]
            value[overflow] = np.log(hyp2f1(c - a, c - b, c, z)) + (c - a - b) * np.log1p(-z)
    return value


def _weights(where: str, weights: object | None, rows: int) -> np.ndarray:
    if weights is None:
        return np.ones(rows)
    weights = _arrays(where, weights=weights)["weights"]
    if len(weights) != rows:
        raise LifetimeInputError(f"{where}: weights has {len(weights)} rows, the customer arrays {rows}")
    _reject(where, "weights", weights < 0, "negative")
    return weights


class GammaGammaModel:
    """Gamma-Gamma: the expected value of a customer's future orders, in the currency of `monetary_value`.

    `monetary_value` is the mean value of a customer's repeat orders (the first order excluded, as in
    lifetimes' summary data); it is ignored for customers without a repeat purchase.
    """

    def __init__(self, params: GammaGammaParams | None = None) -> None:
        """A model with known parameters (e.g. stored from an earlier fit), or to be fitted."""
        self.params_ = params

    def fit(self, frequency: object, monetary_value: object, weights: object | None = None) -> GammaGammaModel:
        """Maximum-likelihood fit on the repeat buyers (frequency > 0) among the rows; sets `params_`."""
        where = "GammaGammaModel.fit"
        x, m = _order_values(where, frequency, monetary_value)
        weights = _weights(where, weights, len(x))
        repeat = (x > 0) & (weights > 0)
        if not repeat.any():
            raise LifetimeInputError(f"{where}: no customer has a repeat purchase (frequency > 0) to fit on")
        _reject(where, "monetary_value", repeat & (m == 0), "zero for a repeat buyer (the model needs m > 0)")
        x, m, weights = x[repeat], m[repeat], weights[repeat]
        scale = float(weights @ m / weights.sum())  # money in units of its mean, as time in BetaGeoModel.fit
        m = m / scale
        # Not collapsed: mean order values hardly repeat, and per row the evaluation is only a log and a division.
        # Newton steps: the likelihood often has a long flat ridge (q and v large, p v / (q - 1) fixed), on
        # which L-BFGS-B crawls, and from a warm start stops short.
        result = _minimize(
            "GammaGammaModel", _gamma_gamma_negative_log_likelihood, np.zeros(3), _gamma_gamma_rows(x, m, weights), newton=True
        )
        p, q, v = np.exp(result.x)
        self.params_ = GammaGammaParams(p=float(p), q=float(q), v=float(v * scale))
        customers = float(weights.sum())
        # m is a mean of x order values, a density in money: rescaled, each row's likelihood is scale times its own.
        log_likelihood = -result.fun * customers - customers * np.log(scale)
        self.diagnostics_ = self._diagnose(result, customers, float(log_likelihood))
        return self

    def _diagnose(self, result: OptimizeResult, customers: float, log_likelihood: float) -> FitDiagnostics:
        """The fit's diagnostics: boundaries of (p, q, v), and q <= 1 (the mean order value p v / (q - 1) undefined)."""
        p, q, v = astuple(self.params_)
        boundary = {
            name: f"ln {name} = {value:.1f} (money in units of its mean) is near the search bound +-{LOG_PARAMETER_BOUND:g}"
            for name, value in zip(("p", "q", "v"), result.x)
            if abs(value) >= LOG_PARAMETER_BOUND - NEAR_BOUND_MARGIN
        }
        problems = {}
        if q <= 1:
            problems["order_value_mean_undefined"] = (
                f"GammaGammaModel: q = {q:.4g} <= 1, so the mean order value p v / (q - 1) is not defined "
                "(order values too heavy-tailed for this model): no expected order value or CLV"
            )
        elif q < NEAR_UNDEFINED_MEAN_Q:
            boundary["q"] = f"q = {q:.4g} is near 1, where the mean order value p v / (q - 1) is not defined"
        figures = {"population_mean_order_value": p * v / (q - 1) if q > 1 else np.nan}
        return _diagnostics("GammaGammaModel", self.params_, result, customers, log_likelihood, boundary, problems, figures)

    def _params(self) -> GammaGammaParams:
        if self.params_ is None:
            raise RuntimeError("GammaGammaModel: no parameters; call fit() or pass params")
        if self.params_.q <= 1:
            raise ValueError(
                f"GammaGammaModel: q = {self.params_.q:.4g} <= 1, so the mean order value p v / (q - 1) "
                "is not defined (order values too heavy-tailed for this model)"
            )
        return self.params_

    def expected_order_value(self, frequency: object, monetary_value: object) -> np.ndarray:
        """E[order value | x, m] (currency): a mix of m and the population mean p v / (q - 1) (note 025, eq. 5).

        The weight of m is p x / (p x + q - 1): 0 without a repeat purchase, near 1 for frequent buyers.
        """
        x, m = _order_values("GammaGammaModel.expected_order_value", frequency, monetary_value)
        return self._expected_order_value(x, m)

    def _expected_order_value(self, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        p, q, v = astuple(self._params())
        own_weight = p * x / (p * x + q - 1)
        return (1 - own_weight) * (p * v / (q - 1)) + own_weight * m


def customer_lifetime_value(
    beta_geo: BetaGeoModel,
    gamma_gamma: GammaGammaModel,
    frequency: object,
    recency: object,
    T: object,
    monetary_value: object,
    *,
    period_length: float,
    months: int = 12,
    margin: float = 1.0,
    monthly_discount_rate: float = 0.0,
) -> np.ndarray:
    """Expected profit of each customer over the next `months` months (currency), discounted monthly.

    Sum over months i = 1..months of E[purchases in month i] x E[order value] x margin / (1 + rate)^i, as
    lifetimes' `customer_lifetime_value`. `period_length` is one month in the time unit of recency and T
    (`DAYS_PER_MONTH` for days; lifetimes uses 30 days or 4.345 weeks).
    """
    where = "customer_lifetime_value"
    x, recency, T = _histories(where, frequency, recency, T)
    _check_horizon(where, period_length, months, margin, monthly_discount_rate)
    order_value = gamma_gamma._expected_order_value(*_order_values(where, x, monetary_value))
    discounted, _ = _monthly_purchases(beta_geo, x, recency, T, period_length, months, monthly_discount_rate)
    return margin * order_value * discounted


def _check_horizon(where: str, period_length: float, months: int, margin: float, monthly_discount_rate: float) -> None:
    if not (np.isfinite(period_length) and period_length > 0):
        raise LifetimeInputError(f"{where}: period_length (one month in the time unit of T) must be > 0, got {period_length}")
    if int(months) != months or months < 1:
        raise LifetimeInputError(f"{where}: months must be a whole number >= 1, got {months}")
    if not margin > 0:
        raise LifetimeInputError(f"{where}: margin must be > 0, got {margin}")
    if not monthly_discount_rate > -1:
        raise LifetimeInputError(f"{where}: monthly_discount_rate must be > -1, got {monthly_discount_rate}")


def _monthly_purchases(
    beta_geo: BetaGeoModel,
    x: np.ndarray,
    recency: np.ndarray,
    T: np.ndarray,
    period_length: float,
    months: int,
    monthly_discount_rate: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Expected purchases over the horizon, discounted month by month and undiscounted.

    Computed once per distinct history (x, recency, T): many customers share one, and each month costs
    a hypergeometric function per row.
    """
    (x, recency, T), where = _distinct_rows(x, recency, T)
    discounted = np.zeros(len(x))
    previous = np.zeros(len(x))
    for month in range(1, int(months) + 1):
        cumulative = beta_geo._expected_purchases(month * period_length, x, recency, T)
        discounted += (cumulative - previous) / (1 + monthly_discount_rate) ** month
        previous = cumulative
    return discounted[where], previous[where]


def customer_lifetime_value_interval(
    beta_geo: BetaGeoModel,
    gamma_gamma: GammaGammaModel,
    frequency: object,
    recency: object,
    T: object,
    monetary_value: object,
    *,
    period_length: float,
    seed: int,
    months: int = 12,
    margin: float = 1.0,
    monthly_discount_rate: float = 0.0,
    level: float = 0.8,
    draws: int = 200,
) -> tuple[np.ndarray, np.ndarray]:
    """Low and high ends (currency) of each customer's `level` interval of CLV, by simulation.

    The interval is the central one, except that it runs from 0 to the `level` quantile for a customer
    likely to buy nothing (see `_interval`).

    Each of `draws` draws per customer, given the fitted parameters (their uncertainty is ignored):
    alive ~ Bernoulli(P(alive)); if alive, lambda ~ Gamma(r+x, rate alpha+T) and p ~ Beta(a, b+x+s) (s: 1
    for MBG/NBD, which survived one dropout chance more, else 0); over
    the horizon H = months x period_length, M ~ Poisson(lambda H) purchase chances, a dropout after each
    purchase with probability p makes D ~ Geometric(p) purchases possible, N = min(M, D) are made
    (the code integrates lambda out, see `_simulated_value`). Order values: nu ~ Gamma(p_gg x + q, rate
    v + x m) (the Gamma-Gamma posterior), total ~ Gamma(p_gg N, rate nu); p_gg is the Gamma-Gamma p.
    Discounting is approximated: each customer's draws are scaled by the ratio of its discounted to its
    undiscounted point CLV, which keeps the mean exact but ignores when within the horizon a draw's
    orders fall. The same inputs and seed give the same intervals (see `SIMULATION_BLOCK`).
    """
    return _clv_with_interval(
        "customer_lifetime_value_interval",
        beta_geo,
        gamma_gamma,
        frequency,
        recency,
        T,
        monetary_value,
        period_length=period_length,
        seed=seed,
        months=months,
        margin=margin,
        monthly_discount_rate=monthly_discount_rate,
        level=level,
        draws=draws,
        point=False,
    )[1:]


def customer_lifetime_value_with_interval(
    beta_geo: BetaGeoModel,
    gamma_gamma: GammaGammaModel,
    frequency: object,
    recency: object,
    T: object,
    monetary_value: object,
    *,
    period_length: float,
    seed: int,
    months: int = 12,
    margin: float = 1.0,
    monthly_discount_rate: float = 0.0,
    level: float = 0.8,
    draws: int = 200,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(`customer_lifetime_value`, and the low and high ends of `customer_lifetime_value_interval`) in one
    go: the monthly expected purchases that both need are computed once."""
    return _clv_with_interval(
        "customer_lifetime_value_with_interval",
        beta_geo,
        gamma_gamma,
        frequency,
        recency,
        T,
        monetary_value,
        period_length=period_length,
        seed=seed,
        months=months,
        margin=margin,
        monthly_discount_rate=monthly_discount_rate,
        level=level,
        draws=draws,
        point=True,
    )


def _clv_with_interval(
    where: str,
    beta_geo: BetaGeoModel,
    gamma_gamma: GammaGammaModel,
    frequency: object,
    recency: object,
    T: object,
    monetary_value: object,
    *,
    period_length: float,
    seed: int,
    months: int,
    margin: float,
    monthly_discount_rate: float,
    level: float,
    draws: int,
    point: bool,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    x, recency, T = _histories(where, frequency, recency, T)
    _, m = _order_values(where, x, monetary_value)
    _check_horizon(where, period_length, months, margin, monthly_discount_rate)
    if not 0 < level < 1:
        raise LifetimeInputError(f"{where}: level must be in (0, 1), got {level}")
    if int(draws) != draws or draws < 1:
        raise LifetimeInputError(f"{where}: draws must be a whole number >= 1, got {draws}")
    gamma_gamma._params()  # q > 1, as the point CLV needs

    low, high = np.empty(len(x)), np.empty(len(x))
    clv = None
    if monthly_discount_rate != 0 or point:
        discounted, undiscounted = _monthly_purchases(beta_geo, x, recency, T, period_length, months, monthly_discount_rate)
        discount = np.divide(discounted, undiscounted, out=np.ones_like(discounted), where=undiscounted > 0)
        if point:
            clv = margin * gamma_gamma._expected_order_value(x, m) * discounted
    else:
        discount = np.ones(len(x))

    def simulate(block: int) -> None:
        rows = slice(block * SIMULATION_BLOCK, (block + 1) * SIMULATION_BLOCK)
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(block,)))
        values = _simulated_value(rng, beta_geo, gamma_gamma, x[rows], recency[rows], T[rows], m[rows], months * period_length, int(draws))
        values *= discount[rows, None]
        low[rows], high[rows] = (margin * end for end in _interval(values, level))

    # Blocks are independent (each has its own random stream) and numpy releases the GIL in its array
    # loops: one thread per core.
    blocks = range(-(-len(x) // SIMULATION_BLOCK))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(simulate, blocks))
    return clv, low, high


def _interval(values: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Per row of draws, an interval holding `level` of them: the central one, or [0, level quantile]
    when the central one would start at 0.

    Customers likely to buy nothing have an atom at 0. Where it reaches the lower tail ((1 - level) / 2),
    the central interval [0, (1 + level) / 2 quantile] holds the atom *and* the upper tail's share,
    so it covers more than `level` (about 90% for an 80% interval on CDNOW-like customers). Starting at 0
    and ending at the `level` quantile holds `level` (or the atom alone, when the atom is larger).
    """
    low, central_high, lower_high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2, level], axis=1)
    return low, np.where(low > 0, central_high, lower_high)


def _simulated_value(
    rng: np.random.Generator,
    beta_geo: BetaGeoModel,
    gamma_gamma: GammaGammaModel,
    x: np.ndarray,
    recency: np.ndarray,
    T: np.ndarray,
    m: np.ndarray,
    horizon: float,
    draws: int,
) -> np.ndarray:
    """Posterior predictive value of the orders in (T, T + horizon], shape (customers, draws), undiscounted.

    lambda is integrated out: given alive, M ~ NegBin(r+x, pi), pi = (alpha+T)/(alpha+T+H) (the Gamma-Poisson
    mixture), drawn by inverse CDF from the uniform that decided alive (u < P(alive), then u / P(alive) is
    uniform). Only the draws with M >= 1 (a minority) go on to p, D and the order values: a few variates
    per draw instead of a Gamma and a Poisson for every alive one.
    """
    bg, gg = beta_geo._params(), gamma_gamma._params()
    alive = beta_geo._probability_alive(x, recency, T)
    shape = bg.r + x
    stay = (bg.alpha + T) / (bg.alpha + T + horizon)  # pi: P(no purchase chance in H | alive) = pi^(r+x)
    u = rng.random((len(x), draws))
    buys = (u < alive[:, None]) & (u >= (alive * stay**shape)[:, None])  # alive, and M >= 1
    flat = np.flatnonzero(buys)
    who = flat // draws
    given_alive = u.ravel()[flat] / alive[who]
    largest = np.zeros(len(x))
    np.maximum.at(largest, who, given_alive)
    purchases = _negative_binomial(given_alive, who, shape, stay, largest)
    several = np.flatnonzero(purchases > 1)  # the first chance is always taken: D >= 1
    dropout = rng.beta(bg.a, bg.b + x[who[several]] + beta_geo.first_purchase_dropout)
    # A Beta with a tiny a (a shop where no one has left yet) draws dropout probabilities that underflow
    # to 0: such a customer does not drop out within any purchases a horizon holds (and geometric needs p > 0).
    several, dropout = several[dropout > MIN_DROPOUT], dropout[dropout > MIN_DROPOUT]
    purchases[several] = np.minimum(purchases[several], rng.geometric(dropout))
    nu = rng.standard_gamma(gg.p * x[who] + gg.q) / (gg.v + x[who] * m[who])
    values = np.zeros((len(x), draws))
    values.ravel()[flat] = rng.standard_gamma(gg.p * purchases) / nu
    return values


#: Dropout probabilities per purchase below this are taken as none (`_simulated_value`).
MIN_DROPOUT = 1e-12


def _negative_binomial(u: np.ndarray, customer: np.ndarray, shape: np.ndarray, stay: np.ndarray, largest_u: np.ndarray) -> np.ndarray:
    """Inverse CDF of NegBin(shape, stay), P(k) = C(shape+k-1, k) stay^shape (1-stay)^k: smallest k, F(k) > u.

    Each customer's CDF is tabulated once, up to its `largest_u` (the pmf stepped in logs, so a large shape
    cannot underflow; past the mean, a pmf below 1e-16 ends the table), then every draw `u` of customer
    `customer` is looked up with one sorted search over all tables (key: customer number + CDF, which
    resolves u to about 1e-12 for the block's 5,000 customers).
    """
    log_pmf = shape * np.log(stay)
    cdf = np.exp(log_pmf)
    log_leave = np.log1p(-stay)
    mean = shape * (1 - stay) / stay
    owners, counts, cdfs = [np.arange(len(shape))], [np.zeros(len(shape))], [cdf.copy()]
    active = np.flatnonzero(cdf <= largest_u)
    k = 0
    while active.size:
        k += 1
        log_pmf[active] += np.log((shape[active] + k - 1) / k) + log_leave[active]
        pmf = np.exp(log_pmf[active])
        cdf[active] += pmf
        owners.append(active)
        counts.append(np.full(active.size, k))
        cdfs.append(cdf[active])
        active = active[(cdf[active] <= largest_u[active]) & ~((k > mean[active]) & (pmf < 1e-16))]
    owner, count = np.concatenate(owners), np.concatenate(counts)
    key = owner + np.minimum(np.concatenate(cdfs), 1.0)  # sorted by owner, then count: increasing
    order = np.lexsort((count, owner))
    owner, count, key = owner[order], count[order], key[order]
    found = np.minimum(np.searchsorted(key, customer + u, side="right"), len(key) - 1)
    # A draw beyond its customer's table (the negligible tail cut above) takes the table's last count.
    past = owner[found] != customer
    found[past] = np.searchsorted(owner, customer[past], side="right") - 1
    return count[found].astype(np.int64)
