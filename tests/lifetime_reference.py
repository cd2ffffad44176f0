"""Paper-form reference for `models/lifetime.py`: each expression written term by term as the papers print it.

Nothing here is shared with `models/lifetime.py`, and nothing is rearranged for speed or range: the tests hold
the module's fast forms (logs combined, terms evaluated once per distinct value, rows collapsed) against these.
Every function takes plain numpy arrays (or scalars), one entry per customer; x counts repeat purchases, t_x is
the age at the last repeat purchase and T the age now (one time unit), m_x the mean value of the x repeat orders.

- Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005), "'Counting Your Customers' the Easy Way: An
  Alternative to the Pareto/NBD Model", Marketing Science 24(2), 275-284: the BG/NBD likelihood (eq. 6) and
  the conditional expected purchases (eq. 10).
- Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2008), "Computing P(alive) Using the BG/NBD Model",
  brucehardie.com/notes/021: P(alive).
- Batislam, E. P., Denizel, M. and Filiztekin, A. (2007), "Empirical validation and comparison of models for
  customer base analysis", International Journal of Research in Marketing 24(3), 201-209: the MBG/NBD likelihood.
- Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005), "RFM and CLV: Using Iso-Value Curves for Customer Base
  Analysis", Journal of Marketing Research 42(4), 415-430, as written out in Fader, P. S. and Hardie, B. G. S.
  (2013), "The Gamma-Gamma Model of Monetary Value", brucehardie.com/notes/025: the marginal density of m_x
  given x, and the conditional expected order value. The papers call the scale gamma; here it is v.
"""

from __future__ import annotations

import numpy as np
from scipy.special import betaln, gammaln, hyp2f1


def bg_nbd_log_likelihood(r, alpha, a, b, x, t_x, T) -> np.ndarray:
    """ln L(r, alpha, a, b | x, t_x, T), FHL (2005) eq. (6), per customer:

        L = B(a, b+x) / B(a, b) * Gamma(r+x) alpha^r / (Gamma(r) (alpha+T)^(r+x))
            + delta(x>0) B(a+1, b+x-1) / B(a, b) * Gamma(r+x) alpha^r / (Gamma(r) (alpha+t_x)^(r+x)).

    Each of the two terms is formed in logs (betaln, gammaln) and the sum is ln(e^first + e^second), so that
    the terms of customers with many purchases do not underflow before they are added.
    """
    x, t_x, T = (np.asarray(column, dtype=float) for column in (x, t_x, T))
    log_nbd = gammaln(r + x) + r * np.log(alpha) - gammaln(r)  # Gamma(r+x) alpha^r / Gamma(r), both terms
    first = betaln(a, b + x) - betaln(a, b) + log_nbd - (r + x) * np.log(alpha + T)
    repeat = x > 0
    # delta(x>0): the second term only for repeat buyers (for x = 0 it would need B(a+1, b-1)).
    b_dropout = np.where(repeat, b + x - 1, 1.0)
    second = np.where(repeat, betaln(a + 1, b_dropout) - betaln(a, b) + log_nbd - (r + x) * np.log(alpha + t_x), -np.inf)
    return np.logaddexp(first, second)


def mbg_nbd_log_likelihood(r, alpha, a, b, x, t_x, T) -> np.ndarray:
    """ln L(r, alpha, a, b | x, t_x, T) of the MBG/NBD (Batislam et al. 2007), per customer: the BG/NBD with a
    dropout chance at the first purchase too, so both terms hold for every customer:

        L = B(a, b+x+1) / B(a, b) * Gamma(r+x) alpha^r / (Gamma(r) (alpha+T)^(r+x))
            + B(a+1, b+x) / B(a, b) * Gamma(r+x) alpha^r / (Gamma(r) (alpha+t_x)^(r+x)).
    """
    x, t_x, T = (np.asarray(column, dtype=float) for column in (x, t_x, T))
    log_nbd = gammaln(r + x) + r * np.log(alpha) - gammaln(r)
    first = betaln(a, b + x + 1) - betaln(a, b) + log_nbd - (r + x) * np.log(alpha + T)
    second = betaln(a + 1, b + x) - betaln(a, b) + log_nbd - (r + x) * np.log(alpha + t_x)
    return np.logaddexp(first, second)


def bg_nbd_probability_alive(r, alpha, a, b, x, t_x, T) -> np.ndarray:
    """P(alive at T | x, t_x, T), note 021: 1 / (1 + delta(x>0) a / (b+x-1) ((alpha+T) / (alpha+t_x))^(r+x))."""
    x, t_x, T = (np.asarray(column, dtype=float) for column in (x, t_x, T))
    repeat = x > 0
    with np.errstate(over="ignore"):  # a dead-looking customer's odds overflow to inf: P(alive) = 0
        odds_dead = a / np.where(repeat, b + x - 1, 1.0) * ((alpha + T) / (alpha + t_x)) ** (r + x)
    return 1 / (1 + np.where(repeat, odds_dead, 0.0))


def bg_nbd_expected_purchases(t, r, alpha, a, b, x, t_x, T) -> np.ndarray:
    """E[Y(t) | x, t_x, T], the expected repeat purchases in (T, T+t], FHL (2005) eq. (10):

    (a+b+x-1)/(a-1) [1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; t/(alpha+T+t))]
    / (1 + delta(x>0) a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)).
    """
    x, t_x, T = (np.asarray(column, dtype=float) for column in (x, t_x, T))
    repeat = x > 0
    numerator = (
        (a + b + x - 1)
        / (a - 1)
        * (1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + T + t)))
    )
    with np.errstate(over="ignore"):
        denominator = 1 + np.where(repeat, a / np.where(repeat, b + x - 1, 1.0) * ((alpha + T) / (alpha + t_x)) ** (r + x), 0.0)
    return numerator / denominator


def gamma_gamma_log_likelihood(p, q, v, x, m_x) -> np.ndarray:
    """ln f(m_x | p, q, v; x), the marginal density of a repeat buyer's mean order value m_x over x orders
    (note 025; FHL 2005, JMR), per customer:

        f = Gamma(px+q) / (Gamma(px) Gamma(q)) * v^q m_x^(px-1) x^(px) / (v + m_x x)^(px+q).
    """
    x, m_x = np.asarray(x, dtype=float), np.asarray(m_x, dtype=float)
    return (
        gammaln(p * x + q)
        - gammaln(p * x)
        - gammaln(q)
        + q * np.log(v)
        + (p * x - 1) * np.log(m_x)
        + p * x * np.log(x)
        - (p * x + q) * np.log(v + m_x * x)
    )


def gamma_gamma_expected_order_value(p, q, v, x, m_x) -> np.ndarray:
    """E(M | p, q, v, m_x, x), note 025: (q-1)/(px+q-1) * p v/(q-1) + px/(px+q-1) * m_x (0 repeat orders: p v/(q-1))."""
    x, m_x = np.asarray(x, dtype=float), np.asarray(m_x, dtype=float)
    return (q - 1) / (p * x + q - 1) * (p * v / (q - 1)) + p * x / (p * x + q - 1) * m_x
