"""Virtual sites from generated feature tables, for federation tests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from fedrad.federation.config import SiteConfig
from fedrad.simulation.harness import write_site_toml
from fedrad.site.policy import SitePolicy


def write_site(
    root: Path,
    site_id: str,
    n: int,
    seed: int,
    *,
    n_features: int = 5,
    shift: float = 0.0,
    single_class: bool = False,
    label_name: str = "label",
    survival: bool = False,
    policy: SitePolicy | None = None,
) -> SiteConfig:
    """A site folder with a feature table whose label depends on the first two features.

    Its ``[policy]`` is ``policy``, by default :meth:`SitePolicy.sandbox` (these virtual sites
    serve method tests of every strategy and privacy mode; the policy tests set their own)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features)) + shift
    latent = 1.5 * X[:, 0] - 1.0 * X[:, 1] + rng.normal(size=n)
    y = np.zeros(n, int) if single_class else (latent > np.median(latent)).astype(int)
    folder = root / site_id
    folder.mkdir(parents=True, exist_ok=True)
    header = ["case_id", *[f"stat_f{j}" for j in range(n_features)], label_name]
    if survival:
        time = rng.exponential(np.exp(-latent))
        event = (rng.random(n) < 0.8).astype(int)
        header = [*header[:-1], "time", "event"]
    with (folder / "features.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for i in range(n):
            row = [f"{site_id}-{i}", *X[i]]
            row += [time[i], event[i]] if survival else [y[i]]
            writer.writerow(row)
    write_site_toml(
        folder,
        site_id,
        feature_table="features.csv",
        policy=SitePolicy.sandbox() if policy is None else policy,
    )
    return SiteConfig.from_file(folder / "site.toml")
