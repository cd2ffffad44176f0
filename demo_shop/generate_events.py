"""Browsing and click events of the demo shop: the visits behind its orders, and the browsing around them.

`demo_shop.generate_shop` calls `block_events` once per block of customers, after it has drawn the block's
customers and orders, with the block's own events stream (`numpy.random.SeedSequence(seed, spawn_key=(2,
block))`). Nothing here draws from the streams of the shop's rows, so adding events changes no row of the
shop. Times are whole seconds since the history's start t0 (UTC); rates are per day.

The process, per customer:
- **Visits.** While active, a customer visits as a Poisson process from signup with rate `VISITS_PER_DAY`
  x engagement, engagement ~ Gamma(`ENGAGEMENT_SHAPE`, mean the type's `BROWSE_FACTOR`). A visit is a
  session: a new random session id, one channel, 1-15 events seconds to minutes apart.
- **Churn.** A customer who dropped out (after the order at `dropped_at`) browses less before: its rate falls
  linearly to `CHURN_FLOOR` of normal over the `CHURN_RAMP_DAYS` before dropped_at, halves every
  `CHURN_HALF_LIFE_DAYS` after it and stops `CHURN_STOP_DAYS` after it. Customers alive at the end keep it.
- **Purchases.** Every order has a purchase visit ending at the order's time: a view and an add_to_cart of
  each ordered product, then a checkout. With `RESEARCH_PROBABILITY` a research visit 1-14 days before
  views the ordered products and similar ones of their categories; with `EARLY_VIEW_PROBABILITY` one
  ordered product was viewed 15-60 days before.
- **Other visits** browse the customer's preferred category (`PREFERRED_VISIT_PROBABILITY`) or the
  catalogue by popularity: views, clicks, searches, add_to_cart sometimes undone by remove_from_cart.
- **Login.** `ANONYMOUS_START_PROBABILITY` of a customer's visits start anonymous (customer_id null) and log
  in after 1-4 events; `NEVER_LOGIN_PROBABILITY` never log in (never a purchase visit: checkout needs a
  login); events before the customer's signup are anonymous too. Visitors who are not customers add
  `VISITOR_EVENT_SHARE` of all events, anonymous throughout.
- **Planted defects**, counted: events the tracker sent twice (same event_id and content,
  `DUPLICATE_SHARE`; in files only, to the file of the same or a later day: a table's primary key refuses
  them) and events of a type the shop does not know (`UNKNOWN_TYPE_SHARE`, e.g. "hover").

Only events of the last `days` of the history are kept. The truth, `event_sessions.parquet`, names each
session's true owner, which its events hide while anonymous.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pathlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa

from core.shop_schema import EVENT_CHANNELS, EVENT_TYPES

#: Marks a null in the int64 arrays of ids, as in demo_shop.generate_shop (its SQL encoder writes it as null).
MISSING = np.iinfo(np.int64).min
DAY_S = 86_400
OUTPUTS = ("none", "table", "files")
UNKNOWN_EVENT_TYPES = ("hover", "scroll", "page_ping")
_TYPE_NAMES = EVENT_TYPES + UNKNOWN_EVENT_TYPES
VIEW, CLICK, SEARCH, ADD_TO_CART, REMOVE_FROM_CART, CHECKOUT = (
    EVENT_TYPES.index(name) for name in ("view", "click", "search", "add_to_cart", "remove_from_cart", "checkout")
)

VISITS_PER_DAY = 0.33  # browsing visits per active day at engagement 1
ENGAGEMENT_SHAPE = 2.0  # Gamma shape of the customers' engagement (smaller: more unequal)
#: Mean engagement per customer type: loyal and regular customers browse more.
BROWSE_FACTOR = {"loyal": 1.5, "regular": 1.2, "bargain_hunter": 1.0, "casual": 0.65}
MEAN_VISIT_EVENTS = 4.5  # mean of the geometric length of a browsing visit, before the cap
MAX_VISIT_EVENTS = 15
GAP_MEDIAN_S, GAP_SIGMA = 20.0, 1.1  # log-normal seconds between two events of a visit
MIN_GAP_S, MAX_GAP_S = 2, 1_200

CHURN_RAMP_DAYS = 60  # the visit rate falls linearly over these days before dropping out ...
CHURN_FLOOR = 0.2  # ... to this share of normal
CHURN_HALF_LIFE_DAYS = 20  # after dropping out it halves every this many days ...
CHURN_STOP_DAYS = 90  # ... and stops this many days after

RESEARCH_PROBABILITY = 0.6  # an order has a research visit 1-14 days before
RESEARCH_DAYS = (1, 14)
RESEARCH_SEARCH_PROBABILITY = 0.3  # the research visit starts with a search of the category
EARLY_VIEW_PROBABILITY = 0.3  # one of the order's products was viewed 15-60 days before
EARLY_VIEW_DAYS = (15, 60)

PREFERRED_VISIT_PROBABILITY = 0.55  # a browsing visit stays in the customer's preferred category
FIRST_SEARCH_PROBABILITY = 0.25  # a browsing visit starts with a search
#: Types of the later events of a browsing visit: view, click, search, add_to_cart.
_LATER_TYPES = np.array([VIEW, CLICK, SEARCH, ADD_TO_CART])
_LATER_TYPE_PROBABILITY = np.array([0.60, 0.20, 0.08, 0.12])
REMOVE_PROBABILITY = 0.35  # an add_to_cart followed in the visit by a remove_from_cart of the same product
SECOND_UNIT_PROBABILITY = 0.2  # a browsing add_to_cart of two units

#: Channel shares of visits; a customer uses its favourite channel in FAVOURITE_CHANNEL_PROBABILITY of them.
CHANNEL_SHARE = np.array([0.35, 0.40, 0.15, 0.10])  # web, app, mini-program, social
FAVOURITE_CHANNEL_PROBABILITY = 0.7
ENTRY_REFERRERS = ("direct", "ad", "email", "social")
_ENTRY_REFERRER_SHARE = np.array([0.55, 0.2, 0.15, 0.1])
#: Referrers of views: entry ones, then "search" after a search, "category" or "recommendation" inside a visit.
REFERRERS = ENTRY_REFERRERS + ("search", "category", "recommendation")
CLICK_ELEMENTS = ("product_tile", "recommendation", "banner")

ANONYMOUS_START_PROBABILITY = 0.35  # visits whose first 1-4 events come before the login
NEVER_LOGIN_PROBABILITY = 0.05  # visits that never log in
VISITOR_EVENT_SHARE = 0.10  # events of visitors who are not customers, of all events

DUPLICATE_SHARE = 0.005  # events the tracker sends twice
RESEND_DELAY_DAYS = np.array([0, 1, 2, 3])  # the re-sent copy lands in the file this many days later
_RESEND_DELAY_PROBABILITY = np.array([0.4, 0.3, 0.2, 0.1])
UNKNOWN_TYPE_SHARE = 0.0005  # events of a type the shop does not know

# Kinds of visit: a purchase visit ends at its order and always logs in (checkout needs a login).
_BROWSING, _PURCHASE, _RESEARCH, _EARLY_VIEW, _VISITOR = range(5)

EVENT_SESSIONS_SCHEMA = pa.schema(
    [
        pa.field("session_id", pa.string()),
        pa.field("customer_id", pa.int64(), metadata={"unit": "the session's true owner; null for visitors who are not customers"}),
        pa.field("logged_in", pa.bool_(), metadata={"unit": "some event of the session carries the customer id"}),
        pa.field(
            "anonymous_events", pa.int64(), metadata={"unit": "events with a null customer_id in the source (before the login, or all)"}
        ),
        pa.field("events", pa.int64(), metadata={"unit": "distinct events of the session (a re-sent copy not counted)"}),
    ]
)


class Catalogue(Protocol):
    """The products events refer to (demo_shop.generate_shop._Catalogue): index i is product id i + 1, products
    sorted by category."""

    category: np.ndarray  # category index per product
    popularity_cdf: np.ndarray  # cumulative share of popularity, ascending to 1
    category_start: np.ndarray  # first product index of each category
    category_stop: np.ndarray  # one past the last


@dataclass(frozen=True)
class EventWindow:
    """The stretch of history events are generated for: the last `days` days before `end_s`."""

    t0: dt.datetime  # start of the history (UTC); times are seconds since t0
    start_s: int  # first second with events
    end_s: int  # end of the history, exclusive
    catalogue: Catalogue
    category_names: tuple[str, ...]
    search_terms: tuple[tuple[str, ...], ...]  # what visitors type to find each category's products

    @property
    def days(self) -> int:
        return (self.end_s - self.start_s) // DAY_S

    @property
    def first_day(self) -> dt.date:
        return (self.t0 + dt.timedelta(seconds=self.start_s)).date()

    @property
    def last_day(self) -> dt.date:
        return (self.t0 + dt.timedelta(seconds=self.end_s - 1)).date()


def event_window(
    t0: dt.datetime, end_s: int, days: int, catalogue: Catalogue, category_names: tuple[str, ...], search_terms: tuple[tuple[str, ...], ...]
) -> EventWindow:
    """The window of the last `days` days of a history that ends `end_s` seconds after t0 (midnight UTC)."""
    if days < 1 or days * DAY_S > end_s:
        raise ValueError(f"events_days: expected 1 to {end_s // DAY_S} (the history's days), got {days}")
    if len(search_terms) != len(category_names):
        raise ValueError(f"search_terms: expected one tuple per category ({len(category_names)}), got {len(search_terms)}")
    return EventWindow(t0, end_s - days * DAY_S, end_s, catalogue, tuple(category_names), tuple(tuple(terms) for terms in search_terms))


@dataclass(frozen=True)
class CustomerHistory:
    """What the shop generator drew for one block of customers: all their browsing depends on.

    Customers are indexed by position in the block; orders sorted by customer then time, their lines by order.
    """

    customer_ids: np.ndarray
    customer_type: np.ndarray  # CustomerType name per customer
    signup_s: np.ndarray
    dropped_at_s: np.ndarray  # time of the order after which the customer dropped out; >= end if alive
    preferred_category: np.ndarray  # category index
    order_customer: np.ndarray  # position of each good order's customer
    order_time_s: np.ndarray
    line_order: np.ndarray  # index of each order line's order
    line_product: np.ndarray  # product index of each line
    line_quantity: np.ndarray  # units of each line


@dataclass(frozen=True)
class BlockEvents:
    """One block's events, sorted by time; each distinct event once, the re-sent copies apart."""

    event_id: np.ndarray  # 32 hex digits
    customer_id: np.ndarray  # MISSING while anonymous
    session_id: np.ndarray
    event_type: np.ndarray  # index into EVENT_TYPES + UNKNOWN_EVENT_TYPES
    product: np.ndarray  # product index, -1 for none
    category: np.ndarray  # category index, -1 for none
    channel: np.ndarray  # index into EVENT_CHANNELS
    occurred_s: np.ndarray
    properties: np.ndarray  # JSON object text
    resent: np.ndarray  # positions of the events the tracker sent twice
    resent_day: np.ndarray  # day (since t0) of the file each re-sent copy lands in
    sessions: pa.Table  # truth: one row per session (EVENT_SESSIONS_SCHEMA)
    counts: dict[str, int]  # unknown_event_type, anonymous_before_login, never_identified, visitor_events


def browsing_activity(time_s: np.ndarray, dropped_at_s: np.ndarray, end_s: int) -> np.ndarray:
    """The visit rate at `time_s` as a share of the customer's normal rate (0 to 1).

    1 for a customer alive at the end (dropped_at_s >= end_s); for one who dropped out it falls linearly to
    CHURN_FLOOR over the CHURN_RAMP_DAYS before dropped_at, halves every CHURN_HALF_LIFE_DAYS after, and is 0
    from CHURN_STOP_DAYS after on.
    """
    alive = dropped_at_s >= end_s
    days_before = (np.where(alive, 0, dropped_at_s) - time_s) / DAY_S
    ramp = CHURN_FLOOR + (1.0 - CHURN_FLOOR) * np.clip(days_before / CHURN_RAMP_DAYS, 0.0, 1.0)
    decay = CHURN_FLOOR * 0.5 ** (np.maximum(-days_before, 0.0) / CHURN_HALF_LIFE_DAYS)
    share = np.where(days_before >= 0, ramp, np.where(-days_before < CHURN_STOP_DAYS, decay, 0.0))
    return np.where(alive, 1.0, share)


# --------------------------------------------------------------------------------------------------------
# One block
# --------------------------------------------------------------------------------------------------------


def block_events(rng: np.random.Generator, window: EventWindow, history: CustomerHistory, plant_at_least_one: bool) -> BlockEvents:
    """The events of one block of customers in the window, and of visitors who are not customers in
    proportion; `plant_at_least_one` plants at least one re-sent and one unknown-type event."""
    n = history.customer_ids.size
    engagement = rng.gamma(ENGAGEMENT_SHAPE, _browse_factor(history.customer_type) / ENGAGEMENT_SHAPE)
    favourite_channel = rng.choice(len(EVENT_CHANNELS), size=n, p=CHANNEL_SHARE)

    parts = [_browsing_visits(rng, window, history, engagement), *_order_visits(rng, window, history)]
    customer_events = sum(part.items["visit"].size for part in parts)
    parts.append(_visitor_visits(rng, window, customer_events))
    visits, items = _combine(parts)
    n_visits = visits["owner"].size
    order = np.lexsort((items["key"], items["visit"]))
    items = {name: values[order] for name, values in items.items()}
    visit = items["visit"]
    n_events = np.bincount(visit, minlength=n_visits)
    position = _positions(visit, n_events)

    owner, kind = visits["owner"], visits["kind"]
    is_customer = owner >= 0
    channel = np.where(
        is_customer & (rng.random(n_visits) < FAVOURITE_CHANNEL_PROBABILITY),
        favourite_channel[np.maximum(owner, 0)],
        rng.choice(len(EVENT_CHANNELS), size=n_visits, p=CHANNEL_SHARE),
    )
    time = _event_times(rng, window, visit, position, n_events, visits["anchor_s"], kind == _PURCHASE)
    customer_id = _logged_in_ids(rng, history, visit, position, n_events, owner, kind, time)
    referrer = _referrers(rng, items["type"], visit, position, channel)

    keep = time >= window.start_s
    events = {
        "visit": visit[keep],
        "sequence": 2 * position[keep],
        "type": items["type"][keep],
        "product": items["product"][keep],
        "category": items["category"][keep],
        "quantity": items["quantity"][keep],
        "referrer": referrer[keep],
        "time": time[keep],
        "customer_id": customer_id[keep],
    }
    events = _with_unknown_types(rng, events, _planted_count(rng, events["visit"].size, UNKNOWN_TYPE_SHARE, plant_at_least_one))
    order = np.lexsort((events["sequence"], events["visit"], events["time"]))
    events = {name: values[order] for name, values in events.items()}
    m = events["visit"].size

    session_ids = _hex_ids(rng, n_visits)
    checkout_items = np.bincount(events["visit"], weights=events["type"] == ADD_TO_CART, minlength=n_visits)
    properties = _properties(rng, window, events, checkout_items[events["visit"]].astype(np.int64))
    is_known = events["type"] < len(EVENT_TYPES)
    n_resent = _planted_count(rng, int(is_known.sum()), DUPLICATE_SHARE, plant_at_least_one)
    resent = np.sort(rng.choice(np.flatnonzero(is_known), size=n_resent, replace=False))
    last_day = (window.end_s - 1) // DAY_S
    resent_day = np.minimum(
        events["time"][resent] // DAY_S + rng.choice(RESEND_DELAY_DAYS, size=n_resent, p=_RESEND_DELAY_PROBABILITY), last_day
    )

    sessions, counts = _session_truth(events, owner, history.customer_ids, session_ids)
    counts["unknown_event_type"] = int((events["type"] >= len(EVENT_TYPES)).sum())
    return BlockEvents(
        event_id=_hex_ids(rng, m),
        customer_id=events["customer_id"],
        session_id=session_ids[events["visit"]],
        event_type=events["type"],
        product=events["product"],
        category=events["category"],
        channel=channel[events["visit"]],
        occurred_s=events["time"],
        properties=properties,
        resent=resent,
        resent_day=resent_day,
        sessions=sessions,
        counts=counts,
    )


@dataclass(frozen=True)
class _Part:
    """Visits of one kind and their events (items), before they are put in order and timed."""

    visits: dict[str, np.ndarray]  # owner (customer position, -1 for a visitor), anchor_s, kind
    items: dict[str, np.ndarray]  # visit (index within the part), key (order in the visit), type, product, ...


def _browse_factor(customer_type: np.ndarray) -> np.ndarray:
    """Each customer's mean engagement, by its type's name."""
    is_type = customer_type[:, None] == np.array(list(BROWSE_FACTOR), dtype=object)[None, :]
    if not is_type.any(axis=1).all():
        unknown = sorted(set(customer_type[~is_type.any(axis=1)].tolist()))
        raise ValueError(f"customer types {unknown}: no BROWSE_FACTOR (known: {sorted(BROWSE_FACTOR)})")
    return is_type @ np.array(list(BROWSE_FACTOR.values()))


def _positions(group: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Rank of each row within its group, for rows sorted by group; `counts` are the group sizes."""
    return np.arange(group.size) - (np.cumsum(counts) - counts)[group]


def _items(
    visit: np.ndarray,
    key: np.ndarray,
    event_type: np.ndarray,
    product: np.ndarray,
    category: np.ndarray,
    quantity: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    return {
        "visit": visit,
        "key": key.astype(np.float64),
        "type": event_type.astype(np.int64),
        "product": product.astype(np.int64),
        "category": category.astype(np.int64),
        "quantity": np.zeros(visit.size, np.int64) if quantity is None else quantity.astype(np.int64),
    }


def _visits(owner: np.ndarray, anchor_s: np.ndarray, kind: int) -> dict[str, np.ndarray]:
    return {"owner": owner.astype(np.int64), "anchor_s": anchor_s.astype(np.int64), "kind": np.full(owner.size, kind, dtype=np.int64)}


def _popular_products(rng: np.random.Generator, catalogue: Catalogue, n: int) -> np.ndarray:
    """n product indexes drawn by popularity from the whole catalogue."""
    drawn = np.searchsorted(catalogue.popularity_cdf, rng.random(n), side="right")
    return np.minimum(drawn, catalogue.popularity_cdf.size - 1)


def _popular_in_category(rng: np.random.Generator, catalogue: Catalogue, category: np.ndarray) -> np.ndarray:
    """One product index per entry of `category`, drawn by popularity within that category."""
    cdf = catalogue.popularity_cdf
    start, stop = catalogue.category_start[category], catalogue.category_stop[category]
    low = np.where(start > 0, cdf[np.maximum(start - 1, 0)], 0.0)
    draw = low + rng.random(category.size) * (cdf[stop - 1] - low)
    return np.clip(np.searchsorted(cdf, draw, side="right"), start, stop - 1)


def _browsing_visits(rng: np.random.Generator, window: EventWindow, history: CustomerHistory, engagement: np.ndarray) -> _Part:
    """The customers' own visits: Poisson in time at their rate, thinned by `browsing_activity`."""
    first = np.maximum(history.signup_s, window.start_s)
    last = np.minimum(np.minimum(history.dropped_at_s, window.end_s) + CHURN_STOP_DAYS * DAY_S, window.end_s)
    span = np.maximum(last - first, 0)
    candidates = rng.poisson(VISITS_PER_DAY * engagement * span / DAY_S)
    owner = np.repeat(np.arange(history.customer_ids.size), candidates)
    start = first[owner] + np.floor(rng.random(owner.size) * span[owner]).astype(np.int64)
    kept = rng.random(owner.size) < browsing_activity(start, history.dropped_at_s[owner], window.end_s)
    owner, start = owner[kept], start[kept]
    focus = np.where(rng.random(owner.size) < PREFERRED_VISIT_PROBABILITY, history.preferred_category[owner], -1)
    return _Part(_visits(owner, start, _BROWSING), _browsing_items(rng, window.catalogue, focus))


def _visitor_visits(rng: np.random.Generator, window: EventWindow, customer_events: int) -> _Part:
    """Visits of people who are not customers: VISITOR_EVENT_SHARE of all events, browsing by popularity."""
    expected_events = customer_events * VISITOR_EVENT_SHARE / (1.0 - VISITOR_EVENT_SHARE)
    n = rng.poisson(expected_events / _mean_browsing_events())
    start = window.start_s + np.floor(rng.random(n) * (window.end_s - window.start_s)).astype(np.int64)
    return _Part(_visits(np.full(n, -1), start, _VISITOR), _browsing_items(rng, window.catalogue, np.full(n, -1)))


def _mean_browsing_events() -> float:
    """Mean events of a browsing visit: a geometric length with mean MEAN_VISIT_EVENTS, capped."""
    q = 1.0 - 1.0 / MEAN_VISIT_EVENTS
    return (1.0 - q**MAX_VISIT_EVENTS) / (1.0 - q)


def _browsing_items(rng: np.random.Generator, catalogue: Catalogue, focus: np.ndarray) -> dict[str, np.ndarray]:
    """Events of browsing visits. A visit with a `focus` category views that category's products, one
    without (-1) the catalogue's by popularity; after a search the visitor looks at the searched category."""
    n_events = np.minimum(rng.geometric(1.0 / MEAN_VISIT_EVENTS, focus.size), MAX_VISIT_EVENTS)
    visit = np.repeat(np.arange(focus.size), n_events)
    position = _positions(visit, n_events)
    m = visit.size
    event_type = np.where(
        position == 0,
        np.where(rng.random(m) < FIRST_SEARCH_PROBABILITY, SEARCH, VIEW),
        _LATER_TYPES[rng.choice(_LATER_TYPES.size, size=m, p=_LATER_TYPE_PROBABILITY)],
    )
    visit_focus = focus[visit]
    product = np.where(
        visit_focus >= 0, _popular_in_category(rng, catalogue, np.maximum(visit_focus, 0)), _popular_products(rng, catalogue, m)
    )
    category = catalogue.category[product]

    after_search = np.flatnonzero((event_type[:-1] == SEARCH) & (position[1:] > 0)) + 1
    event_type[after_search] = np.where(event_type[after_search] == SEARCH, VIEW, event_type[after_search])
    category[after_search] = category[after_search - 1]
    product[after_search] = _popular_in_category(rng, catalogue, category[after_search])

    added = np.flatnonzero((event_type[:-1] == ADD_TO_CART) & (position[1:] > 0) & np.isin(event_type[1:], (VIEW, CLICK)))
    removed = added[rng.random(added.size) < REMOVE_PROBABILITY] + 1
    event_type[removed] = REMOVE_FROM_CART
    product[removed] = product[removed - 1]
    category[removed] = category[removed - 1]
    quantity = np.where(event_type == ADD_TO_CART, 1 + (rng.random(m) < SECOND_UNIT_PROBABILITY), 0)
    quantity[removed] = quantity[removed - 1]
    product = np.where(event_type == SEARCH, -1, product)
    return _items(visit, position, event_type, product, category, quantity)


def _order_visits(rng: np.random.Generator, window: EventWindow, history: CustomerHistory) -> list[_Part]:
    """Visits behind the orders placed in the window: the purchase visit, research and early views before."""
    catalogue = window.catalogue
    n_orders = history.order_time_s.size
    lines_per_order = np.bincount(history.line_order, minlength=n_orders)
    line_start = np.cumsum(lines_per_order) - lines_per_order
    line_rank = _positions(history.line_order, lines_per_order)
    ordered = np.flatnonzero((history.order_time_s >= window.start_s) & (history.order_time_s < window.end_s))
    visit_of_order = np.full(n_orders, -1, dtype=np.int64)
    visit_of_order[ordered] = np.arange(ordered.size)
    line = np.flatnonzero(visit_of_order[history.line_order] >= 0)
    line_visit = visit_of_order[history.line_order[line]]
    line_category = catalogue.category[history.line_product[line]]
    owner, order_time = history.order_customer[ordered], history.order_time_s[ordered]

    # Purchase: view and add_to_cart each ordered product, then check out at the order's time.
    k = ordered.size
    purchase = _Part(
        _visits(owner, order_time, _PURCHASE),
        _concat_items(
            [
                _items(line_visit, 2 * line_rank[line], np.full(line.size, VIEW), history.line_product[line], line_category),
                _items(
                    line_visit,
                    2 * line_rank[line] + 1,
                    np.full(line.size, ADD_TO_CART),
                    history.line_product[line],
                    line_category,
                    history.line_quantity[line],
                ),
                _items(
                    np.arange(k),
                    np.full(k, 2.0 * (lines_per_order.max(initial=0) + 1)),
                    np.full(k, CHECKOUT),
                    np.full(k, -1),
                    np.full(k, -1),
                ),
            ]
        ),
    )

    # Research: the ordered products and similar ones of their categories, in random order.
    researched = np.flatnonzero(rng.random(k) < RESEARCH_PROBABILITY)
    research_visit = np.full(k, -1, dtype=np.int64)
    research_visit[researched] = np.arange(researched.size)
    days_before = rng.uniform(*RESEARCH_DAYS, researched.size)
    n_similar = 1 + rng.binomial(3, 0.4, researched.size)
    similar_visit = np.repeat(np.arange(researched.size), n_similar)
    similar_order = ordered[researched][similar_visit]
    like_line = line_start[similar_order] + np.floor(rng.random(similar_visit.size) * lines_per_order[similar_order]).astype(np.int64)
    similar_category = catalogue.category[history.line_product[like_line]]
    own_line = line[research_visit[line_visit] >= 0]
    own_visit = research_visit[visit_of_order[history.line_order[own_line]]]
    searched = np.flatnonzero(rng.random(researched.size) < RESEARCH_SEARCH_PROBABILITY)
    research = _Part(
        _visits(owner[researched], order_time[researched] - np.rint(days_before * DAY_S), _RESEARCH),
        _concat_items(
            [
                _items(
                    own_visit,
                    rng.random(own_line.size),
                    np.full(own_line.size, VIEW),
                    history.line_product[own_line],
                    catalogue.category[history.line_product[own_line]],
                ),
                _items(
                    similar_visit,
                    rng.random(similar_visit.size),
                    np.full(similar_visit.size, VIEW),
                    _popular_in_category(rng, catalogue, similar_category),
                    similar_category,
                ),
                _items(
                    searched,
                    np.full(searched.size, -1.0),
                    np.full(searched.size, SEARCH),
                    np.full(searched.size, -1),
                    catalogue.category[history.line_product[line_start[ordered[researched[searched]]]]],
                ),
            ]
        ),
    )

    # Early view: one of the order's products, and 0-2 others of its category, weeks before.
    early = np.flatnonzero(rng.random(k) < EARLY_VIEW_PROBABILITY)
    early_order = ordered[early]
    early_line = line_start[early_order] + np.floor(rng.random(early.size) * lines_per_order[early_order]).astype(np.int64)
    early_category = catalogue.category[history.line_product[early_line]]
    n_others = rng.binomial(2, 0.5, early.size)
    other_visit = np.repeat(np.arange(early.size), n_others)
    early_part = _Part(
        _visits(owner[early], order_time[early] - np.rint(rng.uniform(*EARLY_VIEW_DAYS, early.size) * DAY_S), _EARLY_VIEW),
        _concat_items(
            [
                _items(
                    np.arange(early.size),
                    rng.random(early.size),
                    np.full(early.size, VIEW),
                    history.line_product[early_line],
                    early_category,
                ),
                _items(
                    other_visit,
                    rng.random(other_visit.size),
                    np.full(other_visit.size, VIEW),
                    _popular_in_category(rng, catalogue, early_category[other_visit]),
                    early_category[other_visit],
                ),
            ]
        ),
    )
    return [purchase, research, early_part]


def _concat_items(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def _combine(parts: list[_Part]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """All visits of a block in one set of arrays; each item's visit becomes an index into them."""
    offsets = np.cumsum([0] + [part.visits["owner"].size for part in parts])
    visits = _concat_items([part.visits for part in parts])
    items = _concat_items([{**part.items, "visit": part.items["visit"] + offset} for part, offset in zip(parts, offsets)])
    return visits, items


def _event_times(
    rng: np.random.Generator,
    window: EventWindow,
    visit: np.ndarray,
    position: np.ndarray,
    n_events: np.ndarray,
    anchor_s: np.ndarray,
    ends_at_anchor: np.ndarray,
) -> np.ndarray:
    """Event times: seconds to minutes apart within a visit. A purchase visit ends at its anchor (the order),
    squeezed after the window's start if needed; other visits start at theirs, moved earlier to end before
    the end of the history."""
    gap = np.clip(np.rint(rng.lognormal(np.log(GAP_MEDIAN_S), GAP_SIGMA, visit.size)), MIN_GAP_S, MAX_GAP_S)
    gap = np.where(position == 0, 0, gap).astype(np.int64)
    elapsed = np.cumsum(gap)
    first_row = np.cumsum(n_events) - n_events  # every visit has at least one event
    elapsed -= elapsed[first_row][visit]
    span = elapsed[first_row + n_events - 1]
    room = np.maximum(anchor_s - window.start_s, 0)
    squeeze = np.divide(room, span, out=np.ones(span.size), where=span > room)
    backwards = anchor_s[visit] - np.floor((span[visit] - elapsed) * squeeze[visit]).astype(np.int64)
    forwards = np.minimum(anchor_s, window.end_s - 1 - span)[visit] + elapsed
    return np.where(ends_at_anchor[visit], backwards, forwards)


def _logged_in_ids(
    rng: np.random.Generator,
    history: CustomerHistory,
    visit: np.ndarray,
    position: np.ndarray,
    n_events: np.ndarray,
    owner: np.ndarray,
    kind: np.ndarray,
    time: np.ndarray,
) -> np.ndarray:
    """The customer id each event carries: null before the visit's login and before the customer's signup."""
    draw = rng.random(owner.size)
    login_at = np.where(draw < ANONYMOUS_START_PROBABILITY, np.minimum(rng.integers(1, 5, owner.size), n_events - 1), 0)
    never = (draw >= ANONYMOUS_START_PROBABILITY) & (draw < ANONYMOUS_START_PROBABILITY + NEVER_LOGIN_PROBABILITY) & (kind != _PURCHASE)
    login_at = np.where(never | (owner < 0), n_events, login_at)
    event_owner = owner[visit]
    known = event_owner >= 0
    safe_owner = np.maximum(event_owner, 0)
    carries = known & (position >= login_at[visit]) & (time >= history.signup_s[safe_owner])
    return np.where(carries, history.customer_ids[safe_owner], MISSING)


def _referrers(
    rng: np.random.Generator, event_type: np.ndarray, visit: np.ndarray, position: np.ndarray, channel: np.ndarray
) -> np.ndarray:
    """Referrer index (REFERRERS) of each event: how the visitor came to the page."""
    m = event_type.size
    entry = rng.choice(len(ENTRY_REFERRERS), size=m, p=_ENTRY_REFERRER_SHARE)
    entry = np.where(channel[visit] == EVENT_CHANNELS.index("social"), ENTRY_REFERRERS.index("social"), entry)
    previous = np.concatenate([[-1], event_type[:-1]])
    inside = np.where(rng.random(m) < 0.6, REFERRERS.index("category"), REFERRERS.index("recommendation"))
    return np.where(position == 0, entry, np.where(previous == SEARCH, REFERRERS.index("search"), inside))


def _planted_count(rng: np.random.Generator, n: int, share: float, at_least_one: bool) -> int:
    count = int(rng.binomial(n, share)) if n > 0 else 0
    return max(count, 1) if at_least_one and n > 0 else count


def _with_unknown_types(rng: np.random.Generator, events: dict[str, np.ndarray], n_unknown: int) -> dict[str, np.ndarray]:
    """Add `n_unknown` events of an unknown type, each in the second of a view or click and like it."""
    candidates = np.flatnonzero(np.isin(events["type"], (VIEW, CLICK)))
    origin = rng.choice(candidates, size=min(n_unknown, candidates.size), replace=False)
    copies = {name: values[origin] for name, values in events.items()}
    copies["sequence"] = copies["sequence"] + 1
    copies["type"] = len(EVENT_TYPES) + rng.integers(0, len(UNKNOWN_EVENT_TYPES), origin.size)
    return _concat_items([events, copies])


def _hex_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random ids of 32 hex digits (128 bits: unique in practice)."""
    digits = rng.bytes(16 * n).hex()
    return np.frombuffer(digits.encode("ascii"), dtype="S32").astype("U32").astype(np.dtypes.StringDType())


def _json_tokens(values: tuple[str, ...] | list[str]) -> np.ndarray:
    """JSON string literals of a small vocabulary, so event text is escaped once per word, not per event."""
    return np.array([json.dumps(value, ensure_ascii=False) for value in values], dtype=np.dtypes.StringDType())


def _joined(*parts) -> np.ndarray:
    """Element-wise concatenation of string arrays and literals."""
    out = parts[0]
    for part in parts[1:]:
        out = np.strings.add(out, part)
    return out


def _properties(rng: np.random.Generator, window: EventWindow, events: dict[str, np.ndarray], checkout_items: np.ndarray) -> np.ndarray:
    """The JSON object of each event: the page, and what the event type needs (referrer, query, ...)."""
    string = np.dtypes.StringDType()
    event_type, product = events["type"], events["product"]
    out = np.full(event_type.size, "{}", dtype=string)
    page = _joined('"/p/', (np.maximum(product, 0) + 1).astype(string), '"')
    category_path = np.array([json.dumps(f"/c/{name}") for name in window.category_names], dtype=string)
    terms = [term for category_terms in window.search_terms for term in category_terms]
    term_count = np.array([len(category_terms) for category_terms in window.search_terms])
    term_start = np.cumsum(term_count) - term_count
    category = np.maximum(events["category"], 0)
    query = term_start[category] + np.floor(rng.random(event_type.size) * term_count[category]).astype(np.int64)
    element = rng.integers(0, len(CLICK_ELEMENTS), event_type.size)

    def fill(mask: np.ndarray, *parts) -> None:
        rows = np.flatnonzero(mask)
        out[rows] = _joined(*[part[rows] if isinstance(part, np.ndarray) else part for part in parts])

    fill(event_type == VIEW, '{"page": ', page, ', "referrer": ', _json_tokens(REFERRERS)[events["referrer"]], "}")
    fill(
        event_type == CLICK,
        '{"page": ',
        category_path[category],
        ', "element": ',
        _json_tokens(CLICK_ELEMENTS)[element],
        ', "target": ',
        page,
        "}",
    )
    fill(event_type == SEARCH, '{"query": ', _json_tokens(terms)[query], "}")
    fill(event_type == ADD_TO_CART, '{"page": ', page, ', "quantity": ', events["quantity"].astype(string), "}")
    fill(event_type == REMOVE_FROM_CART, '{"page": "/cart", "quantity": ', events["quantity"].astype(string), "}")
    fill(event_type == CHECKOUT, '{"page": "/checkout", "items": ', checkout_items.astype(string), "}")
    fill(event_type >= len(EVENT_TYPES), '{"page": ', page, "}")
    return out


def _session_truth(
    events: dict[str, np.ndarray], owner: np.ndarray, customer_ids: np.ndarray, session_ids: np.ndarray
) -> tuple[pa.Table, dict[str, int]]:
    """One truth row per session with events (in order of its first event), and the block's counts of
    anonymous events: before a login, in customers' sessions that never log in, of visitors."""
    n_visits = owner.size
    visit = events["visit"]
    n_events = np.bincount(visit, minlength=n_visits)
    anonymous = np.bincount(visit, weights=events["customer_id"] == MISSING, minlength=n_visits).astype(np.int64)
    is_customer = owner >= 0
    logged_in = is_customer & (anonymous < n_events)
    seen, first_event = np.unique(visit, return_index=True)
    sessions = seen[np.argsort(first_event, kind="stable")]
    customer = np.where(is_customer, customer_ids[np.maximum(owner, 0)], 0)
    table = pa.table(
        {
            "session_id": pa.array(session_ids[sessions].tolist(), type=pa.string()),
            "customer_id": pa.array(customer[sessions], type=pa.int64(), mask=~is_customer[sessions]),
            "logged_in": logged_in[sessions],
            "anonymous_events": anonymous[sessions],
            "events": n_events[sessions],
        },
        schema=EVENT_SESSIONS_SCHEMA,
    )
    counts = {
        "anonymous_before_login": int(anonymous[logged_in].sum()),
        "never_identified": int(n_events[is_customer & ~logged_in].sum()),
        "visitor_events": int(n_events[~is_customer].sum()),
    }
    return table, counts


# --------------------------------------------------------------------------------------------------------
# Writing: the shop's events table, NDJSON files, the summary
# --------------------------------------------------------------------------------------------------------


def table_columns(blocks: list[BlockEvents], window: EventWindow) -> dict[str, np.ndarray]:
    """The events table's columns for the blocks' distinct events (a table's primary key refuses re-sent
    copies); ids and times as demo_shop.generate_shop's SQL encoder takes them (MISSING null, seconds since t0)."""
    categories = np.array(list(window.category_names) + [None], dtype=object)
    return {
        "event_id": np.concatenate([b.event_id for b in blocks]),
        "customer_id": np.concatenate([b.customer_id for b in blocks]),
        "session_id": np.concatenate([b.session_id for b in blocks]),
        "event_type": np.array(_TYPE_NAMES, dtype=object)[np.concatenate([b.event_type for b in blocks])],
        "product_id": np.concatenate([np.where(b.product >= 0, b.product + 1, MISSING) for b in blocks]),
        "category": categories[np.concatenate([b.category for b in blocks])],
        "channel": np.array(EVENT_CHANNELS, dtype=object)[np.concatenate([b.channel for b in blocks])],
        "occurred_at": np.concatenate([b.occurred_s for b in blocks]),
        "properties": np.concatenate([b.properties for b in blocks]),
    }


def ndjson_lines(events: BlockEvents, window: EventWindow) -> np.ndarray:
    """One JSON object per event (no newline): the events table's columns, `properties` as an object,
    occurred_at in ISO 8601 with "Z", null for a missing customer_id, product_id or category."""
    string = np.dtypes.StringDType()
    occurred = np.datetime64(window.t0, "s") + events.occurred_s.astype("timedelta64[s]")
    iso = np.datetime_as_string(occurred, unit="s").astype(string)

    def number_or_null(values: np.ndarray, missing: np.ndarray) -> np.ndarray:
        return np.where(missing, "null", values.astype(string)).astype(string)

    categories = np.concatenate([_json_tokens(window.category_names), np.array(["null"], dtype=string)])
    return _joined(
        '{"event_id": "',
        events.event_id,
        '", "customer_id": ',
        number_or_null(events.customer_id, events.customer_id == MISSING),
        ', "session_id": "',
        events.session_id,
        '", "event_type": ',
        _json_tokens(_TYPE_NAMES)[events.event_type],
        ', "product_id": ',
        number_or_null(events.product + 1, events.product < 0),
        ', "category": ',
        categories[events.category],
        ', "channel": ',
        _json_tokens(EVENT_CHANNELS)[events.channel],
        ', "occurred_at": "',
        iso,
        'Z", "properties": ',
        events.properties,
        "}",
    )


class EventFiles:
    """One NDJSON file per day of occurred_at in `landing_dir`, events-YYYY-MM-DD.ndjson, appended chunk by
    chunk under a hidden name (.events-YYYY-MM-DD.ndjson.partial, which an ingester never reads) and renamed
    by `publish` once every chunk is in. A re-sent copy goes to the file of the day it is re-sent."""

    def __init__(self, landing_dir: pathlib.Path, window: EventWindow):
        self.landing_dir = pathlib.Path(landing_dir)
        self.window = window
        self._days: set[int] = set()  # days (since t0) whose partial file this run has started
        self.landing_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.landing_dir.glob(".events-*.ndjson.partial"):  # left by a run that was killed
            stale.unlink()

    def _name(self, day: int) -> str:
        return f"events-{(self.window.t0.date() + dt.timedelta(days=day)).isoformat()}.ndjson"

    def _partial(self, day: int) -> pathlib.Path:
        return self.landing_dir / f".{self._name(day)}.partial"

    def append(self, blocks: list[BlockEvents]) -> int:
        """Append the blocks' events (and re-sent copies) to their days' partial files, block by block (the
        lines of one block in memory at a time); returns the lines written."""
        written = 0
        for events in blocks:
            block_lines = ndjson_lines(events, self.window)
            lines = np.concatenate([block_lines, block_lines[events.resent]])
            days = np.concatenate([events.occurred_s // DAY_S, events.resent_day])
            order = np.argsort(days, kind="stable")
            file_days, first = np.unique(days[order], return_index=True)
            for day, rows in zip(file_days.tolist(), np.split(order, first[1:])):
                with self._partial(day).open("a" if day in self._days else "w", encoding="utf-8") as file:
                    file.write("\n".join(lines[rows].tolist()))
                    file.write("\n")
                self._days.add(day)
            written += lines.size
        return written

    def publish(self) -> int:
        """Rename every day's partial file to its final name; returns the number of files."""
        for day in sorted(self._days):
            os.replace(self._partial(day), self.landing_dir / self._name(day))
        return len(self._days)

    def discard(self) -> None:
        """Remove the partial files of this run (after a failure)."""
        for day in self._days:
            self._partial(day).unlink(missing_ok=True)
        self._days.clear()


def events_summary(output: str, window: EventWindow, written: int, duplicates: int, counts: dict[str, int], files: int) -> dict:
    """The `events` entry of the generator's summary.json. Counts are events (rows or lines): `written`
    includes the re-sent copies, `duplicates` counts them, the anonymous counts are of distinct events."""
    return {
        "output": output,
        "days": window.days,
        "first_day": window.first_day.isoformat(),
        "last_day": window.last_day.isoformat(),
        "written": written,
        "duplicates": duplicates,
        "bad": {"unknown_event_type": counts.get("unknown_event_type", 0)},
        "anonymous_before_login": counts.get("anonymous_before_login", 0),
        "never_identified": counts.get("never_identified", 0),
        "visitor_events": counts.get("visitor_events", 0),
        "files": files,
    }
