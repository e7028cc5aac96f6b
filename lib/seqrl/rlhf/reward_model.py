r"""A reward model learned from pairwise preferences: a GPT trunk with a scalar head.

Following Ziegler et al. (2019) and Stiennon et al. (2020), the reward model starts as a copy of the
pretrained policy with the unembedding replaced by a scalar head
:math:`w^\top h + b_0`, :math:`w \sim \mathcal N(0, 1/(d+1))`, read at the **last real token** of
:math:`x \oplus y` (the ``<eos>`` of a finished response), and is trained by maximum likelihood
under Bradley–Terry:

.. math::
    \mathcal L(\phi) = -\frac1B\sum_i \log\sigma\big(r_\phi(x_i, y^w_i) - r_\phi(x_i, y^l_i)\big).

The loss only sees differences, so the reward's offset is arbitrary (and its scale is set by the
label noise). Before it is used as a reward, a gain and a bias are fitted so that the scores of
responses sampled from the reference policy have mean 0 and standard deviation 1
(:meth:`RewardModel.normalise`): then a KL coefficient :math:`\beta` means the same thing for every
reward model.

Where the score is read matters. The hidden state at the ``<eos>`` has read the whole response.
The slot *after* it is padding: attention never lets a real position look at it, and its own hidden
state is that of a pad token at some position, which says nothing about the response (a known bug of
a popular library put the score there). With causal attention and the padding masked, the score at
the last real token is exactly invariant to how much padding follows.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from ..models.completions import Completions, encode_completions, encode_prompts
from ..models.gpt import GPT
from ..models.heads import ValueHead, gather_last
from ..models.optim import adamw, gradient_step
from ..models.schedules import warmup_linear_decay
from ..text.tokenizer import Tokenizer
from ..utils import evaluating, progress
from .objectives import bradley_terry_loss
from .preferences import PreferencePairs
from .reinforce import RewardFn

__all__ = ["RewardModel", "RewardHistory", "train_reward_model", "pairwise_agreement"]

_SCORE_CHUNK = 512  # sequences per forward pass when scoring without gradients


class RewardModel(nn.Module):
    r""":math:`r_\phi(x, y) = g\,\big(w^\top h_T(x \oplus y) + b_0\big) + b`: a GPT trunk, a scalar head
    read at the last real token :math:`T`, and a normalising gain :math:`g` and bias :math:`b`
    (buffers, not trained; :meth:`normalise` sets them).

    Args:
        policy: the pretrained GPT whose trunk starts the reward model (deep-copied: the policy is
            left untouched). Its unembedding is carried along but unused.
        tokenizer: the policy's tokenizer (to read texts in :meth:`score_texts` and :meth:`reward_fn`).
        seed: seeds the head's initialisation.
    """

    def __init__(self, policy: GPT, tokenizer: Tokenizer, seed: int = 0) -> None:
        super().__init__()
        if not isinstance(policy, GPT):
            raise ValueError(f"a reward model starts from a GPT trunk, got {type(policy).__name__}")
        self.trunk = copy.deepcopy(policy)
        self.trunk.requires_grad_(True)
        self.tokenizer = tokenizer
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.head = ValueHead(policy.config.n_embd, init="normal")  # w ~ N(0, 1/(d+1)), b_0 = 0
        self.head.to(policy.device)
        self.register_buffer("gain", torch.ones((), device=policy.device))
        self.register_buffer("bias", torch.zeros((), device=policy.device))
        self.eval()

    @property
    def device(self) -> torch.device:
        return self.trunk.device

    # ------------------------------------------------------------------ scoring
    def raw_scores(self, sequences: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        r"""Un-normalised :math:`w^\top h_T + b_0` at the last real token of each row. ``(B, L)`` -> ``(B,)``."""
        if sequences.shape != attention_mask.shape or sequences.dim() != 2:
            raise ValueError(f"sequences {tuple(sequences.shape)} and attention_mask {tuple(attention_mask.shape)} "
                             "must be equal (batch, time) shapes")
        hidden = self.trunk(sequences, attention_mask=attention_mask).hidden  # (B, L, C)
        return self.head(gather_last(hidden, attention_mask))  # (B,): the last real token, never the pad after it

    def forward(self, batch: Completions | torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised rewards ``(B,)`` of a :class:`~seqrl.models.Completions` batch, or of
        ``sequences (B, L)`` with their ``attention_mask (B, L)`` (prompt and response, as laid out
        by the sampler)."""
        if isinstance(batch, Completions):
            if attention_mask is not None:
                raise ValueError("pass either Completions or (sequences, attention_mask), not both")
            sequences, attention_mask = batch.sequences, batch.attention_mask
        else:
            if attention_mask is None:
                raise ValueError("scoring raw sequences needs their attention_mask")
            sequences = batch
        return self.gain * self.raw_scores(sequences.to(self.device), attention_mask.to(self.device)) + self.bias

    @torch.no_grad()
    def score_texts(self, prompts: list[str], texts: list[str], finished: list[bool] | torch.Tensor) -> torch.Tensor:
        """Normalised rewards ``(B,)`` of stored ``(prompt, response, finished)`` triples, read exactly
        as sampled (:func:`~seqrl.models.encode_completions`); no gradients, evaluation mode.

        An empty unfinished response (nothing was written) is scored at the last prompt token.
        """
        flags = [bool(f) for f in (finished.tolist() if isinstance(finished, torch.Tensor) else finished)]
        if not (len(prompts) == len(texts) == len(flags)):
            raise ValueError(f"need one prompt, text and finished flag per response, got {len(prompts)}, {len(texts)}, {len(flags)}")
        if not prompts:
            raise ValueError("nothing to score")
        with evaluating(self):
            scores = torch.empty(len(prompts), device=self.device)
            lengths = [len(self.tokenizer.encode(t)) for t in texts]
            empty = [i for i, (n, f) in enumerate(zip(lengths, flags)) if n == 0 and not f]
            # Similar lengths in one forward pass: each pass is only as wide as its longest sequence.
            written = sorted(set(range(len(texts))) - set(empty), key=lengths.__getitem__)
            for rows in _chunks(written, _SCORE_CHUNK):
                batch = encode_completions(self.tokenizer, [prompts[i] for i in rows], [texts[i] for i in rows],
                                           [flags[i] for i in rows], self.device)
                scores[rows] = self(batch)
            for rows in _chunks(empty, _SCORE_CHUNK):
                tokens, mask = encode_prompts(self.tokenizer, [prompts[i] for i in rows], self.device)
                scores[rows] = self(tokens, mask)
        return scores

    def reward_fn(self) -> RewardFn:
        """This reward model as a :data:`~seqrl.rlhf.RewardFn`: ``reward(prompts, texts, finished) -> (B,)``."""

        def reward(prompts: list[str], texts: list[str], finished: torch.Tensor) -> torch.Tensor:
            return self.score_texts(prompts, texts, finished)

        return reward

    # ------------------------------------------------------------------ normalisation
    @torch.no_grad()
    def normalise(self, prompts: list[str], texts: list[str], finished: list[bool] | torch.Tensor,
                  mean: float = 0.0, std: float = 1.0) -> tuple[float, float]:
        r"""Set gain and bias so the rewards of these responses (samples of the reference policy) have
        the given ``mean`` and ``std`` (Ziegler et al.): with raw scores of mean :math:`\mu_D` and
        standard deviation :math:`\sigma_D`, :math:`g = \sigma_T/\sigma_D`, :math:`b = \mu_T - g\,\mu_D`.

        Returns ``(gain, bias)``.
        """
        if len(texts) < 2:
            raise ValueError("normalising needs at least two reference responses")
        if std <= 0:
            raise ValueError(f"the target std must be > 0, got {std}")
        self.gain.fill_(1.0)
        self.bias.fill_(0.0)
        raw = self.score_texts(prompts, texts, finished).double()
        spread = float(raw.std())
        if not spread > 0:
            raise ValueError("the reward model gives every reference response the same score: cannot normalise")
        gain = std / spread
        self.gain.fill_(gain)
        self.bias.fill_(mean - gain * float(raw.mean()))
        return float(self.gain), float(self.bias)


def _chunks(rows: list[int], size: int):
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


# ---------------------------------------------------------------------------- training
@dataclass
class RewardHistory:
    """Per step: Bradley–Terry loss and accuracy on the batch (chosen scored above rejected); per
    evaluation (before training and after every epoch): agreement on held-out pairs."""

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_agreement: list[float] = field(default_factory=list)
    seconds: float = 0.0


def _encode_pairs(pairs: PreferencePairs, tokenizer: Tokenizer, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(2B, L)`` sequences and masks: rows ``0..B-1`` chosen, ``B..2B-1`` rejected, one layout for both."""
    batch = encode_completions(tokenizer, pairs.prompts + pairs.prompts, pairs.chosen + pairs.rejected,
                               pairs.chosen_finished + pairs.rejected_finished, device)
    return batch.sequences, batch.attention_mask


def train_reward_model(
    rm: RewardModel,
    pairs: PreferencePairs,
    *,
    epochs: int = 1,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    anneal_lr: bool = True,
    weight_decay: float = 0.0,
    eval_pairs: PreferencePairs | None = None,
    gold: RewardFn | None = None,
    group_by_length: bool = True,
    desc: str = "reward model",
) -> RewardHistory:
    r"""Fit ``rm`` (in place) to ``pairs`` with the Bradley–Terry loss, Adam and shuffled minibatches.

    Each step scores the ``batch_size`` chosen and rejected responses in one forward pass and takes
    one step on :func:`~seqrl.rlhf.bradley_terry_loss`; the learning rate decays linearly to 0 over
    all steps (``anneal_lr``; Ziegler et al. train one epoch annealed to 0). The last minibatch of an
    epoch may be smaller. The loss is on the raw head (the normalising gain and bias are not used;
    the loss is blind to a bias anyway): call :meth:`RewardModel.normalise` after training.

    Args:
        rm: the reward model.
        pairs: training pairs (``chosen[i]`` preferred to ``rejected[i]``).
        epochs: passes over the pairs.
        lr: Adam's learning rate (tiny models want ~1e-3, far above the published 1e-5).
        batch_size: pairs per step, ``1 <= batch_size <= len(pairs)``.
        seed: the shuffling order; the same seed (and model) gives the same weights.
        group_by_length: put pairs of similar length in the same minibatch (shuffled within
            groups of 16 minibatches, batch order shuffled; as ``group_by_length`` in Hugging Face's
            trainer): each batch is cut to its longest response, which halves the compute on reviews.
        eval_pairs, gold: if given, :func:`pairwise_agreement` on ``eval_pairs`` (against ``gold`` if
            given, else against their labels) before training and after each epoch.
    """
    if len(pairs) == 0:
        raise ValueError("cannot train a reward model on 0 preference pairs")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if not isinstance(batch_size, int) or not 1 <= batch_size <= len(pairs):
        raise ValueError(f"batch_size must be an int in [1, {len(pairs)}] (the number of pairs), got {batch_size!r}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    sequences, attention_mask = _encode_pairs(pairs, rm.tokenizer, rm.device)
    n = len(pairs)
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    optimizer = adamw([p for p in rm.parameters() if p.requires_grad], lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear_decay(total, 0, anneal_lr))
    lengths = attention_mask.sum(dim=1)
    pair_lengths = torch.maximum(lengths[:n], lengths[n:]).cpu()  # columns a pair needs
    rng = np.random.default_rng(seed)
    history = RewardHistory()
    started = time.perf_counter()

    def evaluate(step: int) -> None:
        if eval_pairs is not None:
            history.eval_steps.append(step)
            history.eval_agreement.append(pairwise_agreement(rm, eval_pairs, gold))

    evaluate(0)
    rm.train()
    for epoch in progress(range(epochs), desc=desc):
        for rows in _minibatches(rng, pair_lengths, batch_size, group_by_length):
            rows = rows.to(rm.device)
            both = torch.cat([rows, rows + n])  # the chosen and the rejected of these pairs
            used = int(attention_mask[both].any(dim=0).nonzero().max()) + 1  # drop columns that are padding in every row
            scores = rm.raw_scores(sequences[both, :used], attention_mask[both, :used])
            chosen, rejected = scores[: len(rows)], scores[len(rows) :]
            loss = bradley_terry_loss(chosen, rejected)
            gradient_step(optimizer, loss)  # no clipping
            schedule.step()
            history.loss.append(float(loss.detach()))
            history.accuracy.append(float((chosen > rejected).float().mean()))
        rm.eval()
        evaluate(len(history.loss))
        rm.train()
    rm.eval()
    history.seconds = time.perf_counter() - started
    return history


_GROUP = 16  # minibatches per length-sorted group


def _minibatches(rng: np.random.Generator, lengths: torch.Tensor, batch_size: int, group_by_length: bool) -> list[torch.Tensor]:
    """One epoch of minibatch indices: a random permutation, optionally sorted by length within groups
    of ``_GROUP`` minibatches (so each batch holds similar lengths) with the batch order shuffled."""
    order = torch.from_numpy(rng.permutation(len(lengths)))
    if not group_by_length:
        return list(order.split(batch_size))
    batches = []
    for group in order.split(_GROUP * batch_size):
        ranked = group[torch.argsort(lengths[group], stable=True)]
        batches += list(ranked.split(batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


@torch.no_grad()
def pairwise_agreement(rm: RewardModel | RewardFn, pairs: PreferencePairs, gold: RewardFn | None = None) -> float:
    r"""How often the reward model orders a pair as the gold (or, without ``gold``, as the labels) does.

    With ``gold``: the fraction of pairs with :math:`g(y_w) \ne g(y_l)` on which
    :math:`\operatorname{sign}(r(y_w) - r(y_l)) = \operatorname{sign}(g(y_w) - g(y_l))` (the labels are
    ignored, so label noise does not cap the number at 1). Without: the fraction with
    :math:`r(y_w) > r(y_l)`. Equal rewards count one half. ``rm`` may be any :data:`RewardFn`.
    """
    if len(pairs) == 0:
        raise ValueError("cannot measure agreement on 0 pairs")
    reward = rm.reward_fn() if isinstance(rm, RewardModel) else rm
    chosen = reward(pairs.prompts, pairs.chosen, torch.tensor(pairs.chosen_finished)).double().cpu()
    rejected = reward(pairs.prompts, pairs.rejected, torch.tensor(pairs.rejected_finished)).double().cpu()
    predicted = torch.sign(chosen - rejected)
    if gold is None:
        truth = torch.ones_like(predicted)
    else:
        truth = torch.sign(pairs.gold_margins(gold))
        keep = truth != 0
        if not keep.any():
            raise ValueError("the gold ties on every pair: agreement is undefined")
        predicted, truth = predicted[keep], truth[keep]
    return float(((predicted == truth).double() + 0.5 * (predicted == 0).double()).mean())
