r"""Preference data: pairs of responses from the reference policy, labelled by a hidden "human".

A *preference pair* is a prompt :math:`x` and two responses, the one the labeller preferred
(*chosen*, :math:`y_w`) and the other (*rejected*, :math:`y_l`). Here the labeller is a gold scorer
:math:`g` that the learner never sees, and it labels the way Bradley–Terry says people do: noisily,

.. math::
    P(y_a \succ y_b \mid x) = \sigma\!\Big(\frac{g(x, y_a) - g(x, y_b)}{\tau_{\text{label}}}\Big),

so two responses of nearly equal gold are a coin flip and a large gold gap is almost always labelled
correctly. :math:`\tau_{\text{label}} \to 0` is a noiseless labeller (ties still a coin flip);
larger :math:`\tau_{\text{label}}` means noisier labels. A reward model fitted by maximum likelihood
to such labels learns :math:`g/\tau_{\text{label}}` up to a constant, on the responses the data covers.

Every response is stored as text plus a ``finished`` flag (it ended with ``<eos>``), and
:meth:`PreferencePairs.encode` lays the pairs out exactly as :func:`~seqrl.models.sample_completions`
laid them out when they were sampled (through :func:`~seqrl.models.encode_completions`), so reward
models and DPO read a stored response as the policy wrote it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from ..models.completions import Completions, encode_completions, encode_prompts, sample_completions
from ..models.gpt import GPT
from ..text.reviews import ReviewGrammar
from ..text.tokenizer import Tokenizer
from .reinforce import RewardFn

__all__ = ["PreferencePairs", "sample_preference_pairs", "bradley_terry_labels", "review_gold"]

PromptSource = Sequence[str] | Callable[[int, int], list[str]]
"""A list of prompts (pair ``i`` uses ``prompts[i % len(prompts)]``) or ``(n, seed) -> n prompts``."""

_SAMPLE_CHUNK = 4096  # completions per call of the sampler (bounds the KV cache's memory)


@dataclass
class PreferencePairs:
    """``B`` labelled pairs: ``chosen[i]`` was preferred to ``rejected[i]`` as a response to ``prompts[i]``.

    Responses are texts without special tokens; ``*_finished[i]`` says whether the response ended
    with ``<eos>`` (an unfinished one was cut by the length limit).
    """

    prompts: list[str]
    chosen: list[str]
    rejected: list[str]
    chosen_finished: list[bool]
    rejected_finished: list[bool]

    def __post_init__(self) -> None:
        self.prompts, self.chosen, self.rejected = list(self.prompts), list(self.chosen), list(self.rejected)
        self.chosen_finished = _bools(self.chosen_finished)
        self.rejected_finished = _bools(self.rejected_finished)
        lengths = {name: len(getattr(self, name)) for name in ("prompts", "chosen", "rejected", "chosen_finished", "rejected_finished")}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"every field of PreferencePairs needs one entry per pair, got lengths {lengths}")

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, index: slice | Sequence[int] | torch.Tensor | np.ndarray) -> "PreferencePairs":
        """The pairs at ``index`` (a slice, or integer positions in any order, repeats allowed)."""
        if isinstance(index, slice):
            rows = list(range(len(self)))[index]
        else:
            rows = [int(i) for i in (index.tolist() if isinstance(index, (torch.Tensor, np.ndarray)) else index)]
            bad = [i for i in rows if not -len(self) <= i < len(self)]
            if bad:
                raise ValueError(f"indices {bad[:5]} are out of range for {len(self)} pairs")
        pick = lambda values: [values[i] for i in rows]  # noqa: E731
        return PreferencePairs(pick(self.prompts), pick(self.chosen), pick(self.rejected),
                               pick(self.chosen_finished), pick(self.rejected_finished))

    def split(self, n_first: int) -> tuple["PreferencePairs", "PreferencePairs"]:
        """The first ``n_first`` pairs and the rest (e.g. training and held-out pairs)."""
        if not 0 <= n_first <= len(self):
            raise ValueError(f"n_first must be in [0, {len(self)}], got {n_first}")
        return self.subset(slice(0, n_first)), self.subset(slice(n_first, None))

    def encode(self, tokenizer: Tokenizer, device: torch.device | str = "cpu") -> tuple[Completions, Completions]:
        """``(chosen, rejected)`` as :class:`~seqrl.models.Completions` batches, laid out as sampled
        (left-padded ``<bos> prompt``, the response, ``<eos>`` if finished, right padding)."""
        if len(self) == 0:
            raise ValueError("there are no pairs to encode")
        return (encode_completions(tokenizer, self.prompts, self.chosen, self.chosen_finished, device),
                encode_completions(tokenizer, self.prompts, self.rejected, self.rejected_finished, device))

    def gold_margins(self, gold: RewardFn) -> torch.Tensor:
        r""":math:`g(x, y_w) - g(x, y_l)` for every pair, ``(B,)`` float (positive: the label agrees with the gold)."""
        chosen = _as_float(gold(self.prompts, self.chosen, torch.tensor(self.chosen_finished)))
        rejected = _as_float(gold(self.prompts, self.rejected, torch.tensor(self.rejected_finished)))
        return chosen - rejected

    def __repr__(self) -> str:
        return f"PreferencePairs({len(self)} pairs)"


def review_gold(grammar: ReviewGrammar | None = None) -> RewardFn:
    """The hidden "human" of the reviews task as a batched :data:`RewardFn`: :meth:`ReviewGrammar.gold`
    of each response (the prompt is ignored; an unfinished response scores -2)."""
    grammar = grammar if grammar is not None else ReviewGrammar()

    def gold(prompts: list[str], texts: list[str], finished: torch.Tensor) -> torch.Tensor:
        flags = finished.tolist() if isinstance(finished, torch.Tensor) else list(finished)
        return torch.tensor([grammar.gold(t, bool(f)) for t, f in zip(texts, flags)])

    return gold


def _bools(values) -> list[bool]:
    return [bool(v) for v in (values.tolist() if isinstance(values, torch.Tensor) else values)]


def _as_float(values) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float64).detach().cpu().reshape(-1)


def bradley_terry_labels(
    gold_a: torch.Tensor, gold_b: torch.Tensor, label_temperature: float, rng: np.random.Generator
) -> torch.Tensor:
    r"""Sample ``a ≻ b`` with probability :math:`\sigma((g_a - g_b)/\tau)`; ``(B,)`` bool, True = ``a`` preferred.

    ``label_temperature = 0`` is the noiseless labeller: the larger gold wins, exact ties are a fair coin.
    """
    if label_temperature < 0 or not np.isfinite(label_temperature):
        raise ValueError(f"label_temperature must be a finite number >= 0, got {label_temperature}")
    margin = (_as_float(gold_a) - _as_float(gold_b)).numpy()
    uniform = rng.random(len(margin))
    if label_temperature == 0:
        p_a = np.where(margin > 0, 1.0, np.where(margin < 0, 0.0, 0.5))
    else:
        p_a = 1.0 / (1.0 + np.exp(-margin / label_temperature))
    return torch.from_numpy(uniform < p_a)


def _prompt_list(prompts: PromptSource, n: int, seed: int) -> list[str]:
    if callable(prompts):
        drawn = list(prompts(n, seed))
        if len(drawn) != n:
            raise ValueError(f"the prompt sampler returned {len(drawn)} prompts, expected {n}")
        return drawn
    prompts = list(prompts)
    if not prompts:
        raise ValueError("need at least one prompt ('' is the unconditional prompt: just <bos>)")
    return [prompts[i % len(prompts)] for i in range(n)]


@torch.no_grad()
def sample_preference_pairs(
    model: GPT,
    tokenizer: Tokenizer,
    prompts: PromptSource,
    gold: RewardFn,
    n_pairs: int,
    *,
    temperature: float = 1.0,
    label_temperature: float = 1.0,
    max_new_tokens: int | None = None,
    seed: int = 0,
) -> PreferencePairs:
    r"""Sample ``n_pairs`` pairs of responses from ``model`` and label each with Bradley–Terry on ``gold``.

    For pair ``i`` two responses :math:`y_a, y_b \sim \pi(\cdot\mid x_i)` are drawn independently;
    then :math:`y_a` is *chosen* with probability :math:`\sigma((g(x_i,y_a) - g(x_i,y_b))/\tau_{\text{label}})`.

    Args:
        model: the policy the pairs come from (the reference / pretrained model).
        tokenizer: its tokenizer.
        prompts: a list of prompts, cycled (``[""]``: unconditional reviews), or ``(n, seed) -> n prompts``.
        gold: the hidden labeller, ``gold(prompts, texts, finished) -> (B,)`` (a :data:`RewardFn`).
        n_pairs: number of pairs ``B >= 1``.
        temperature: sampling temperature of the responses.
        label_temperature: :math:`\tau_{\text{label}} \ge 0` of the Bradley–Terry labels (0: noiseless).
        max_new_tokens: response length limit (default: what the model's context leaves after the
            longest prompt).
        seed: the same seed gives the same pairs and labels.
    """
    if not isinstance(n_pairs, int) or n_pairs < 1:
        raise ValueError(f"n_pairs must be a positive int, got {n_pairs!r}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (pairs are sampled), got {temperature}")
    pair_prompts = _prompt_list(prompts, n_pairs, seed)
    if max_new_tokens is None:
        max_new_tokens = model.config.block_size - encode_prompts(tokenizer, sorted(set(pair_prompts)))[0].shape[1]
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    generator = torch.Generator(device=model.device).manual_seed(seed)
    both = pair_prompts + pair_prompts  # rows i and n_pairs + i are the two responses of pair i
    texts, finished = [], []
    for start in range(0, len(both), _SAMPLE_CHUNK):
        batch = sample_completions(model, tokenizer, both[start : start + _SAMPLE_CHUNK], max_new_tokens, temperature,
                                   generator=generator)
        texts += batch.texts
        finished += batch.finished.tolist()
    scores = _as_float(gold(both, texts, torch.tensor(finished)))
    if scores.shape != (len(both),):
        raise ValueError(f"gold must return one score per response, got shape {tuple(scores.shape)}")
    a_wins = bradley_terry_labels(scores[:n_pairs], scores[n_pairs:], label_temperature, np.random.default_rng(seed)).tolist()
    first = lambda values: [values[i] if w else values[n_pairs + i] for i, w in enumerate(a_wins)]  # noqa: E731
    second = lambda values: [values[n_pairs + i] if w else values[i] for i, w in enumerate(a_wins)]  # noqa: E731
    return PreferencePairs(pair_prompts, first(texts), second(texts), first(finished), second(finished))
