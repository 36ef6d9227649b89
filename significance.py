"""Statistics for comparing runs: mean, spread, a 95 % confidence interval, and McNemar's exact test.

No scipy: the t quantiles are tabulated and the binomial test is exact arithmetic.
"""

import math
import statistics

# Two-sided 95 % quantiles of Student's t, t(0.975, df), for df = 1..30.
T_975 = [
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
]


def t_975(df: int) -> float:
    if df < 1:
        raise ValueError("a confidence interval needs at least two values")
    return T_975[df - 1] if df <= len(T_975) else 1.96 + 2.4 / df  # within 0.001 of the true quantile past 30


def mean_std_ci(values):
    """(mean, sample standard deviation, half-width of the 95 % t interval); the last two are None for one value."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None, None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None, None
    std = statistics.stdev(values)
    return mean, std, t_975(len(values) - 1) * std / math.sqrt(len(values))


def mcnemar_exact(reference, other, labels):
    """McNemar's exact test on paired predictions: two-sided binomial p-value over the discordant pairs.

    Returns (only reference right, only other right, p). With no discordant pairs, p is 1.
    """
    if not len(reference) == len(other) == len(labels):
        raise ValueError("paired predictions must cover the same sentences")
    b = sum(r == y and o != y for r, o, y in zip(reference, other, labels))
    c = sum(r != y and o == y for r, o, y in zip(reference, other, labels))
    n = b + c
    if n == 0:
        return b, c, 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return b, c, min(1.0, 2 * tail)
