"""Confidence intervals of a mean over a few seeds (Student t), without scipy.

A method compared over 3-5 seeds needs the t distribution, not the normal:
with 3 seeds the 95% interval is `mean +- 4.303 s / sqrt(3)`, not
`+- 1.96 s / sqrt(3)`.

The t quantile is found by bisection on the closed-form distribution
function for an integer number of degrees of freedom nu (Abramowitz and
Stegun, "Handbook of Mathematical Functions", 26.7.3 and 26.7.4): with
`theta = atan(t / sqrt(nu))`, `A(t | nu) = P(|T| <= t)` is

    nu = 1:     2 theta / pi
    nu odd:     2 / pi * (theta + sin(theta) * (cos(theta) + 2/3 cos^3(theta) + ...
                          + (2 * 4 ... (nu - 3)) / (1 * 3 ... (nu - 2)) cos^(nu - 2)(theta)))
    nu even:    sin(theta) * (1 + 1/2 cos^2(theta) + (1 * 3) / (2 * 4) cos^4(theta) + ...
                              + (1 * 3 ... (nu - 3)) / (2 * 4 ... (nu - 2)) cos^(nu - 2)(theta))

Example:

>>> round(student_t_quantile(0.975, 2), 3)
4.303
>>> mean, low, high = mean_confidence_interval([1.0, 2.0, 3.0])
>>> round(mean, 3), round(low, 3), round(high, 3)   # 2 -+ 4.303 * 1 / sqrt(3)
(2.0, -0.484, 4.484)
"""

import math


def _two_sided_probability(theta, dof):
    """`P(|T| <= sqrt(dof) tan(theta))` for T ~ Student t with `dof` (int) degrees of freedom."""
    sine, cosine = math.sin(theta), math.cos(theta)
    if dof % 2 == 1:
        if dof == 1:
            return 2.0 * theta / math.pi
        term, total = cosine, cosine  # cos(theta), then 2/3 cos^3, (2*4)/(3*5) cos^5, ...
        for k in range(1, (dof - 3) // 2 + 1):
            term *= (2.0 * k) / (2.0 * k + 1.0) * cosine * cosine
            total += term
        return 2.0 / math.pi * (theta + sine * total)
    term, total = 1.0, 1.0  # 1, then 1/2 cos^2, (1*3)/(2*4) cos^4, ...
    for k in range(1, (dof - 2) // 2 + 1):
        term *= (2.0 * k - 1.0) / (2.0 * k) * cosine * cosine
        total += term
    return sine * total


def student_t_quantile(probability, dof):
    """The `probability` quantile of Student's t with `dof` degrees of freedom.

    Args:
        probability: in (0, 1), e.g. 0.975 for a two-sided 95% interval.
        dof: a positive integer.

    Returns:
        `t` with `P(T <= t) = probability` (to about 1e-12).
    """
    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability must be in (0, 1), got {probability}.")
    if int(dof) != dof or dof < 1:
        raise ValueError(f"dof must be a positive integer, got {dof}.")
    dof = int(dof)
    if probability == 0.5:
        return 0.0
    target = abs(2.0 * probability - 1.0)  # P(|T| <= t)
    low, high = 0.0, math.pi / 2.0  # theta; A(theta) rises from 0 to 1
    for _ in range(200):
        middle = 0.5 * (low + high)
        if _two_sided_probability(middle, dof) < target:
            low = middle
        else:
            high = middle
    t = math.sqrt(dof) * math.tan(0.5 * (low + high))
    return t if probability > 0.5 else -t


def mean_confidence_interval(values, confidence=0.95):
    """Mean of `values` and its two-sided Student-t confidence interval.

    Args:
        values: the per-seed results (NaN entries are dropped).
        confidence: the interval's coverage.

    Returns:
        `(mean, low, high)`; `low` and `high` are NaN with fewer than two
        values, and the mean is NaN with none.
    """
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return math.nan, math.nan, math.nan
    mean = sum(finite) / len(finite)
    if len(finite) < 2:
        return mean, math.nan, math.nan
    half = student_t_quantile(0.5 + confidence / 2.0, len(finite) - 1) * \
        standard_deviation(finite) / math.sqrt(len(finite))
    return mean, mean - half, mean + half


def standard_deviation(values):
    """Sample standard deviation (n - 1 in the denominator); NaN below two values."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if len(finite) < 2:
        return math.nan
    mean = sum(finite) / len(finite)
    return math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))
