"""The paired difference between a baseline and another setting, with a bootstrap interval.

Both settings score the same prompts with the same seeds, so the scores pair up, and the
question is the mean of the per-pair differences. Its interval is a percentile bootstrap
over the pairs: resample the pairs with replacement, take the mean difference of each
resample, and read the interval from the quantiles of those means.
"""

import numpy as np


def paired_difference(baseline, other, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Mean difference `other - baseline` over pairs, its percentile-bootstrap interval and more.

    Returns mean_baseline, mean (of `other`), diff, low and high (the `level` interval of the
    mean difference), share_higher (the share of pairs in which `other` is strictly higher)
    and n (the number of pairs). The same seed gives the same interval.
    """
    a = np.asarray(baseline, dtype=np.float64)
    b = np.asarray(other, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"paired scores must be two flat lists of one length; got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("no pairs to compare: both score lists are empty")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired scores must be finite numbers (a NaN or infinity is among them)")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, e.g. 0.95; got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1; got {n_boot}")
    d = b - a
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    step = max(1, 2_000_000 // d.size)  # resample in blocks that keep memory small
    for start in range(0, n_boot, step):
        stop = min(n_boot, start + step)
        means[start:stop] = d[rng.integers(0, d.size, size=(stop - start, d.size))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return {
        "mean_baseline": float(a.mean()),
        "mean": float(b.mean()),
        "diff": float(d.mean()),
        "low": float(low),
        "high": float(high),
        "share_higher": float((d > 0).mean()),
        "n": int(d.size),
    }

