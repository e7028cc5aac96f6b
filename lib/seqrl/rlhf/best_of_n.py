r"""Best-of-n: the simplest way to use a reward model, and the cleanest view of over-optimisation.

Draw :math:`n` responses from the reference policy, keep the one the proxy reward :math:`\hat r`
scores highest. No training, and the optimisation pressure is one number, :math:`n`. Gao, Schulman
and Hilton (2022) plot the proxy and the gold reward of best-of-n against
:math:`d = \sqrt{\mathrm{KL}(\pi_{\text{BoN}_n}\,\|\,\pi_{\text{ref}})}`, using the analytic

.. math:: \mathrm{KL}_{\text{bon}}(n) = \log n - \frac{n-1}{n},

which Beirami et al. (2024) show is an **upper bound**, tight only when no single response carries
noticeable probability. Three tools here:

* **Pools and order statistics** (:func:`best_of_n_curve`): from a pool of :math:`m \ge n` samples
  sorted by proxy (ascending, :math:`y_{(1)} \dots y_{(m)}`), the expected score of best-of-:math:`n`
  over all :math:`\binom mn` subsets of the pool is

  .. math:: \widehat{\mathbb E}[s(\text{BoN}_n)] = \sum_{i=n}^{m} \frac{\binom{i-1}{n-1}}{\binom mn}\, s(y_{(i)}),

  (the best of a subset is :math:`y_{(i)}` for exactly :math:`\binom{i-1}{n-1}` subsets), an
  unbiased estimate that uses every sample for every :math:`n`. Several independent pools give a
  standard error. :func:`best_of_n_groups` is the literal version (split a pool into groups of
  :math:`n`, keep each group's best), for checking.
* **The exact distribution** (:func:`best_of_n_logprobs`) when responses can be enumerated
  (:mod:`seqrl.rlhf.exact`): with :math:`F` the CDF of :math:`\pi_{\text{ref}}` with responses ordered
  by proxy, the best of :math:`n` independent draws is :math:`y` with probability

  .. math:: P(\text{BoN}_n = y) = F(y)^n - F(y^-)^n,

  where :math:`F(y^-)` is the mass strictly below :math:`y`. Responses that tie on the proxy share
  their group's :math:`F(y)^n - F(y^-)^n` in proportion to :math:`\pi_{\text{ref}}` (ties broken uniformly).
* its **exact KL** (:func:`best_of_n_kl`), to set against the bound.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..models.completions import encode_prompts, sample_completions
from ..models.gpt import GPT
from ..text.tokenizer import Tokenizer
from .exact import kl_divergence
from .reinforce import RewardFn

__all__ = [
    "best_of_n_kl_bound",
    "order_statistic_weights",
    "best_of_n_expectation",
    "best_of_n_groups",
    "BestOfNCurve",
    "best_of_n_curve",
    "fit_best_of_n_gain",
    "ResponsePools",
    "sample_pools",
    "best_of_n_logprobs",
    "best_of_n_kl",
]


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    return int(n)


def best_of_n_kl_bound(n: int | Sequence[int] | np.ndarray) -> float | np.ndarray:
    r""":math:`\log n - (n-1)/n`: the analytic KL of best-of-:math:`n` to the reference, an upper bound
    (exact only when every single response has vanishing probability). 0 at :math:`n = 1`."""
    if np.ndim(n) == 0:
        n = _check_n(n)
        return math.log(n) - (n - 1) / n
    ns = np.asarray([_check_n(k) for k in n], dtype=np.float64)
    return np.log(ns) - (ns - 1) / ns


# ---------------------------------------------------------------------------- pools of samples
def order_statistic_weights(m: int, n: int) -> torch.Tensor:
    r"""``(m,)`` float64 weights :math:`w_i = \binom{i-1}{n-1}/\binom mn` (``i = 1..m``, ascending order):
    the probability that the best of a uniformly random ``n``-subset of ``m`` sorted items is item ``i``.
    They sum to 1; zero below ``i = n``. Computed with log-gamma (no overflow for large pools)."""
    n = _check_n(n)
    if n > m:
        raise ValueError(f"best-of-{n} needs a pool of at least {n} samples, got {m}")
    i = torch.arange(1, m + 1, dtype=torch.float64)
    log_w = (torch.lgamma(i) - math.lgamma(n) - torch.lgamma((i - n + 1).clamp(min=1))
             - (math.lgamma(m + 1) - math.lgamma(n + 1) - math.lgamma(m - n + 1)))
    return torch.where(i >= n, log_w.exp(), torch.zeros_like(log_w))


def _as_pools(values: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    values = torch.as_tensor(values).detach().double().cpu()
    if values.dim() == 1:
        values = values.unsqueeze(0)
    if values.dim() != 2 or values.shape[1] == 0:
        raise ValueError(f"{name} must be (pools, pool_size) or (pool_size,), got shape {tuple(values.shape)}")
    return values


def best_of_n_expectation(select_by: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    r"""Unbiased :math:`\mathbb E[v(\text{BoN}_n)]` for each pool: ``select_by``, ``values (P, m)`` -> ``(P,)``.

    Sorts each pool by ``select_by`` (the proxy) and weights the ``values`` (gold, proxy, length, ...)
    with :func:`order_statistic_weights`. Items that tie on ``select_by`` get their tie group's mean
    value: that is exactly the expectation when ties are broken uniformly at random.
    """
    select_by, values = _as_pools(select_by, "select_by"), _as_pools(values, "values")
    if select_by.shape != values.shape:
        raise ValueError(f"select_by {tuple(select_by.shape)} and values {tuple(values.shape)} must have one shape")
    keys, order = torch.sort(select_by, dim=1, stable=True)
    ranked = values.gather(1, order)
    # Tie groups: ids 0, 1, ... along each sorted row; replace values by their group's mean.
    group = torch.cat([torch.zeros_like(keys[:, :1], dtype=torch.long), (keys[:, 1:] != keys[:, :-1]).long().cumsum(1)], dim=1)
    sums = torch.zeros_like(ranked).scatter_add_(1, group, ranked)
    counts = torch.zeros_like(ranked).scatter_add_(1, group, torch.ones_like(ranked))
    ranked = sums.gather(1, group) / counts.gather(1, group)
    return ranked @ order_statistic_weights(ranked.shape[1], n)


def best_of_n_groups(select_by: torch.Tensor, values: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    r"""The literal best-of-:math:`n`: shuffle each pool, split it into :math:`\lfloor m/n \rfloor` groups of
    ``n``, and return the ``values`` of each group's best (by ``select_by``): ``(P, m // n)``.
    Unbiased too, but it throws away most of the pool for large ``n``: prefer :func:`best_of_n_expectation`."""
    n = _check_n(n)
    select_by, values = _as_pools(select_by, "select_by"), _as_pools(values, "values")
    if select_by.shape != values.shape:
        raise ValueError(f"select_by {tuple(select_by.shape)} and values {tuple(values.shape)} must have one shape")
    P, m = values.shape
    if n > m:
        raise ValueError(f"best-of-{n} needs a pool of at least {n} samples, got {m}")
    generator = torch.Generator().manual_seed(seed)
    shuffle = torch.stack([torch.randperm(m, generator=generator) for _ in range(P)])[:, : (m // n) * n]
    groups_key = select_by.gather(1, shuffle).view(P, m // n, n)
    groups_val = values.gather(1, shuffle).view(P, m // n, n)
    best = groups_key.argmax(dim=2, keepdim=True)  # random order, so ties are broken at random
    return groups_val.gather(2, best).squeeze(2)


@dataclass
class BestOfNCurve:
    """Best-of-n statistics for each ``n``: the mean over pools of each score, and its standard error."""

    ns: list[int]
    kl_bound: np.ndarray  # log n - (n-1)/n
    mean: dict[str, np.ndarray] = field(default_factory=dict)
    stderr: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def sqrt_kl(self) -> np.ndarray:
        r""":math:`d = \sqrt{\mathrm{KL}_{\text{bon}}}`, Gao et al.'s x-axis (from the bound)."""
        return np.sqrt(self.kl_bound)

    def best_n(self, name: str) -> int:
        """The ``n`` at which score ``name`` is highest."""
        return self.ns[int(np.argmax(self.mean[name]))]


def best_of_n_curve(select_by: torch.Tensor, scores: dict[str, torch.Tensor], ns: Sequence[int]) -> BestOfNCurve:
    r"""Best-of-``n`` for every ``n`` in ``ns``, selecting by ``select_by (P, m)`` (the proxy) and reporting
    every score in ``scores`` (``name -> (P, m)``, e.g. ``{"proxy": proxy, "gold": gold}``).

    Each of the ``P`` pools gives an unbiased estimate (:func:`best_of_n_expectation`); the curve is
    their mean, with standard error :math:`s/\sqrt P` across pools (NaN for a single pool).
    """
    ns = [_check_n(n) for n in ns]
    if not ns:
        raise ValueError("need at least one n")
    if not scores:
        raise ValueError("need at least one score to report")
    pools = _as_pools(select_by, "select_by").shape[0]
    curve = BestOfNCurve(ns=ns, kl_bound=best_of_n_kl_bound(ns))
    for name, values in scores.items():
        per_pool = torch.stack([best_of_n_expectation(select_by, values, n) for n in ns])  # (len(ns), P)
        curve.mean[name] = per_pool.mean(dim=1).numpy()
        curve.stderr[name] = (per_pool.std(dim=1) / math.sqrt(pools)).numpy() if pools > 1 else np.full(len(ns), np.nan)
    return curve


def fit_best_of_n_gain(d: np.ndarray, gain: np.ndarray) -> tuple[float, float, float]:
    r"""Least-squares fit of Gao et al.'s best-of-n form :math:`R(d) = d(\alpha - \beta d)` (no intercept)
    to gold gains over the reference :math:`R` at :math:`d = \sqrt{\mathrm{KL}}`.

    Returns ``(alpha, beta, r_squared)``; the fitted peak is at :math:`d^* = \alpha / 2\beta`.
    """
    d, gain = np.asarray(d, dtype=np.float64), np.asarray(gain, dtype=np.float64)
    if d.shape != gain.shape or d.ndim != 1 or len(d) < 2:
        raise ValueError(f"need two 1-d arrays of equal length >= 2, got shapes {d.shape} and {gain.shape}")
    design = np.stack([d, -d * d], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(design, gain, rcond=None)
    residual = gain - design @ np.array([alpha, beta])
    total = ((gain - gain.mean()) ** 2).sum()
    r_squared = 1.0 - (residual**2).sum() / total if total > 0 else float("nan")
    return float(alpha), float(beta), float(r_squared)


@dataclass
class ResponsePools:
    """``P`` pools of ``m`` responses each: ``texts[p][j]`` is response ``j`` of pool ``p`` (to ``prompts[p]``)."""

    prompts: list[str]
    texts: list[list[str]]
    finished: torch.Tensor  # (P, m) bool

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.finished.shape)

    def score(self, reward: RewardFn) -> torch.Tensor:
        """``(P, m)`` rewards of every response under ``reward`` (any :data:`~seqrl.rlhf.RewardFn`)."""
        P, m = self.shape
        flat_prompts = [p for p in self.prompts for _ in range(m)]
        flat_texts = [t for pool in self.texts for t in pool]
        scores = reward(flat_prompts, flat_texts, self.finished.reshape(-1))
        return torch.as_tensor(scores).detach().double().cpu().view(P, m)


@torch.no_grad()
def sample_pools(
    model: GPT,
    tokenizer: Tokenizer,
    prompts: list[str],
    pool_size: int,
    *,
    temperature: float = 1.0,
    max_new_tokens: int | None = None,
    seed: int = 0,
) -> ResponsePools:
    """``pool_size`` responses from ``model`` for each prompt (one pool per prompt; repeat a prompt for
    several independent pools, e.g. ``[""] * 8`` for unconditional reviews). Same seed, same pools."""
    if not prompts:
        raise ValueError("need at least one prompt (one pool per prompt)")
    if not isinstance(pool_size, int) or pool_size < 1:
        raise ValueError(f"pool_size must be a positive int, got {pool_size!r}")
    if max_new_tokens is None:
        max_new_tokens = model.config.block_size - encode_prompts(tokenizer, list(prompts))[0].shape[1]
    generator = torch.Generator(device=model.device).manual_seed(seed)
    texts, finished = [], []
    for prompt in prompts:
        batch = sample_completions(model, tokenizer, [prompt] * pool_size, max_new_tokens, temperature, generator=generator)
        texts.append(batch.texts)
        finished.append(batch.finished.cpu())
    return ResponsePools(list(prompts), texts, torch.stack(finished))


# ---------------------------------------------------------------------------- exact, enumerable responses
def best_of_n_logprobs(ref_logprobs: torch.Tensor, proxy: torch.Tensor, n: int) -> torch.Tensor:
    r"""Exact log-probabilities of best-of-``n`` over enumerated responses:
    :math:`P(\text{BoN}_n = y) = \frac{\pi_{\text{ref}}(y)}{\pi_{\text{ref}}(G_y)}\big(F(y)^n - F(y^-)^n\big)`,

    with :math:`F(y) = \pi_{\text{ref}}(\hat r \le \hat r(y))`, :math:`F(y^-) = \pi_{\text{ref}}(\hat r < \hat r(y))` and
    :math:`G_y` the responses that tie with :math:`y` (:math:`G_y = \{y\}` without ties).

    Args:
        ref_logprobs: ``(..., K)`` complete reference log-probabilities (rows sum to 1; on the
            addition task use :func:`~seqrl.rlhf.with_leftover` and give the leftover a proxy score).
        proxy: ``(..., K)`` proxy rewards of the same responses.
        n: the number of samples.

    Returns:
        ``(..., K)`` float64 log-probabilities (``-inf`` where the probability is 0).
    """
    n = _check_n(n)
    if ref_logprobs.shape != proxy.shape:
        raise ValueError(f"ref_logprobs {tuple(ref_logprobs.shape)} and proxy {tuple(proxy.shape)} must have one shape")
    logp = ref_logprobs.detach().double().cpu()
    p = logp.exp()
    total = p.sum(dim=-1, keepdim=True)
    if not torch.allclose(total, torch.ones_like(total), atol=1e-4):
        raise ValueError("ref_logprobs must be a complete distribution (rows summing to 1, off by up to "
                         f"{float((total - 1).abs().max()):.2e}); append the leftover mass with with_leftover() and score it")
    p = p / total
    proxy = proxy.detach().double().cpu()
    keys, order = torch.sort(proxy, dim=-1)
    cdf = torch.cat([torch.zeros_like(p[..., :1]), p.gather(-1, order).cumsum(-1)], dim=-1).clamp(max=1.0)  # (..., K+1)
    upper = cdf.gather(-1, torch.searchsorted(keys, proxy.contiguous(), right=True))  # F(y): mass with proxy <= r(y)
    lower = cdf.gather(-1, torch.searchsorted(keys, proxy.contiguous(), right=False))  # F(y-): mass strictly below
    group = upper - lower
    share = torch.where(group > 0, p / group.clamp(min=1e-300), torch.zeros_like(p))
    prob = share * (upper.pow(n) - lower.pow(n))
    return torch.where(prob > 0, prob.log(), torch.full_like(prob, -math.inf))


def best_of_n_kl(ref_logprobs: torch.Tensor, proxy: torch.Tensor, n: int) -> torch.Tensor:
    r"""Exact :math:`\mathrm{KL}(\pi_{\text{BoN}_n}\,\|\,\pi_{\text{ref}})` over enumerated responses, ``(..., K)`` -> ``(...)``.
    Never above :func:`best_of_n_kl_bound`; well below it when single responses carry real probability."""
    logp = ref_logprobs.detach().double().cpu()
    logp = logp - logp.exp().sum(dim=-1, keepdim=True).log()  # the same normalisation as best_of_n_logprobs
    return kl_divergence(best_of_n_logprobs(ref_logprobs, proxy, n), logp)
