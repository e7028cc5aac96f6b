"""Scoring tokens: the one ``logprobs`` used for rollouts, training and the reference model.

RLHF pitfall: if the sampler, the trainer and the reference compute log-probabilities differently
(another temperature, padding seen differently, dropout on), the PPO ratio is not 1 at the start and
the KL estimate is biased. Every chapter therefore scores tokens with :func:`logprobs`.

Speed. Two kinds of work in a batch of sampled responses change nothing in its log-probabilities,
and on the CPU, where the arithmetic is the time, :func:`logprobs` skips both:

* padding: a batch is as wide as its longest response, and the short ones are mostly padding
  (reviews of 5 to 24 words: more than half of the batch's columns). Rows of similar length are
  scored together (:func:`length_buckets`), each group cut after its longest row (causal attention:
  a column never sees the ones after it);
* repeated prompts: RLOO, GRPO and best-of-n sample ``k`` responses per prompt. The prompts' forward
  pass runs once per distinct prompt, and each row's response reads its prompt's keys and values
  (the gradient of a shared prompt is the sum over its rows, as in one pass).

The result equals one full pass up to float rounding (tested, gradients included).
"""
from __future__ import annotations

from bisect import bisect_right

import torch
import torch.nn.functional as F

from ..text.batching import distinct_rows, last_token_index
from .gpt import GPT

__all__ = ["length_buckets", "logprobs", "token_logprobs"]

# What one more forward pass costs on the CPU, in row-columns of a tiny GPT (measured on the book's
# 0.1M models: a group's fixed overhead is about that of 128 extra tokens).
GROUP_COST = 128


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    r""":math:`\log\operatorname{softmax}(z_t/\tau)[y_t]` for logits ``(B, N, V)`` and tokens ``(B, N)``."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 to score tokens, got {temperature}")
    if logits.shape[:2] != tokens.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and tokens {tuple(tokens.shape)} disagree on (batch, time)")
    return F.log_softmax(logits.float() / temperature, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def length_buckets(widths: list[int], group_cost: int | None = None) -> list[tuple[list[int], int]]:
    r"""Split rows of widths :math:`w_i` into groups, each scored at its own largest width.

    Rows sorted by width, the groups are runs of that order; the split minimises the padded work
    plus a fixed cost per group, :math:`\sum_g \big(n_g \max_{i\in g} w_i + c\big)`, by dynamic
    programming over the distinct widths (exact: a best split never separates rows of equal width).

    Args:
        widths: each row's width (its last real column + 1).
        group_cost: :math:`c`, one group's overhead in row-columns (default :data:`GROUP_COST`).

    Returns:
        ``[(rows, width), ...]``: row indices (ascending width, stable) and the group's width.
    """
    if not widths:
        return []
    group_cost = GROUP_COST if group_cost is None else group_cost
    order = sorted(range(len(widths)), key=widths.__getitem__)
    distinct = sorted(set(widths))
    rows_upto = [bisect_right([widths[r] for r in order], w) for w in [0, *distinct]]  # rows of width <= w
    best, split = [0] + [None] * len(distinct), [0] * (len(distinct) + 1)
    for j in range(1, len(distinct) + 1):
        best[j], split[j] = min(
            (best[i] + (rows_upto[j] - rows_upto[i]) * distinct[j - 1] + group_cost, i) for i in range(j)
        )
    groups, j = [], len(distinct)
    while j > 0:
        i = split[j]
        groups.append((order[rows_upto[i] : rows_upto[j]], distinct[j - 1]))
        j = i
    return groups[::-1]


def logprobs(
    model: GPT,
    sequences: torch.Tensor,
    attention_mask: torch.Tensor,
    response_start: int,
    temperature: float = 1.0,
    return_hidden: bool = False,
):
    r"""Log-probabilities of the response tokens ``sequences[:, response_start:]``.

    .. math:: \log\pi_\theta(y_t \mid x, y_{<t}) = \log\operatorname{softmax}\big(z_\theta(x, y_{<t})/\tau\big)[y_t]

    On the CPU rows are scored in groups of similar length (:func:`length_buckets`), each cut after
    its longest row's last real token (the columns past a group's width hold 0), and rows that share
    a prompt compute it once (module docstring). Values and gradients are those of one pass.

    Args:
        model: the policy or reference GPT.
        sequences: ``(B, P + N)`` left-padded prompts followed by responses (``Completions.sequences``).
        attention_mask: ``(B, P + N)`` mask of real tokens (``Completions.attention_mask``).
        response_start: ``P``, the column where responses start.
        temperature: the sampling temperature :math:`\tau` the responses were drawn with.
        return_hidden: also return the hidden states that predict each response token ``(B, N, C)``,
            the inputs of a value head.

    Returns:
        ``(B, N)`` log-probabilities (masked positions hold finite junk: multiply by the mask), and
        the hidden states if asked.
    """
    if sequences.shape != attention_mask.shape:
        raise ValueError(f"sequences {tuple(sequences.shape)} and attention_mask {tuple(attention_mask.shape)} differ")
    if not 1 <= response_start < sequences.shape[1]:
        raise ValueError(f"response_start must be in [1, {sequences.shape[1]}), got {response_start}")
    groups = _groups(sequences, attention_mask, response_start)
    if groups is None:
        return _score(model, sequences, attention_mask, response_start, temperature, return_hidden)
    N = sequences.shape[1] - response_start
    pieces, order = [], []
    for rows, width in groups:
        index = torch.tensor(rows, device=sequences.device)
        scored = _score(model, sequences[index, :width], attention_mask[index, :width], response_start, temperature, return_hidden)
        scored = scored if return_hidden else (scored,)
        pieces.append([F.pad(x, (0, 0) * (x.dim() - 2) + (0, N - x.shape[1])) for x in scored])  # back to N columns
        order.extend(rows)
    inverse = torch.argsort(torch.tensor(order, device=sequences.device))  # back to the caller's row order
    out = [torch.cat(parts)[inverse] for parts in zip(*pieces)]
    return tuple(out) if return_hidden else out[0]


def _groups(sequences: torch.Tensor, attention_mask: torch.Tensor, response_start: int) -> list[tuple[list[int], int]] | None:
    """The length groups to score, or ``None`` for one pass over the whole batch (on a GPU: launches,
    not arithmetic, bound these tiny models; or when grouping saves nothing)."""
    if sequences.device.type != "cpu" or sequences.shape[0] < 2:
        return None
    widths = (last_token_index(attention_mask) + 1).clamp(min=response_start + 1)
    groups = length_buckets(widths.tolist())
    if len(groups) == 1 and groups[0][1] == sequences.shape[1]:
        return None
    return groups


def _score(model, sequences, attention_mask, response_start, temperature, return_hidden):
    """One group: a forward pass over the rows, or two when rows share their prompt (see :func:`logprobs`)."""
    prompts, inverse = _shared_prompts(sequences, attention_mask, response_start)
    if prompts is None:
        out = model(sequences, attention_mask=attention_mask)
        logits, hidden = out.logits[:, response_start - 1 : -1], out.hidden[:, response_start - 1 : -1]  # position t-1 predicts token t
    else:
        # The prompts once, then every row's response reading its prompt's keys and values (copies
        # of the same tensors: their gradients add up over the rows that share them).
        first = model(sequences[prompts, :response_start], attention_mask=attention_mask[prompts, :response_start])
        past = [(keys[inverse], values[inverse]) for keys, values in first.past]
        rest = model(sequences[:, response_start:-1], past=past, attention_mask=attention_mask[:, :-1])
        logits = torch.cat([first.logits[inverse, -1:], rest.logits], dim=1)
        hidden = torch.cat([first.hidden[inverse, -1:], rest.hidden], dim=1)
    scores = token_logprobs(logits, sequences[:, response_start:], temperature)
    return (scores, hidden) if return_hidden else scores


def _shared_prompts(sequences, attention_mask, response_start):
    """``(rows, inverse)``: one row per distinct prompt and, for every row, its prompt's index in
    ``rows``; ``(None, None)`` when sharing would save less than one group's cost."""
    if sequences.device.type != "cpu" or sequences.shape[0] < 2 or sequences.shape[1] - response_start < 2:
        return None, None
    first, inverse = distinct_rows(sequences[:, :response_start], attention_mask[:, :response_start])
    if (len(sequences) - len(first)) * response_start < GROUP_COST:  # the prompt columns saved
        return None, None
    return first, inverse
