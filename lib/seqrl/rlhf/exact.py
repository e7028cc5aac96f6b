r"""Exact answers on an enumerable task: :math:`\pi(y \mid x)` for every response, exact KL, and the
closed-form optimum of the KL-regularised objective.

On the addition task a response is at most three digits and ``<eos>``, so the 1,110 answers can be
scored in one batched forward pass per prompt. Everything a policy-gradient method only *estimates*
from samples can then be computed exactly: the expected gold reward, the KL to the reference, and
the target of RLHF's objective

.. math::
    \max_\pi\; \mathbb E_{y\sim\pi}[r(x,y)] - \beta\,\mathrm{KL}(\pi\,\|\,\pi_{\text{ref}}),
    \qquad \pi^*_\beta(y\mid x) = \frac{\pi_{\text{ref}}(y\mid x)\,e^{r(x,y)/\beta}}{Z_\beta(x)},
    \qquad Z_\beta(x) = \sum_y \pi_{\text{ref}}(y\mid x)\, e^{r(x,y)/\beta}.

**The leftover mass.** A policy can also write responses outside the list (``"1+"``, an empty
answer, four digits, no ``<eos>``). Their total probability, :func:`leftover_mass`
:math:`= 1 - \sum_y \pi(y\mid x)`, is kept as one extra outcome *anything else*
(:func:`with_leftover` appends it as the last column). Every such response earns the same gold
reward, -1 (it is not a finished number of at most three digits), so lumping them loses nothing for
the reward or for :math:`\pi^*_\beta`, which scales all of them by the same :math:`e^{-1/\beta}`.
For the KL, lumping is a coarse-graining: the KL over *answers + anything else* is a lower bound on
the KL over all token sequences (data-processing inequality), equal to it when the leftover mass is
zero or when the two policies spread it alike. For the trained tiny models the leftover is below
:math:`10^{-3}`.

Shapes: ``P`` prompts, ``A`` answers, ``K`` outcomes (``A`` or ``A + 1`` with the leftover).
All results are float64 on the CPU: they are ground truth, not training signals.
"""
from __future__ import annotations

import math

import torch

from ..models.completions import encode_prompts
from ..models.gpt import GPT
from ..models.scoring import logprobs as score_logprobs
from ..text.batching import pad_batch
from ..text.arithmetic import AdditionTask
from ..text.tokenizer import Tokenizer
from ..utils import evaluating

__all__ = [
    "AdditionOracle",
    "answer_logprobs",
    "leftover_mass",
    "with_leftover",
    "gold_rewards",
    "kl_divergence",
    "kl_optimal_policy",
    "log_partition",
    "expected_reward",
    "regularised_objective",
]

_ROUND_OFF = 1e-12
_ROWS_PER_PASS = 40_000  # sequences per forward pass (about 36 prompts × 1,110 answers)


@torch.no_grad()
def answer_logprobs(
    model: GPT,
    tokenizer: Tokenizer,
    prompts: list[str],
    answers: list[str],
    temperature: float = 1.0,
) -> torch.Tensor:
    r"""Exact :math:`\log\pi(y\,\langle\text{eos}\rangle \mid x)` for every prompt and every answer.

    .. math:: \log\pi(y \mid x) = \sum_{t=1}^{|y|+1} \log\pi(y_t \mid x, y_{<t}), \qquad y_{|y|+1} = \langle\text{eos}\rangle

    Each row ``<bos> prompt answer <eos>`` is scored with :func:`seqrl.models.logprobs`, the same
    function (and ``temperature``) that training and the reference use, so these numbers are the
    distribution :func:`~seqrl.models.sample_completions` draws from.

    Args:
        model: the policy.
        tokenizer: its tokenizer (with ``<eos>``).
        prompts: ``P`` prompts, e.g. ``"12+34="``.
        answers: ``A`` distinct response strings without ``<eos>`` (``AdditionTask.all_answers()``).
        temperature: :math:`\tau > 0` of the sampling distribution.

    Returns:
        ``(P, A)`` float64 log-probabilities on the CPU; each row sums (in probability) to at most 1.
    """
    if not prompts:
        raise ValueError("need at least one prompt")
    if not answers:
        raise ValueError("need at least one answer")
    if len(set(answers)) != len(answers):
        raise ValueError("answers must be distinct, or their probabilities would be counted twice")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 to score answers, got {temperature}")
    device = model.device
    answer_tokens, answer_mask = pad_batch([tokenizer.encode(a, eos=True) for a in answers], tokenizer.pad_id, side="right")
    prompt_tokens, prompt_mask = encode_prompts(tokenizer, prompts, "cpu")  # (P, L) left-padded
    A, N = answer_tokens.shape
    L = prompt_tokens.shape[1]
    if L + N > model.config.block_size:
        raise ValueError(f"prompt ({L}) + answer ({N}) tokens exceed the model's block_size {model.config.block_size}")
    chunk = max(1, _ROWS_PER_PASS // A)  # prompts per forward pass
    rows = []
    with evaluating(model):  # exact numbers: no dropout
        for start in range(0, len(prompts), chunk):
            p_tok, p_mask = prompt_tokens[start : start + chunk], prompt_mask[start : start + chunk]
            n = p_tok.shape[0]
            sequences = torch.cat([p_tok.repeat_interleave(A, 0), answer_tokens.repeat(n, 1)], dim=1)  # (n*A, L+N)
            attention = torch.cat([p_mask.repeat_interleave(A, 0), answer_mask.repeat(n, 1)], dim=1)
            token_lp = score_logprobs(model, sequences.to(device), attention.to(device), L, temperature)  # (n*A, N)
            sequence_lp = (token_lp.double() * answer_mask.repeat(n, 1).to(device)).sum(dim=1)
            rows.append(sequence_lp.view(n, A).cpu())
    return torch.cat(rows)  # (P, A)


def leftover_mass(logprobs: torch.Tensor) -> torch.Tensor:
    r""":math:`1 - \sum_y \pi(y\mid x)`: the probability of responses outside the enumerated list.

    ``logprobs (..., A)`` -> ``(...)`` float64. A mass below the round-off of the input's dtype
    (``1e-12`` for float64, ``1e-6`` otherwise) counts as exactly 0, so a complete distribution gets
    no spurious extra outcome.
    """
    round_off = _ROUND_OFF if logprobs.dtype == torch.float64 else 1e-6
    leftover = 1.0 - logprobs.double().exp().sum(dim=-1)
    return torch.where(leftover > round_off, leftover, torch.zeros_like(leftover))


def with_leftover(logprobs: torch.Tensor) -> torch.Tensor:
    """Append the leftover mass as one last outcome, *anything else*: ``(..., A)`` -> ``(..., A + 1)``,
    a complete distribution (rows sum to 1)."""
    logprobs = logprobs.double()
    return torch.cat([logprobs, leftover_mass(logprobs).log().unsqueeze(-1)], dim=-1)


def gold_rewards(task: AdditionTask, prompts: list[str], answers: list[str], leftover_reward: float = -1.0) -> torch.Tensor:
    r"""``(P, A + 1)`` gold rewards :math:`r(x, y)` of every answer, and ``leftover_reward`` for the
    *anything else* column of :func:`with_leftover` (the task's gold gives every such response -1)."""
    rewards = torch.tensor([[task.gold(p, a, True) for a in answers] for p in prompts], dtype=torch.float64)
    return torch.cat([rewards, torch.full((len(prompts), 1), float(leftover_reward), dtype=torch.float64)], dim=1)


def _complete(logprobs: torch.Tensor, name: str, tol: float = 1e-4) -> torch.Tensor:
    logprobs = logprobs.double()
    total = logprobs.exp().sum(dim=-1)
    if not torch.allclose(total, torch.ones_like(total), atol=tol):
        worst = float((total - 1).abs().max())
        raise ValueError(f"{name} must be a complete distribution (rows summing to 1, off by up to {worst:.2e}); "
                         "add the leftover mass with with_leftover()")
    return logprobs


def _check_pair(a: torch.Tensor, b: torch.Tensor, names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names} must have one shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def kl_divergence(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    r"""Exact :math:`\mathrm{KL}(p\,\|\,q) = \sum_k p_k (\log p_k - \log q_k)` over the last dimension.

    Rows may sum to less than one (answers without the leftover): the missing mass of each is added
    as one more outcome, exactly as :func:`with_leftover` does, so passing ``(P, A)`` or
    ``(P, A + 1)`` gives the same number. Terms with :math:`p_k = 0` count 0.

    ``logp, logq (..., K)`` -> ``(...)`` float64.
    """
    _check_pair(logp, logq, "logp and logq")
    logp, logq = with_leftover(logp), with_leftover(logq)
    p = logp.exp()
    terms = torch.where(p > 0, p * (logp - logq), torch.zeros_like(p))
    return terms.sum(dim=-1)


def _check_beta(beta: float) -> float:
    if not (isinstance(beta, (int, float)) and beta > 0 and not math.isnan(beta)):
        raise ValueError(f"beta must be a positive number (beta -> 0 is the argmax, beta -> inf the reference), got {beta!r}")
    return float(beta)


def log_partition(ref_logprobs: torch.Tensor, rewards: torch.Tensor, beta: float) -> torch.Tensor:
    r""":math:`\log Z_\beta(x) = \log\sum_y \pi_{\text{ref}}(y\mid x)\,e^{r(x,y)/\beta}` (log-sum-exp).

    ``ref_logprobs`` must be complete (rows sum to 1; see :func:`with_leftover`); ``(..., K)`` -> ``(...)``.
    """
    beta = _check_beta(beta)
    _check_pair(ref_logprobs, rewards, "ref_logprobs and rewards")
    ref_logprobs = _complete(ref_logprobs, "ref_logprobs")
    return torch.logsumexp(ref_logprobs + rewards.double() / beta, dim=-1)


def kl_optimal_policy(ref_logprobs: torch.Tensor, rewards: torch.Tensor, beta: float) -> torch.Tensor:
    r"""The maximiser of :math:`\mathbb E_\pi[r] - \beta\,\mathrm{KL}(\pi\|\pi_{\text{ref}})`, in log space:

    .. math:: \log\pi^*_\beta(y\mid x) = \log\pi_{\text{ref}}(y\mid x) + r(x,y)/\beta - \log Z_\beta(x).

    Its value is :math:`\beta\log Z_\beta(x)` and its KL to the reference
    :math:`\mathbb E_{\pi^*_\beta}[r]/\beta - \log Z_\beta(x)`. As :math:`\beta\to\infty` it is
    :math:`\pi_{\text{ref}}`; as :math:`\beta\to 0` it is :math:`\pi_{\text{ref}}` restricted to the
    answers of highest reward and renormalised.

    Args:
        ref_logprobs: ``(..., K)`` complete reference log-probabilities (:func:`with_leftover`).
        rewards: ``(..., K)`` rewards of the same outcomes.
        beta: :math:`\beta > 0`.

    Returns:
        ``(..., K)`` float64 log-probabilities of :math:`\pi^*_\beta`.
    """
    log_z = log_partition(ref_logprobs, rewards, beta)
    return ref_logprobs.double() + rewards.double() / beta - log_z.unsqueeze(-1)


def expected_reward(logprobs: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    r""":math:`\mathbb E_{y\sim\pi}[r(x,y)] = \sum_y \pi(y\mid x)\,r(x,y)`: ``(..., K)`` -> ``(...)``.

    With complete log-probabilities and :func:`gold_rewards` this is the exact expected gold; with
    ``rewards == 1`` as a 0/1 indicator it is the exact sampled accuracy.
    """
    _check_pair(logprobs, rewards, "logprobs and rewards")
    return (logprobs.double().exp() * rewards.double()).sum(dim=-1)


def regularised_objective(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, rewards: torch.Tensor, beta: float) -> torch.Tensor:
    r""":math:`J_\beta(\pi) = \mathbb E_\pi[r] - \beta\,\mathrm{KL}(\pi\,\|\,\pi_{\text{ref}})` per prompt,
    ``(..., K)`` -> ``(...)``; :func:`kl_optimal_policy` maximises it, with maximum :math:`\beta\log Z_\beta`."""
    beta = _check_beta(beta)
    return expected_reward(logprobs, rewards) - beta * kl_divergence(logprobs, ref_logprobs)


class AdditionOracle:
    r"""Exact quantities of any policy on a fixed set of addition prompts, against a fixed reference.

    Built once from the reference (1,110 answers per prompt, one forward pass per ~36 prompts);
    :meth:`report` then scores a policy and returns its exact accuracy, expected gold,
    :math:`\mathrm{KL}(\pi\|\pi_{\text{ref}})`, leftover mass and, for a given :math:`\beta`,
    :math:`\mathrm{KL}(\pi\|\pi^*_\beta)`. All are means over the prompts.

    Attributes:
        answers: the ``A`` answer strings; outcome ``A`` (the last column) is *anything else*.
        rewards: ``(P, A + 1)`` gold rewards (:func:`gold_rewards`).
        correct: ``(P, A + 1)`` 1.0 on the exact sum, else 0.0.
        ref_logprobs: ``(P, A + 1)`` complete reference log-probabilities.
    """

    def __init__(
        self, task: AdditionTask, reference: GPT, tokenizer: Tokenizer, prompts: list[str], temperature: float = 1.0
    ) -> None:
        self.task, self.tokenizer, self.prompts, self.temperature = task, tokenizer, list(prompts), temperature
        self.answers = task.all_answers()
        self.rewards = gold_rewards(task, self.prompts, self.answers)
        self.correct = (self.rewards == 1.0).double()
        self._reference = (type(reference), [p.detach().clone() for p in reference.parameters()])
        self.ref_logprobs = with_leftover(answer_logprobs(reference, tokenizer, self.prompts, self.answers, temperature))

    def _is_reference(self, model: GPT) -> bool:
        kind, params = self._reference
        mine = list(model.parameters())
        return type(model) is kind and len(mine) == len(params) and all(
            a.shape == b.shape and torch.equal(a.detach().to(b.device), b) for a, b in zip(mine, params))

    def policy_logprobs(self, model: GPT) -> torch.Tensor:
        """``(P, A + 1)`` complete log-probabilities of ``model`` at the oracle's temperature (a
        model with the reference's exact weights, e.g. a policy before its first step, is not re-scored)."""
        if self._is_reference(model):
            return self.ref_logprobs.clone()
        return with_leftover(answer_logprobs(model, self.tokenizer, self.prompts, self.answers, self.temperature))

    def optimum(self, beta: float) -> torch.Tensor:
        r"""``(P, A + 1)`` log-probabilities of :math:`\pi^*_\beta` for the gold reward."""
        return kl_optimal_policy(self.ref_logprobs, self.rewards, beta)

    def report(self, model: GPT, beta: float | None = None) -> dict[str, float]:
        """Exact ``accuracy``, ``gold``, ``kl_to_ref``, ``leftover`` (and ``kl_to_optimum`` if ``beta``)."""
        logp = self.policy_logprobs(model)
        out = {
            "accuracy": float(expected_reward(logp, self.correct).mean()),
            "gold": float(expected_reward(logp, self.rewards).mean()),
            "kl_to_ref": float(kl_divergence(logp, self.ref_logprobs).mean()),
            "leftover": float(logp[:, -1].exp().mean()),
        }
        if beta is not None:
            out["kl_to_optimum"] = float(kl_divergence(logp, self.optimum(beta)).mean())
        return out
