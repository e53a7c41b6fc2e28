"""Reference KL of two wrapped normals on [0, 1): adaptive quadrature over one period, densities as wide image sums.

numpy/scipy only, so it shares no code with :mod:`matinvent.diffusion.wrapped_normal`.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import integrate

IMAGES = np.arange(-12, 13)  # |x − mean| < 3 in every call below: 9 images either side to spare


def wrapped_normal_logpdf(x: float, mean: float, std: float) -> float:
    """log Σ_k N(x + k; mean, std²)."""
    e = -0.5 * ((x - mean + IMAGES) / std) ** 2
    top = e.max()
    return float(top + np.log(np.exp(e - top).sum())) - math.log(std * math.sqrt(2.0 * math.pi))


def wrapped_normal_kl_quad(mean_p: float, mean_q: float, std: float) -> float:
    """KL(p ‖ q) = ∫ p (e^{−ℓ} − 1 + ℓ) dx, ℓ = log p − log q, over the period centred on ``mean_p``.

    That is ∫ p ℓ, since ∫ (q − p) = 0, but with a non-negative integrand that keeps its digits when
    p ≈ q (wide σ, KL down to 1e-17). The period is split where the integrand bends: both peaks with
    their ±6σ shoulders and q's antipode (a corner of log q of width ~σ² for small σ).
    """

    def integrand(x: float) -> float:
        lp, lq = wrapped_normal_logpdf(x, mean_p, std), wrapped_normal_logpdf(x, mean_q, std)
        ell = lp - lq
        if ell > -30.0:
            return math.exp(lp) * (math.expm1(-ell) + ell)
        return math.exp(lq) - math.exp(lp) + math.exp(lp) * ell  # q ≫ p: no cancellation left to guard

    lo, hi = mean_p - 0.5, mean_p + 0.5
    mq = mean_q - math.floor(mean_q - lo)  # q's mean moved into [lo, hi)
    marks = (mean_p, mq, mq + 0.5, mq - 0.5, *(m + s * 6 * std for m in (mean_p, mq) for s in (-1, 1)))
    points = sorted({x for x in marks if lo < x < hi})
    value, _ = integrate.quad(integrand, lo, hi, points=points, epsabs=0.0, epsrel=1e-10, limit=200)
    return value
