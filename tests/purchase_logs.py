"""Simulated purchase logs whose truth is known: a BG/NBD process, customers who never leave, a seasonal shop.

Each log is a DataFrame of (customer_id, day): one row per purchase day, days counted from the log's
start. `histories` summarises it as BG/NBD's inputs at a day, as `features.purchases` does in Spark.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd


def purchase_log(
    rng: np.random.Generator,
    customers: int,
    days: int,
    rate: tuple[float, float],
    dropout: tuple[float, float] | None,
    season: np.ndarray | None = None,
) -> pd.DataFrame:
    """Purchase days of `customers` over `days` days.

    Each customer makes a first purchase on a uniform day before the last 30, then buys at Poisson rate
    lambda ~ Gamma(shape, rate) = `rate` (per day), times `season[day]` (a factor per day, default 1);
    after each repeat purchase they leave for good with probability p ~ Beta(*`dropout`) (never when None).
    """
    season = np.ones(days) if season is None else np.asarray(season, dtype=float)
    ceiling = season.max()
    rows = []
    for customer in range(1, customers + 1):
        first = int(rng.integers(0, days - 30))
        lam = rng.gamma(rate[0], 1 / rate[1])
        p = rng.beta(*dropout) if dropout else 0.0
        bought = [first]
        day = float(first)
        while True:
            day += rng.exponential(1 / (lam * ceiling))
            if day >= days:
                break
            if rng.random() < season[int(day)] / ceiling and int(day) != bought[-1]:
                bought.append(int(day))
                if rng.random() < p:
                    break
        rows += [(customer, purchase_day) for purchase_day in bought]
    return pd.DataFrame(rows, columns=["customer_id", "day"])


def histories(log: pd.DataFrame, as_of_day: int) -> pd.DataFrame:
    """Per customer with a purchase by `as_of_day` (inclusive): repeat_purchase_days, purchase_span_days,
    days_since_first_purchase (BG/NBD's x, t_x, T in days)."""
    known = log[log["day"] <= as_of_day].groupby("customer_id")["day"]
    first, last = known.min(), known.max()
    return pd.DataFrame(
        {
            "repeat_purchase_days": known.count() - 1,
            "purchase_span_days": (last - first).astype(float),
            "days_since_first_purchase": (as_of_day - first).astype(float),
        }
    )


def purchases_between(log: pd.DataFrame, after_day: int, through_day: int, index: pd.Index) -> pd.Series:
    """Purchase days in (after_day, through_day] of each customer of `index` (0 for none)."""
    window = log[(log["day"] > after_day) & (log["day"] <= through_day)]
    return window.groupby("customer_id").size().reindex(index, fill_value=0)


def orders(log: pd.DataFrame, start: date, amount: str = "50.00") -> list[dict]:
    """The log as silver order rows (one delivered order at noon per purchase day), day 0 on `start`."""
    noon = datetime(start.year, start.month, start.day, 12)
    return [
        {
            "id": number,
            "customer_id": int(customer),
            "status": "delivered",
            "total_amount": Decimal(amount),
            "created_at": noon + timedelta(days=int(day)),
            "updated_at": noon + timedelta(days=int(day)),
        }
        for number, (customer, day) in enumerate(zip(log["customer_id"], log["day"]), start=1)
    ]
