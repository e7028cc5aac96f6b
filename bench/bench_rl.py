r"""RL fine-tuning iterations per second: seqrl against Hugging Face TRL, same weights, same batch.

One **iteration** of critic-free RL fine-tuning (RLOO / GRPO) is, on both sides:

1. sample ``k`` completions for each of ``P`` prompts from the policy (temperature 1, no top-k/top-p,
   stop at ``<eos>`` or after ``max_new_tokens``);
2. score the texts with the same Python reward function (the task's gold);
3. group advantages: leave-one-out (seqrl's :func:`~seqrl.rlhf.reinforce.reinforce_step` with
   ``baseline="leave_one_out"``; TRL's ``RLOOTrainer``) or group-normalised (TRL's ``GRPOTrainer``);
4. one optimiser step (Adam(W), learning rate 3e-4, gradient norm clipped to 1, no KL: beta = 0).

The models are the book's pretrained tiny GPTs (``seqrl.pretrained("addition")``,
``seqrl.pretrained("reviews")``), converted to a ``transformers.GPT2LMHeadModel`` for TRL
(:func:`peers.gpt_to_hf`; the bench checks the converted model's logits against seqrl's), with a
``PreTrainedTokenizerFast`` holding seqrl's ids (:func:`peers.hf_tokenizer`; checked on the prompts).
TRL runs with logging, saving and evaluation off, on the CPU, one gradient step per generation batch.

**Timing.** Iterations per second over ``iters`` iterations after ``warmup`` iterations, each side
started afresh from the pretrained weights; for TRL the clock reads at the end of each optimiser step
(a ``TrainerCallback``), so an iteration includes TRL's data loading and generation. The sides
alternate over ``rounds`` rounds and the best round counts: on a shared machine the best run is the
one least disturbed by other processes. Both sides use the same number of torch threads, one unless
``SEQRL_NUM_THREADS`` says otherwise: batches of 128 short sequences through a 0.1M-parameter model
give an intra-op thread little to do, and on a loaded 2-core machine two threads made single steps of
either side erratic (up to 20x slower), one thread did not.

**Work differences that are the implementations', not the bench's.** seqrl re-scores only the
completions whose advantage is non-zero (a prompt whose ``k`` completions all earn the same reward
adds nothing to the gradient), runs the prompts' forward pass once per distinct prompt when it
samples (the ``k`` copies share it), and on the CPU scores responses in groups of similar length
(:func:`seqrl.models.scoring.length_buckets`) instead of padding every row to the longest; neither
side scores a reference model at beta = 0. TRL's RLOO computes the old log-probabilities in an
extra forward pass and an entropy, GRPO (one step per generation) skips the old log-probabilities.
The column ``signal_%`` gives the share of completions in groups with unequal rewards (the rows
seqrl re-scores).

**PPO** (if :mod:`seqrl.rlhf.ppo` exists): one iteration of seqrl's PPO = rollout + 4 epochs x 4
minibatches (16 Adam steps). With ``advantages="rloo"`` (no critic) it does the work of TRL's
``RLOOTrainer`` with ``num_iterations=4, steps_per_generation=4`` (16 clipped steps per generation),
timed against it; the default (GAE with a value head, KL 0.05) is timed for reference.

Run: ``python bench/bench_rl.py`` (or ``make bench``). TRL needs ``pip install -e .[bench]``.
"""
from __future__ import annotations

import copy
import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

import seqrl
from seqrl.models import GPT
from seqrl.models.completions import encode_prompts
from seqrl.models.optim import adam
from seqrl.rlhf.ppo import PolicyWithValueHead, PPOConfig, collect_rollout, ppo_optimizer, ppo_update
from seqrl.rlhf.reinforce import ReinforceConfig, RewardFn, reinforce_step, task_reward
from seqrl.text import AdditionTask, ReviewGrammar

from common import print_table, write_json
from peers import PeerMissing, gpt_to_hf, hf_tokenizer, max_logit_gap, require


LR = 3e-4


@dataclass
class Task:
    name: str
    pretrained: str
    prompts: Callable[[int, int], list[str]]  # (n, seed) -> n prompts
    reward: RewardFn  # (prompts, texts, finished) -> (B,)
    max_new_tokens: int


def tasks() -> list[Task]:
    grammar = ReviewGrammar()

    def review_reward(prompts, texts, finished):
        return torch.tensor([grammar.gold(t, bool(f)) for t, f in zip(texts, finished.tolist())])

    return [
        Task("addition", "addition", AdditionTask().prompts, task_reward(AdditionTask()), 4),
        Task("reviews", "reviews", lambda n, seed: [""] * n, review_reward, 24),
    ]


class SignalMeter:
    """Wraps a reward function; records the share of completions in groups of ``k`` with unequal rewards."""

    def __init__(self, reward: RewardFn, k: int) -> None:
        self.reward, self.k, self.rows, self.signal = reward, k, 0, 0

    def __call__(self, prompts, texts, finished) -> torch.Tensor:
        rewards = self.reward(prompts, texts, finished)
        groups = rewards.view(-1, self.k)
        self.rows += rewards.numel()
        self.signal += int((groups != groups[:, :1]).any(dim=1).sum()) * self.k
        return rewards

    @property
    def percent(self) -> float:
        return round(100 * self.signal / max(self.rows, 1), 1)


# ---------------------------------------------------------------------------------------------- seqrl
def seqrl_rloo(model: GPT, tokenizer, task: Task, P: int, k: int, warmup: int, iters: int) -> tuple[float, float]:
    """Iterations per second of :func:`reinforce_step` (leave-one-out baseline), and ``signal_%``."""
    policy, reference = copy.deepcopy(model), copy.deepcopy(model)
    policy.train()
    reference.eval()
    # beta = 0 and no KL log: TRL at beta = 0 runs no reference model either (equal work)
    config = ReinforceConfig(prompts_per_step=P, samples_per_prompt=k, max_new_tokens=task.max_new_tokens, temperature=1.0,
                             baseline="leave_one_out", kl_coef=0.0, track_kl=False, max_grad_norm=1.0, lr=LR)
    optimizer = adam(policy.parameters(), LR)  # the library's optimiser (multi-tensor Adam)
    generator = torch.Generator(device=policy.device).manual_seed(0)
    meter = SignalMeter(task.reward, k)
    start = _now()
    for step in range(warmup + iters):
        if step == warmup:
            meter.rows = meter.signal = 0
            start = _now()
        reinforce_step(policy, reference, optimizer, tokenizer, task.prompts(P, step), meter, config, generator)
    return iters / (_now() - start), meter.percent


def seqrl_ppo(model: GPT, tokenizer, task: Task, P: int, k: int, warmup: int, iters: int, advantages: str) -> float:
    """Iterations per second of seqrl's PPO: :func:`collect_rollout` + :func:`ppo_update` (4 epochs x 4 minibatches)."""
    rloo = advantages == "rloo"
    config = PPOConfig(rollouts=P * k, samples_per_prompt=k, minibatches=4, epochs=4, lr=LR, max_new_tokens=task.max_new_tokens,
                       advantages=advantages, kl_coef=0.0 if rloo else 0.05, exact_kl=False,
                       track_kl=not rloo)  # beta = 0: no reference forward pass, as TRL at beta = 0
    policy, reference = PolicyWithValueHead(copy.deepcopy(model)), copy.deepcopy(model)
    policy.eval()
    reference.eval()
    optimizer, _ = ppo_optimizer(policy, config)  # what train_ppo builds (no schedule: a constant rate here)
    sample_generator = torch.Generator(device=policy.lm.device).manual_seed(0)
    shuffle_generator = torch.Generator().manual_seed(1)
    start = _now()
    for step in range(warmup + iters):
        if step == warmup:
            start = _now()
        prompts = [p for p in task.prompts(P, step) for _ in range(k)]
        rollout = collect_rollout(policy, reference, tokenizer, prompts, task.reward, config, generator=sample_generator)
        ppo_update(policy, optimizer, rollout, config, shuffle_generator)
    return iters / (_now() - start)


# ------------------------------------------------------------------------------------------------ TRL
def trl_iterations_per_second(trainer_name: str, model: GPT, tokenizer, task: Task, P: int, k: int, warmup: int, iters: int,
                              updates_per_generation: int = 1) -> tuple[float, float]:
    """Iterations per second of TRL's ``GRPOTrainer`` or ``RLOOTrainer`` on a GPT-2 copy of ``model``.

    An iteration is one generation of ``P * k`` completions and ``updates_per_generation`` optimiser
    steps on it (1; or 16 = 4 minibatches x 4 epochs, ``num_iterations=4, steps_per_generation=4``)."""
    trl, transformers, datasets = require("trl"), require("transformers"), require("datasets")
    threads, eos = torch.get_num_threads(), tokenizer.eos_id
    meter = SignalMeter(task.reward, k)

    def reward(prompts, completions, completion_ids, **_):  # TRL's reward-function signature
        finished = torch.tensor([eos in ids for ids in completion_ids])
        return meter(list(prompts), list(completions), finished).tolist()

    times: list[float] = []

    class Clock(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            times.append(_now())
            if len(times) == warmup * updates_per_generation:  # the timed iterations start: count their rewards only
                meter.rows = meter.signal = 0

    epochs = 4 if updates_per_generation > 1 else 1
    steps_per_generation = updates_per_generation // epochs
    steps = (warmup + iters) * updates_per_generation
    dataset = datasets.Dataset.from_dict({"prompt": task.prompts(P * (warmup + iters + 1), 10_000)})
    out = tempfile.TemporaryDirectory(prefix="bench_rl_")  # TRL wants an output_dir; nothing is saved there
    common = dict(
        output_dir=out.name, per_device_train_batch_size=P * k // steps_per_generation,
        steps_per_generation=steps_per_generation, num_iterations=epochs, num_generations=k,
        max_completion_length=task.max_new_tokens, temperature=1.0, top_p=1.0, top_k=0, beta=0.0,
        learning_rate=LR, lr_scheduler_type="constant", max_grad_norm=1.0, max_steps=steps,
        logging_strategy="no", save_strategy="no", eval_strategy="no", report_to="none",
        disable_tqdm=True, use_cpu=not torch.cuda.is_available(), seed=0, dataloader_num_workers=0,
    )
    if trainer_name == "GRPO":
        args, Trainer = trl.GRPOConfig(**common, loss_type="grpo", scale_rewards="group"), trl.GRPOTrainer
    else:
        args, Trainer = trl.RLOOConfig(**common), trl.RLOOTrainer
    hf = gpt_to_hf(model)
    trainer = Trainer(model=hf, reward_funcs=reward, args=args, train_dataset=dataset,
                      processing_class=hf_tokenizer(tokenizer), callbacks=[Clock()])
    trainer.remove_callback(transformers.PrinterCallback)  # no end-of-training summary on stdout
    torch.set_num_threads(threads)  # the same thread count as seqrl, whatever the trainer set up
    trainer.train()
    out.cleanup()
    if len(times) != steps:
        raise RuntimeError(f"TRL ran {len(times)} optimiser steps, expected {steps}")
    start, end = times[warmup * updates_per_generation - 1], times[-1]
    return iters / (end - start), meter.percent


# --------------------------------------------------------------------------------------------- checks
def equivalence_check(model: GPT, tokenizer, task: Task) -> dict:
    """The converted GPT-2 gives seqrl's logits; the HF tokenizer gives seqrl's ids and texts."""
    hf = gpt_to_hf(model)
    generator = torch.Generator().manual_seed(0)
    idx = torch.randint(0, model.config.vocab_size, (32, model.config.block_size), generator=generator).to(model.device)
    prompts = task.prompts(32, 0)
    tokens, mask = encode_prompts(tokenizer, prompts, model.device)
    hf_tok = hf_tokenizer(tokenizer)
    ids_match = hf_tok(text=prompts)["input_ids"] == [tokenizer.encode(p, bos=True) for p in prompts]
    with torch.no_grad():
        sampled = model.generate(tokens, task.max_new_tokens, stop_token=tokenizer.eos_id, pad_token=tokenizer.pad_id,
                                 attention_mask=mask, generator=torch.Generator(device=model.device).manual_seed(0)).tokens
        no_positions = hf(tokens, attention_mask=mask).logits  # how TRL scores: no position_ids
        ours = model(tokens, attention_mask=mask).logits
    texts_match = hf_tok.batch_decode(sampled.tolist(), skip_special_tokens=True) == tokenizer.decode_batch(
        sampled.cpu(), stop_at_eos=True, skip_special=True)
    return {
        "max_logit_gap_full_block": max_logit_gap(model, hf, idx),
        "max_logit_gap_left_padded_prompts": max_logit_gap(model, hf, tokens, mask),
        "left_padded_gap_without_position_ids": float((ours - no_positions).abs()[mask.bool()].max()),
        "tokenizer_ids_match": ids_match,
        "tokenizer_texts_match": texts_match,
    }


def _now() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def _quiet() -> None:
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    logging.getLogger("trl").setLevel(logging.ERROR)
    try:
        require("transformers").logging.set_verbosity_error()
    except PeerMissing:
        pass


def main(P: int = 32, k: int = 4, warmup: int = 2, rounds: int = 5, seqrl_iters: int = 30, trl_iters: int = 10,
         ppo_iters: int = 5, threads: int | None = None) -> list[dict]:
    _quiet()
    threads = seqrl.configure_threads(threads or int(os.environ.get("SEQRL_NUM_THREADS", "0")) or 1)
    device = seqrl.device()
    peers_ok, why = True, ""
    try:
        for module in ("trl", "transformers", "datasets", "tokenizers"):
            require(module)
    except PeerMissing as missing:
        peers_ok, why = False, str(missing)
        print(f"TRL side skipped: {why}")
    rows, checks = [], {}
    for task in tasks():
        pre = seqrl.pretrained(task.pretrained)
        model, tokenizer = pre.model.to(device), pre.tokenizer
        if peers_ok:
            try:
                checks[task.name] = equivalence_check(model, tokenizer, task)
            except Exception as error:  # e.g. an incompatible transformers / tokenizers release
                peers_ok, why = False, f"the GPT-2 / tokenizer conversion failed: {type(error).__name__}: {error}"
                print(f"TRL side skipped: {why}")
        best: dict[str, float] = {}
        signal: dict[str, float] = {}

        def record(name: str, run: Callable[[], object]) -> None:
            nonlocal peers_ok, why
            if name.startswith("TRL") and not peers_ok:
                return
            try:
                result = run()
            except Exception as error:  # a peer that cannot run here: say why, keep seqrl's rows
                if not name.startswith("TRL"):
                    raise
                peers_ok, why = False, f"{name} failed on {task.name}: {type(error).__name__}: {error}"
                print(f"TRL side skipped from here on: {why}")
                return
            value, pct = result if isinstance(result, tuple) else (result, None)
            best[name] = max(best.get(name, 0.0), value)
            if pct is not None:
                signal[name] = pct

        for _ in range(rounds):  # alternate the sides so both see the same load
            record("seqrl RLOO", lambda: seqrl_rloo(model, tokenizer, task, P, k, warmup, seqrl_iters))
            record("TRL RLOO", lambda: trl_iterations_per_second("RLOO", model, tokenizer, task, P, k, warmup, trl_iters))
            record("TRL GRPO", lambda: trl_iterations_per_second("GRPO", model, tokenizer, task, P, k, warmup, trl_iters))
            record("seqrl PPO-RLOO 4x4", lambda: seqrl_ppo(model, tokenizer, task, P, k, 1, ppo_iters, "rloo"))
            record("seqrl PPO-GAE 4x4", lambda: seqrl_ppo(model, tokenizer, task, P, k, 1, ppo_iters, "gae"))
            record("TRL RLOO 4x4", lambda: trl_iterations_per_second("RLOO", model, tokenizer, task, P, k, 1, ppo_iters, 16))
        peer_1 = max((best[n] for n in ("TRL RLOO", "TRL GRPO") if n in best), default=None)
        for name, value in best.items():
            updates = 16 if "4x4" in name else 1
            row = {"task": task.name, "method": name, "updates/iter": updates, "iters_per_s": round(value, 2),
                   "signal_%": signal.get(name, "")}
            if name == "seqrl RLOO" and peer_1:
                row["speedup_vs_best_TRL"] = round(value / peer_1, 2)
            if name == "seqrl PPO-RLOO 4x4" and "TRL RLOO 4x4" in best:
                row["speedup_vs_best_TRL"] = round(value / best["TRL RLOO 4x4"], 2)
            rows.append(row)
    print(f"RL fine-tuning iterations per second (P={P} prompts x k={k} completions, temperature 1, beta 0, "
          f"Adam lr {LR}, grad-clip 1) on {device} with {torch.get_num_threads()} threads; best of {rounds} alternating "
          f"rounds (shared machine: other processes' load slows both sides)")
    columns = ["task", "method", "updates/iter", "iters_per_s", "signal_%", "speedup_vs_best_TRL"]
    print_table(rows, columns)
    if why:
        print(f"\nTRL could not be timed: {why}")
    if checks:
        print("\nEquivalence of the TRL model (seqrl GPT converted to GPT2LMHeadModel) and tokenizer:")
        for name, check in checks.items():
            print(f"  {name}: max |logit gap| {check['max_logit_gap_full_block']:.1e} (full block), "
                  f"{check['max_logit_gap_left_padded_prompts']:.1e} (left-padded prompts, seqrl's positions); "
                  f"ids match {check['tokenizer_ids_match']}, texts match {check['tokenizer_texts_match']}")
            assert check["max_logit_gap_full_block"] < 1e-4 and check["max_logit_gap_left_padded_prompts"] < 1e-4, \
                "the converted GPT-2 must give seqrl's logits"
            assert check["tokenizer_ids_match"] and check["tokenizer_texts_match"], "the HF tokenizer must give seqrl's ids"
        if any(c["left_padded_gap_without_position_ids"] > 1e-4 for c in checks.values()):
            gaps = ", ".join(f"{n} {c['left_padded_gap_without_position_ids']:.2f}" for n, c in checks.items())
            print(f"  note: TRL scores completions without position_ids, so on left-padded prompts GPT-2's learned absolute "
                  f"positions count the pads (logit gap {gaps}), while HF generate and seqrl count real tokens only: "
                  f"TRL's training log-probs are not those of the sampler there. This changes what TRL learns, not its speed.")
    payload = {"P": P, "k": k, "warmup": warmup, "rounds": rounds, "lr": LR, "rows": rows, "checks": checks,
               "versions": _versions(), "peer_missing": why or None}
    path = write_json("rl", payload)
    print(f"wrote {path}")
    return rows


def _versions() -> dict:
    out = {}
    for module in ("trl", "transformers", "datasets", "tokenizers", "accelerate"):
        try:
            out[module] = require(module).__version__
        except PeerMissing:
            out[module] = None
    return out


if __name__ == "__main__":
    main()
