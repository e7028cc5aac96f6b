r"""Plots and a :math:`\beta` slider for the KL-regularised optimum
:math:`\pi^*_\beta \propto \pi_{\text{ref}}\,e^{r/\beta}` (chapter 04).

* :func:`kl_optimum_sweep`: the pure computation, mean expected reward, accuracy, KL to the
  reference and optimal value :math:`\beta\log Z_\beta` of :math:`\pi^*_\beta` for a list of :math:`\beta`.
* :func:`optimum_view`: the numbers one frame of the explorer shows (one prompt, one :math:`\beta`).
* :func:`plot_optimum_view`, :func:`plot_kl_sweep`: matplotlib figures of both.
* :class:`KLOptimumExplorer`: a log-scale :math:`\beta` slider and a prompt menu (ipywidgets) that
  redraw :func:`plot_optimum_view`; every behaviour is reachable without a browser.

Inputs are complete distributions over ``K`` outcomes (answers, then *anything else*), as made by
:func:`seqrl.rlhf.with_leftover`, with the matching rewards and a 0/1 ``correct`` indicator.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..rlhf.exact import expected_reward, kl_divergence, kl_optimal_policy, log_partition
from .style import PALETTE

__all__ = ["kl_optimum_sweep", "OptimumView", "optimum_view", "plot_optimum_view", "plot_kl_sweep", "KLOptimumExplorer"]

LEFTOVER_LABEL = "(other)"


def kl_optimum_sweep(
    ref_logprobs: torch.Tensor, rewards: torch.Tensor, correct: torch.Tensor, betas: Sequence[float]
) -> dict[str, np.ndarray]:
    r"""Mean over prompts, for each :math:`\beta`, of :math:`\pi^*_\beta`'s expected reward, accuracy,
    :math:`\mathrm{KL}(\pi^*_\beta\|\pi_{\text{ref}})` and value :math:`\beta\log Z_\beta = \mathbb E[r] - \beta\,\mathrm{KL}`.

    Args:
        ref_logprobs, rewards, correct: ``(P, K)`` complete reference log-probabilities, rewards and
            0/1 correctness of each outcome.
        betas: the :math:`\beta` values (> 0).

    Returns:
        ``{"beta", "reward", "accuracy", "kl", "value"}``, each a float64 array of ``len(betas)``.
    """
    if len(betas) == 0:
        raise ValueError("betas must hold at least one value")
    rows = []
    for beta in betas:
        optimum = kl_optimal_policy(ref_logprobs, rewards, float(beta))
        rows.append((
            float(beta),
            float(expected_reward(optimum, rewards).mean()),
            float(expected_reward(optimum, correct).mean()),
            float(kl_divergence(optimum, ref_logprobs).mean()),
            float((beta * log_partition(ref_logprobs, rewards, float(beta))).mean()),
        ))
    table = np.array(rows, dtype=np.float64)  # (len(betas), 5)
    return dict(zip(("beta", "reward", "accuracy", "kl", "value"), table.T))


@dataclass(frozen=True)
class OptimumView:
    """One frame of the explorer: the ``top`` outcomes of one prompt under :math:`\\pi_{\\text{ref}}`
    and :math:`\\pi^*_\\beta`."""

    prompt_index: int
    beta: float
    labels: list[str]  # the shown outcomes, most probable first
    ref_probs: np.ndarray  # (top,)
    optimum_probs: np.ndarray  # (top,)
    correct: np.ndarray  # (top,) bool
    ref_accuracy: float
    optimum_accuracy: float
    kl: float  # KL(pi*_beta || pi_ref) for this prompt
    value: float  # beta log Z_beta


def optimum_view(
    ref_logprobs: torch.Tensor,
    rewards: torch.Tensor,
    correct: torch.Tensor,
    answers: Sequence[str],
    beta: float,
    top: int = 10,
    prompt_index: int = 0,
) -> OptimumView:
    r"""The numbers behind one frame, for one prompt: ``ref_logprobs``, ``rewards``, ``correct`` are
    ``(K,)``; ``answers`` names the ``K`` outcomes, or the first ``K - 1`` (the last is then
    *anything else*). Shows the ``top`` outcomes by :math:`\max(\pi_{\text{ref}}, \pi^*_\beta)`."""
    if ref_logprobs.dim() != 1 or ref_logprobs.shape != rewards.shape or rewards.shape != correct.shape:
        raise ValueError(f"one prompt's ref_logprobs, rewards and correct must be equal 1-D shapes, got "
                         f"{tuple(ref_logprobs.shape)}, {tuple(rewards.shape)}, {tuple(correct.shape)}")
    K = ref_logprobs.shape[0]
    labels = list(answers) + ([LEFTOVER_LABEL] if len(answers) == K - 1 else [])
    if len(labels) != K:
        raise ValueError(f"answers must name {K} or {K - 1} outcomes, got {len(answers)}")
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    optimum = kl_optimal_policy(ref_logprobs, rewards, beta)
    ref_p, opt_p = ref_logprobs.double().exp(), optimum.exp()
    shown = torch.argsort(torch.maximum(ref_p, opt_p), descending=True)[: min(top, K)]
    return OptimumView(
        prompt_index=prompt_index,
        beta=float(beta),
        labels=[labels[i] for i in shown.tolist()],
        ref_probs=ref_p[shown].numpy(),
        optimum_probs=opt_p[shown].numpy(),
        correct=(correct[shown] > 0).numpy(),
        ref_accuracy=float(expected_reward(ref_logprobs, correct)),
        optimum_accuracy=float(expected_reward(optimum, correct)),
        kl=float(kl_divergence(optimum, ref_logprobs)),
        value=float(beta * log_partition(ref_logprobs, rewards, beta)),
    )


def plot_optimum_view(view: OptimumView, prompt: str | None = None, ax=None):
    """Side-by-side bars of :math:`\\pi_{\\text{ref}}` and :math:`\\pi^*_\\beta` over the shown answers;
    the correct answer's label is bold, and the title gives accuracy and KL."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7.0, 3.4))
    x = np.arange(len(view.labels))
    ax.bar(x - 0.2, view.ref_probs, width=0.4, color=PALETTE[0], label="π_ref (pretrained)")
    ax.bar(x + 0.2, view.optimum_probs, width=0.4, color=PALETTE[1], label=f"π*_β, β = {view.beta:.3g}")
    ax.set_xticks(x, [f"{label} ✓" if ok else label for label, ok in zip(view.labels, view.correct)])
    for tick, ok in zip(ax.get_xticklabels(), view.correct):
        tick.set_fontweight("bold" if ok else "normal")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("answer y (✓ = the correct sum)")
    ax.set_ylabel("probability π(y | x)")
    where = f"x = '{prompt}'" if prompt else f"prompt {view.prompt_index}"
    ax.set_title(f"{where}, β = {view.beta:.3g}\naccuracy {view.ref_accuracy:.2f} → {view.optimum_accuracy:.2f}, "
                 f"KL(π*‖π_ref) = {view.kl:.3f} nats", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    return ax


def plot_kl_sweep(sweep: dict[str, np.ndarray], axes=None, marks: Sequence[float] = ()):
    """Two panels against :math:`\\beta` (log scale): the expected accuracy and reward of
    :math:`\\pi^*_\\beta`, and its KL to the reference; dotted lines at the ``marks``."""
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(9.0, 3.4))
    left, right = axes
    left.plot(sweep["beta"], sweep["accuracy"], color=PALETTE[1], label="accuracy E[1{y = a+b}]")
    left.plot(sweep["beta"], sweep["reward"], color=PALETTE[2], ls="--", label="expected gold reward E[r]")
    left.plot(sweep["beta"], sweep["value"], color=PALETTE[3], ls=":", label="value β log Z = E[r] − β KL")
    left.set(xscale="log", xlabel="β (KL coefficient)", ylabel="mean over prompts", title="What π*_β earns")
    right.plot(sweep["beta"], sweep["kl"], color=PALETTE[0], label="KL(π*_β ‖ π_ref)")
    right.set(xscale="log", xlabel="β (KL coefficient)", ylabel="KL (nats, mean over prompts)", title="What π*_β costs")
    for ax in axes:
        for beta in marks:
            ax.axvline(beta, color="grey", lw=0.8, ls=":")
        ax.legend(fontsize=8)
    return axes


class KLOptimumExplorer:
    """A log-scale :math:`\\beta` slider and a prompt menu that redraw :func:`plot_optimum_view`.

    Args:
        ref_logprobs, rewards, correct: ``(P, K)`` complete distributions (see the module docstring).
        answers: names of the first ``K - 1`` outcomes (the last is *anything else*) or of all ``K``.
        prompts: the ``P`` prompt strings, for the menu.
        beta: the initial :math:`\\beta`; the slider spans ``10**-2.5`` to ``10**1.5``.
        top: how many answers to show.
    """

    def __init__(self, ref_logprobs: torch.Tensor, rewards: torch.Tensor, correct: torch.Tensor, answers: Sequence[str],
                 prompts: Sequence[str], beta: float = 0.3, top: int = 8) -> None:
        import ipywidgets as widgets  # imported here: the plots above do not need it

        if ref_logprobs.dim() != 2 or ref_logprobs.shape[0] != len(prompts):
            raise ValueError(f"ref_logprobs must be (len(prompts), K) = ({len(prompts)}, K), got {tuple(ref_logprobs.shape)}")
        self.ref_logprobs, self.rewards, self.correct = ref_logprobs, rewards, correct
        self.answers, self.prompts, self.top = list(answers), list(prompts), top
        self.slider = widgets.FloatLogSlider(value=beta, base=10, min=-2.5, max=1.5, step=0.05, description="β",
                                             readout_format=".3f", continuous_update=False)
        self.prompt = widgets.Dropdown(options=[(p, i) for i, p in enumerate(self.prompts)], value=0, description="prompt")
        self.output = widgets.Output()
        self.slider.observe(lambda _: self.refresh(), names="value")
        self.prompt.observe(lambda _: self.refresh(), names="value")
        self.widget = widgets.VBox([widgets.HBox([self.prompt, self.slider]), self.output])
        self.refresh()

    def refresh(self) -> None:
        """Recompute :attr:`view` for the current prompt and :math:`\\beta` and redraw."""
        i = int(self.prompt.value)
        self.view = optimum_view(self.ref_logprobs[i], self.rewards[i], self.correct[i], self.answers,
                                 float(self.slider.value), self.top, prompt_index=i)
        with self.output:
            self.output.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(7.0, 3.4))
            plot_optimum_view(self.view, self.prompts[i], ax=ax)
            plt.show()
            plt.close(fig)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)
