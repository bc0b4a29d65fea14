"""Bootstrap confidence intervals (stratified, seeded): percentile and BCa, for AUC and C-index.

Resampling: cases are drawn with replacement *within each stratum* (the class for an AUC, so
every replicate has both classes; the site, or the event indicator, for a C-index), with
``numpy.random.default_rng(seed)``, so one seed gives one set of replicates. With replicate
estimates ``theta*_b`` (``b = 1..B``; replicates where the statistic is undefined are dropped and
counted) and level ``1 - alpha``:

- percentile: ``[q(alpha/2), q(1 - alpha/2)]`` of ``theta*``;
- BCa (Efron 1987): bias ``z0 = Phi^-1(#{theta* < theta} / B)``, acceleration from the jackknife
  ``a = sum (m - theta_(i))^3 / (6 (sum (m - theta_(i))^2)^(3/2))`` with ``m`` the mean of the
  leave-one-out estimates ``theta_(i)``; the limits are the ``Phi(z0 + (z0 + z) / (1 - a (z0 + z)))``
  quantiles of ``theta*`` for ``z = Phi^-1(alpha/2), Phi^-1(1 - alpha/2)``.

Federation: a pooled bootstrap needs every case, so it is for pooled or local data. Two federated
forms need only sums: :func:`bootstrap_auc_histograms` resamples the summed class histograms of
:func:`fedrad.learn.federated_eval.score_histograms` on the server (multinomial draws with the class
totals fixed: the stratified bootstrap of binned scores; reveals nothing beyond the histograms);
:func:`site_concordance_replicates` lets each site resample its own cases with a shared seed and
return ``(B, 2)`` within-site pair counts, whose sum over sites gives a site-stratified bootstrap of
the within-site C-index (:func:`combine_concordance_replicates`). Those counts reveal, per
replicate, concordant and comparable pair numbers of a site's resample; send them through secure
aggregation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import norm

from fedrad.errors import InputError, SettingsError
from fedrad.learn._validation import as_binary, as_survival, as_vector
from fedrad.learn.federated_eval import auc_from_histograms
from fedrad.learn.metrics import concordance_counts, concordance_index, roc_auc

METHODS = ("percentile", "bca")


@dataclass(frozen=True)
class BootstrapCI:
    """Point estimate, interval, method, level, replicates used and replicates dropped."""

    estimate: float
    low: float
    high: float
    method: str
    level: float
    n_boot: int
    n_dropped: int


def _check(n_boot: int, level: float, method: str) -> None:
    if n_boot < 10:
        raise SettingsError(f"n_boot must be at least 10, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise SettingsError(f"level must lie in (0, 1), got {level}")
    if method not in METHODS:
        raise SettingsError(f"unknown bootstrap method {method!r}; known: {', '.join(METHODS)}")


def resample_indices(strata: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of one bootstrap sample, drawn with replacement within every stratum."""
    parts = []
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        parts.append(rng.choice(idx, size=idx.size, replace=True))
    return np.concatenate(parts)


def _interval(
    estimate: float,
    reps: np.ndarray,
    level: float,
    method: str,
    jackknife: Callable[[], np.ndarray] | None,
) -> tuple[float, float]:
    alpha = 1.0 - level
    probs = np.array([alpha / 2.0, 1.0 - alpha / 2.0])
    if method == "bca":
        if jackknife is None:
            raise SettingsError("BCa needs the leave-one-out estimates")
        frac = np.clip(np.mean(reps < estimate) + 0.5 * np.mean(reps == estimate), 1e-10, 1 - 1e-10)
        z0 = norm.ppf(frac)
        jk = jackknife()
        jk = jk[np.isfinite(jk)]
        d = jk.mean() - jk
        den = 6.0 * np.sum(d * d) ** 1.5
        a = float(np.sum(d**3) / den) if den > 0 else 0.0
        z = norm.ppf(probs)
        probs = norm.cdf(z0 + (z0 + z) / (1.0 - a * (z0 + z)))
    low, high = np.quantile(reps, probs)
    return float(low), float(high)


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    n: int,
    strata: ArrayLike | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    method: str = "percentile",
) -> BootstrapCI:
    """CI of ``statistic(indices)`` over ``n`` cases resampled within ``strata``.

    ``statistic`` receives an index array into the caller's data (all of ``0..n-1`` for the
    estimate) and returns a float (``nan`` when undefined on a resample; those are dropped).
    """
    _check(n_boot, level, method)
    labels = np.zeros(n) if strata is None else np.asarray(strata).reshape(-1)
    if labels.shape[0] != n:
        raise InputError(f"strata has {labels.shape[0]} labels for {n} cases")
    rng = np.random.default_rng(seed)
    estimate = float(statistic(np.arange(n)))
    reps = np.array([statistic(resample_indices(labels, rng)) for _ in range(n_boot)])
    kept = reps[np.isfinite(reps)]
    if kept.size < 10:
        raise InputError(f"the statistic was defined on only {kept.size} of {n_boot} resamples")

    def jackknife() -> np.ndarray:
        every = np.arange(n)
        return np.array([statistic(np.delete(every, i)) for i in range(n)])

    low, high = _interval(estimate, kept, level, method, jackknife)
    return BootstrapCI(estimate, low, high, method, level, int(kept.size), int(n_boot - kept.size))


def bootstrap_auc(
    y: ArrayLike,
    score: ArrayLike,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    method: str = "percentile",
) -> BootstrapCI:
    """Bootstrap CI of the AUC, resampling within each class."""
    yy = as_binary(y)
    s = as_vector(score, yy.shape[0], name="score")
    return bootstrap_ci(
        lambda i: roc_auc(yy[i], s[i]), yy.shape[0], yy, n_boot, seed, level, method
    )


def bootstrap_cindex(
    time: ArrayLike,
    event: ArrayLike,
    risk: ArrayLike,
    strata: ArrayLike | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    method: str = "percentile",
) -> BootstrapCI:
    """Bootstrap CI of Harrell's C-index, resampling within ``strata`` (default: event status)."""
    t, e = as_survival(time, event)
    r = as_vector(risk, t.shape[0], name="risk")
    groups = e if strata is None else strata
    return bootstrap_ci(
        lambda i: concordance_index(t[i], e[i], r[i]),
        t.shape[0],
        groups,
        n_boot,
        seed,
        level,
        method,
    )


def bootstrap_auc_histograms(
    hist: ArrayLike, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> BootstrapCI:
    """Percentile CI of the binned AUC from summed ``(2, B)`` class histograms (server side)."""
    _check(n_boot, level, "percentile")
    h = np.asarray(hist, dtype=np.float64)
    estimate, _ = auc_from_histograms(h)
    rng = np.random.default_rng(seed)
    totals = h.sum(axis=1).astype(np.int64)
    probs = h / np.maximum(h.sum(axis=1, keepdims=True), 1.0)
    reps = np.array(
        [
            auc_from_histograms(np.vstack([rng.multinomial(totals[c], probs[c]) for c in (0, 1)]))[
                0
            ]
            for _ in range(n_boot)
        ]
    )
    low, high = _interval(estimate, reps, level, "percentile", None)
    return BootstrapCI(estimate, low, high, "percentile", level, n_boot, 0)


def site_concordance_replicates(
    time: ArrayLike, event: ArrayLike, risk: ArrayLike, n_boot: int, seed: int
) -> np.ndarray:
    """A site's ``(n_boot + 1, 2)`` within-site ``[concordant + 0.5 tied, comparable]`` counts.

    Row 0 is the site's own sample, row ``b`` its ``b``-th resample (within event status), drawn
    from ``default_rng(seed)``: every site uses the study's seed (its resamples are independent of
    the others' because its cases are). Reveals pair counts of the site's resamples.
    """
    t, e = as_survival(time, event)
    r = as_vector(risk, t.shape[0], name="risk")
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot + 1, 2))
    out[0] = concordance_counts(t, e, r)
    for b in range(1, n_boot + 1):
        i = resample_indices(e, rng)
        out[b] = concordance_counts(t[i], e[i], r[i])
    return out


def combine_concordance_replicates(
    site_replicates: Sequence[ArrayLike], level: float = 0.95
) -> BootstrapCI:
    """Percentile CI of the within-site C-index from the sites' summed replicate counts."""
    total = np.sum([np.asarray(s, dtype=np.float64) for s in site_replicates], axis=0)
    if total.ndim != 2 or total.shape[1] != 2 or total.shape[0] < 11:
        raise InputError("replicate counts must be (n_boot + 1, 2) with n_boot >= 10")
    with np.errstate(invalid="ignore", divide="ignore"):
        c = total[:, 0] / total[:, 1]
    reps = c[1:][np.isfinite(c[1:])]
    _check(max(reps.size, 0), level, "percentile")
    low, high = _interval(float(c[0]), reps, level, "percentile", None)
    return BootstrapCI(
        float(c[0]),
        low,
        high,
        "percentile",
        level,
        int(reps.size),
        int(total.shape[0] - 1 - reps.size),
    )
