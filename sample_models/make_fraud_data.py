"""Make the synthetic card-fraud table for the tabular sample model (issue 17), deterministically.

    python sample_models/make_fraud_data.py        # writes sample_models/data/fraud.{csv,yaml}

4,000 transactions, about one fraud in eleven (10:1, the imbalance that makes fraud audits
interesting: TabularBench attacks only the positive class). The columns exercise every part of
the feature schema:

- immutable facts: ``age`` and ``account_age_days`` (integers an attacker cannot change);
- integers: ``hour``, ``n_transactions_24h``, ``total_accounts``, ``open_accounts``, with the
  relation ``open_accounts <= total_accounts``;
- binaries: ``is_foreign``, ``has_2fa``;
- continuous: ``amount`` (cents), ``distance_km`` (one decimal);
- a one-hot group: ``channel=web``, ``channel=app``, ``channel=pos``.

Fraud is not a linear function of the columns: its log-odds add a foreign web purchase
(an interaction), night hours (a window), a burst of transactions (saturating), a new account
(a threshold), nearly all accounts open (a ratio), a large amount (log) and a periodic
distance term, minus two-factor authentication; logistic noise is added and the top 1/11 of
the noisy score are labelled fraud. So a model can learn it well but not perfectly, and the
features an attacker controls (amount, hour, channel, distance, ...) matter.

The schema (``fraud.yaml``) gives domain bounds, wider than what the sample happens to show.
Nothing is trained here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from robaudit.tabular.schema import Feature, Relation, TabularSchema

HERE = Path(__file__).resolve().parent
ROWS = 4000
FRAUD_SHARE = 1 / 11  # 10 legitimate transactions per fraud
CHANNELS = ("web", "app", "pos")

SCHEMA = TabularSchema(
    features=[
        Feature(name="age", type="integer", bounds=(18, 90), mutable=False),
        Feature(name="account_age_days", type="integer", bounds=(0, 3650), mutable=False),
        Feature(name="amount", type="continuous", bounds=(1.0, 5000.0)),
        Feature(name="hour", type="integer", bounds=(0, 23)),
        Feature(name="n_transactions_24h", type="integer", bounds=(0, 50)),
        Feature(name="total_accounts", type="integer", bounds=(1, 12)),
        Feature(name="open_accounts", type="integer", bounds=(0, 12)),
        Feature(name="distance_km", type="continuous", bounds=(0.0, 2000.0)),
        Feature(name="is_foreign", type="binary"),
        Feature(name="has_2fa", type="binary"),
        Feature(name="channel", type="categorical", columns=[f"channel={c}" for c in CHANNELS]),
    ],
    relations=[Relation(smaller="open_accounts", larger="total_accounts")],
)


def make(rows: int = ROWS, seed: int = 17) -> pd.DataFrame:
    """The table: the schema's columns in order, then ``is_fraud`` (0/1)."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 91, rows)
    account_age = np.minimum(rng.exponential(700, rows), 3650).astype(np.int64)
    amount = np.clip(np.round(rng.lognormal(3.8, 1.1, rows), 2), 1.0, 5000.0)
    hour = rng.choice(24, rows, p=_hour_weights())
    burst = rng.binomial(1, 0.08, rows) * rng.integers(5, 40, rows)  # a card-testing spree
    n_tx = np.minimum(rng.poisson(3, rows) + burst, 50)
    total = rng.integers(1, 13, rows)
    open_ = rng.binomial(total, rng.uniform(0.2, 1.0, rows))
    distance = np.clip(np.round(rng.gamma(1.2, 60.0, rows), 1), 0.0, 2000.0)
    foreign = (rng.random(rows) < 0.12 + 0.3 * (distance > 300)).astype(np.int64)
    two_fa = (rng.random(rows) < 0.55).astype(np.int64)
    channel = rng.choice(len(CHANNELS), rows, p=[0.45, 0.35, 0.20])

    logit = (
        1.6 * foreign * (channel == 0)
        + 1.3 * ((hour >= 0) & (hour <= 5))
        + 2.0 * np.tanh(n_tx / 10.0)
        + 1.2 * (account_age < 60)
        + 0.9 * (open_ / total > 0.85) * (total >= 3)
        + 0.7 * np.log1p(amount / 100.0)
        + 0.5 * np.sin(distance / 150.0)
        - 1.4 * two_fa
        - 0.01 * (age - 40) * (channel == 2)
    )
    score = logit + rng.logistic(0.0, 0.6, rows)
    fraud = (score >= np.quantile(score, 1.0 - FRAUD_SHARE)).astype(np.int64)

    columns = {
        "age": age, "account_age_days": account_age, "amount": amount, "hour": hour,
        "n_transactions_24h": n_tx, "total_accounts": total, "open_accounts": open_,
        "distance_km": distance, "is_foreign": foreign, "has_2fa": two_fa,
    }
    for k, name in enumerate(CHANNELS):
        columns[f"channel={name}"] = (channel == k).astype(np.int64)
    columns["is_fraud"] = fraud
    return pd.DataFrame(columns)


def _hour_weights() -> np.ndarray:
    """Fewer purchases at night than by day."""
    w = np.array([0.4 if h < 6 else 1.5 if 9 <= h <= 21 else 1.0 for h in range(24)])
    return w / w.sum()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "data", help="output folder")
    args = parser.parse_args()
    df = make()
    problem = SCHEMA.validate_against(df)
    if problem:
        raise SystemExit(f"generated data breaks its schema: {problem}")
    args.out.mkdir(parents=True, exist_ok=True)
    csv, yaml_path = args.out / "fraud.csv", args.out / "fraud.yaml"
    df.to_csv(csv, index=False)
    header = (
        "Schema of sample_models/data/fraud.csv (label column: is_fraud),\n"
        "written by sample_models/make_fraud_data.py: edit the script, not this file."
    )
    yaml_path.write_text(SCHEMA.to_yaml(header), encoding="utf-8")
    print(f"{csv}: {len(df)} rows, {int(df.is_fraud.sum())} fraud; {yaml_path}")


if __name__ == "__main__":
    main()
