"""Synthetic inbound leads for the lead-scoring example: one Parquet file per day, deterministic
for a seed (day k is the same whatever `periods` is).

Each lead carries the 51 features of `models/lead-scoring.yaml`, the identifiers a CRM export has
(contact name, e-mail, phone, IP address) and `lead_score`, the 1-5 score a sales rep gives it:
a latent value of about ten features plus noise, cut into five bands, so an XGBoost regressor
reaches a test Spearman around 0.7 (0.71 on the spec's 4/1/2-day split at 2,000 leads a
weekday). Weekly seasonality: weekend days bring about 40% of the
leads, mostly organic and paid, scored lower. From `drift_from` (1-based day) on, the mix moves
(more paid leads, fewer visits, lower intent, more SMB accounts) and the label leans less on
intent and more on meetings (concept drift).

This module lives outside `retrainer/` on purpose: a team brings its own model with a spec, a
training function (here the built-in XGBoost regressor) and, for a demo, a generator like this.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

MODEL = "lead-scoring"
_FIRST = ("Ana", "Ben", "Chen", "Dara", "Eli", "Fay", "Gus", "Hiro", "Iris", "Jon", "Kemi", "Lars")
_LAST = ("Adams", "Berg", "Costa", "Diaz", "Evans", "Fox", "Gray", "Hale", "Ito", "Jung", "Khan", "Lund")
_WEEKDAY_SOURCES = [0.22, 0.16, 0.14, 0.12, 0.26, 0.10]  # Organic, Paid, Referral, Event, Outbound, Partner
_WEEKEND_SOURCES = [0.45, 0.35, 0.08, 0.02, 0.05, 0.05]
_DRIFT_SOURCES = [0.15, 0.45, 0.08, 0.07, 0.15, 0.10]


def _cat(rng: np.random.Generator, values, n: int, p=None) -> np.ndarray:
    return rng.choice(np.asarray(values, dtype=object), n, p=p)


def _day_frame(rng: np.random.Generator, day: pd.Timestamp, k: int, n: int, drifted: bool) -> pd.DataFrame:
    from retrainer.spec import contract  # noqa: PLC0415 - the spec's category lists

    c = contract(MODEL)
    cats = c.CATEGORIES
    weekend = day.weekday() >= 5
    d = 1.0 if drifted else 0.0
    tier = _cat(rng, cats["company_tier"], n, p=[0.55 + 0.2 * d, 0.30 - 0.1 * d, 0.15 - 0.1 * d])
    size = {"SMB": 3.5, "MidMarket": 6.0, "Enterprise": 8.5}
    company_size_log = np.clip(np.array([size[t] for t in tier]) + rng.normal(0, 0.8, n), 0, 14)
    intent = np.clip(rng.normal(55 - 15 * d - (8 if weekend else 0), 18, n), 0, 100)
    fit = np.clip(rng.normal(50 + 4 * company_size_log - 25, 15, n), 0, 100)
    visits30 = np.minimum(rng.poisson(np.exp(2.2 - 0.6 * d + intent / 80)), 5000)
    visits7 = np.minimum(rng.binomial(visits30, 0.3), 1000)
    pricing = np.minimum(rng.binomial(visits30, np.clip(intent / 300, 0.01, 0.5)), 500)
    meetings = np.minimum(rng.poisson(0.3 + intent / 120 + 0.4 * d), 50)
    demo = rng.random(n) < np.clip(intent / 200 + 0.05 * d, 0, 1)
    existing = rng.random(n) < 0.25
    source = _cat(rng, cats["lead_source"], n,
                  p=_DRIFT_SOURCES if drifted else (_WEEKEND_SOURCES if weekend else _WEEKDAY_SOURCES))
    level = _cat(rng, cats["job_level"], n, p=[0.35, 0.3, 0.18, 0.12, 0.05])
    seniority = {"IC": 0.0, "Manager": 0.3, "Director": 0.6, "VP": 0.9, "CLevel": 1.1}
    budget = rng.random(n) < 0.15 + 0.1 * np.array([seniority[v] for v in level])
    nps = np.where(rng.random(n) < 0.4, np.nan, np.clip(rng.normal(20, 40, n), -100, 100))
    # the rep's score: a latent value of ~10 features; after the drift it leans on meetings, not intent
    latent = ((0.030 - 0.015 * d) * intent + 0.020 * fit + 0.35 * np.log1p(pricing)
              + (0.45 + 0.5 * d) * meetings + 0.6 * demo + 0.5 * budget + 0.4 * existing
              + 0.35 * np.array([seniority[v] for v in level]) + 0.15 * (source == "Referral")
              + 0.10 * company_size_log - (0.4 if weekend else 0.0) + rng.normal(0, 0.85, n))
    cuts = np.array([2.7, 3.5, 4.2, 5.0])
    score = 1 + np.searchsorted(cuts, latent)

    ids = [f"L{k:04d}-{i:06d}" for i in range(n)]
    accounts = [f"A{a:06d}" for a in rng.integers(0, 40_000, n)]
    first, last = _cat(rng, _FIRST, n), _cat(rng, _LAST, n)
    seconds = rng.integers(0, 86_400, n)
    frame = pd.DataFrame({
        "lead_id": ids,
        "lead_ts": day + pd.to_timedelta(np.sort(seconds), unit="s"),
        "account_id": accounts,
        "contact_name": [f"{a} {b}" for a, b in zip(first, last)],
        "contact_email": [f"{a.lower()}.{b.lower()}{i}@example.com" for i, (a, b) in enumerate(zip(first, last))],
        "contact_phone": [f"+1-555-{x:07d}" for x in rng.integers(0, 10_000_000, n)],
        "ip_address": [f"10.{a}.{b}.{c}" for a, b, c in rng.integers(0, 256, (n, 3))],
        "company_size_log": company_size_log,
        "annual_revenue_log": np.clip(company_size_log * 1.6 + rng.normal(4, 1.2, n), 0, 26),
        "employee_growth_pct": np.clip(rng.normal(8, 20, n), -100, 500),
        "company_age_years": np.clip(rng.gamma(2.0, 8.0, n), 0, 200).round().astype(np.int64),
        "web_visits_7d": visits7.astype(np.int64),
        "web_visits_30d": visits30.astype(np.int64),
        "pages_per_visit": np.clip(rng.gamma(2.0, 2.0, n), 0, 200),
        "avg_session_minutes": np.clip(rng.gamma(2.0, 3.0, n), 0, 600),
        "pricing_page_views_30d": pricing.astype(np.int64),
        "docs_page_views_30d": np.minimum(rng.poisson(3 + visits30 / 4), 1000).astype(np.int64),
        "content_downloads_90d": np.minimum(rng.poisson(1.5, n), 200).astype(np.int64),
        "webinars_attended_90d": np.minimum(rng.poisson(0.4, n), 50).astype(np.int64),
        "email_opens_30d": np.minimum(rng.poisson(6, n), 500).astype(np.int64),
        "email_clicks_30d": np.minimum(rng.poisson(1.5, n), 500).astype(np.int64),
        "email_replies_30d": np.minimum(rng.poisson(0.3, n), 200).astype(np.int64),
        "sales_touches_30d": np.minimum(rng.poisson(3, n), 200).astype(np.int64),
        "calls_connected_30d": np.minimum(rng.poisson(0.8, n), 100).astype(np.int64),
        "meetings_booked_30d": meetings.astype(np.int64),
        "days_since_last_touch": np.minimum(rng.geometric(0.08, n) - 1, 3650).astype(np.int64),
        "days_since_first_touch": np.minimum(rng.geometric(0.01, n) - 1, 3650).astype(np.int64),
        "ad_clicks_30d": np.minimum(rng.poisson(2 + 3 * d, n), 1000).astype(np.int64),
        "social_mentions_30d": np.minimum(rng.poisson(1, n), 1000).astype(np.int64),
        "open_opportunities": np.minimum(rng.poisson(0.3 + 0.5 * existing), 50).astype(np.int64),
        "past_purchases": np.where(existing, np.minimum(rng.poisson(4, n), 500), 0).astype(np.int64),
        "lifetime_value_log": np.where(existing, np.clip(rng.normal(9, 2, n), 0, 25), 0.0),
        "support_tickets_90d": np.where(existing, np.minimum(rng.poisson(2, n), 500), 0).astype(np.int64),
        "trial_days_used": np.minimum(rng.integers(0, 31, n) * (rng.random(n) < 0.3), 90).astype(np.int64),
        "intent_score": intent,
        "fit_score": fit,
        "nps_score": nps,
        "engagement_trend": np.clip(rng.normal(0, 8, n), -50, 50),
        "industry": _cat(rng, cats["industry"], n),
        "region": _cat(rng, cats["region"], n, p=[0.5, 0.28, 0.15, 0.07]),
        "lead_source": source,
        "company_tier": tier,
        "job_level": level,
        "department": _cat(rng, cats["department"], n),
        "product_interest": _cat(rng, cats["product_interest"], n),
        "device": _cat(rng, cats["device"], n, p=[0.4, 0.5, 0.1] if weekend else [0.7, 0.25, 0.05]),
        "is_existing_customer": existing,
        "has_free_trial": rng.random(n) < 0.3,
        "opted_in_email": rng.random(n) < 0.6,
        "visited_pricing": pricing > 0,
        "requested_demo": demo,
        "attended_event": source == "Event",
        "partner_referral": source == "Partner",
        "budget_confirmed": budget,
        "decision_maker": np.isin(level, ["VP", "CLevel"]),
        "competitor_user": rng.random(n) < 0.2,
        "weekend_activity": np.full(n, weekend),
        "mobile_verified": rng.random(n) < 0.5,
        "lead_score": score.astype(np.int64),
    })
    return _conform(frame, c)


def _conform(frame: pd.DataFrame, c) -> pd.DataFrame:
    """The contract's column order and dtypes (strings as pandas strings)."""
    casts = {"string": "string", "float": "float64", "int": "int64", "bool": "bool"}
    out = frame[list(c.COLUMN_TYPES)]
    return out.astype({col: casts[k] for col, k in c.COLUMN_TYPES.items() if k in casts})


def generate(out: str | Path, *, periods: int = 28, rows_per_period: int = 2000, seed: int = 7,
             start: str = "2024-03-04", drift_from: int | None = None) -> list[Path]:
    """Write `periods` daily files (`leads_YYYY_MM_DD.parquet`) under `out`, weekend days with
    about 40% of `rows_per_period` leads; returns their paths in time order."""
    if periods < 1:
        raise ValueError("periods must be at least 1")
    if rows_per_period < 1:
        raise ValueError("rows_per_period must be at least 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    first = pd.Timestamp(start).normalize()
    paths = []
    for k in range(periods):
        day = first + pd.Timedelta(days=k)
        rng = np.random.default_rng([seed, k])  # one stream per day: day k is the same whatever `periods` is
        n = max(1, round(rows_per_period * (0.4 if day.weekday() >= 5 else 1.0)))
        drifted = drift_from is not None and (k + 1) >= drift_from
        frame = _day_frame(rng, day, k, n, drifted)
        path = out / f"leads_{day:%Y_%m_%d}.parquet"
        frame.to_parquet(path, index=False, row_group_size=min(100_000, n))
        paths.append(path)
    return paths
