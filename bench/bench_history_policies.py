"""History policies: what acting and training cost per trunk, and chapter 03's CartPole runs.

Three tables, all on one torch thread (the chapter's setting):

1. **Acting**: microseconds per ``step`` for a batch of 64 episodes along a 200-step stream (the
   GPT's cache grows to 200 positions), for every trunk, and for the GPT also with the key/value
   cache grown by ``torch.cat`` every step (the GPT's list cache, the way ``GPTTrunk`` acted before
   it wrote a preallocated :class:`~seqrl.models.gpt.StaticKVCache` in place).
2. **PPO iteration** at full length: one rollout of 64 episodes x 200 steps (CartPole held upright so
   no episode ends) and one PPO update on it (4 epochs), per trunk.
3. **CartPole without velocities**: the chapter's training runs (iterations, seconds, mean return of
   256 fresh episodes).

Tables 1-2 report CPU time of this process (one thread: the wall time of a quiet machine), the
fastest of 5 runs, so that other jobs on a shared machine distort them less. Run
``python bench/bench_history_policies.py [--skip-cartpole]``; results go to
``bench/results/history_policies.json``.
"""
from __future__ import annotations

import argparse
import time

import torch

import seqrl
from seqrl.pomdp.cartpole import MaskedCartPole
from seqrl.rl.pg import PGConfig, collect_episodes, evaluate, ppo_update, train
from seqrl.rl.policies import GPTTrunk, make_policy

from common import print_table, write_json

N_ENVS, STEPS = 64, 200
GROWING = "GPT, cache grown by torch.cat"
KINDS = {"memoryless": dict(kind="memoryless"), "stack k=2": dict(kind="stack", k=2), "GRU": dict(kind="gru"),
         "GPT": dict(kind="gpt")}
# Chapter 03's CartPole settings (notebooks/03_history_policies.ipynb, the CartPole section).
CARTPOLE = {
    "memoryless": PGConfig(iterations=15, lr=5e-3, epochs=4, reward_scale=0.01, stop_at_success=0.8, stop_after=1),
    "stack k=2": PGConfig(iterations=25, lr=5e-3, epochs=4, reward_scale=0.01, stop_at_success=0.8, stop_after=1),
    "GRU": PGConfig(iterations=25, lr=5e-3, epochs=4, reward_scale=0.01, stop_at_success=0.8, stop_after=1),
    "GPT": PGConfig(iterations=18, lr=5e-3, epochs=4, minibatches=2, reward_scale=0.01, stop_at_success=0.8, stop_after=1),
}


class GrowingCacheGPT(GPTTrunk):
    """The reference way of acting: the GPT's list cache, grown by ``torch.cat`` every step (no resets)."""

    def initial_state(self, n: int) -> list:
        return [None]

    def step(self, obs: torch.Tensor, state: list) -> tuple[torch.Tensor, list]:
        out = self.gpt(None, past=state[0], inputs_embeds=self.embed(obs)[:, None])
        return out.hidden[:, 0], [out.past]


class Upright(MaskedCartPole):
    """CartPole whose state is zeroed after every step: no episode ends before ``max_steps``."""

    def step(self, actions: torch.Tensor):
        result = super().step(actions)
        self._env.state[:] = 0.0
        return result


def cpu_seconds(fn, repeats: int = 5) -> float:
    """The fastest of ``repeats`` runs of ``fn()`` (after one warm-up), in CPU seconds of this process."""
    fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.process_time()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.process_time() - start)
    return min(times)


def build(name: str, device: torch.device) -> torch.nn.Module:
    seqrl.seed_everything(0)
    return make_policy(**KINDS[name], obs_dim=2, n_actions=2, block_size=STEPS).to(device)


def policies(device: torch.device) -> dict[str, torch.nn.Module]:
    """Every trunk, plus the GPT acting with the list cache (same weights) as the reference."""
    built = {name: build(name, device) for name in KINDS}
    reference = build("GPT", device)
    reference.trunk = GrowingCacheGPT(2, n_embd=32, block_size=STEPS).to(device)
    reference.trunk.load_state_dict(built["GPT"].trunk.state_dict())
    built[GROWING] = reference
    return built


def acting(built: dict[str, torch.nn.Module], device: torch.device) -> list[dict]:
    obs = torch.randn(N_ENVS, STEPS, 2, device=device)

    def stream(policy):
        state = policy.initial_state(N_ENVS)
        for t in range(STEPS):
            logits, values, state = policy.step(obs[:, t], state)
        return logits

    rows = []
    with torch.inference_mode():
        last = {name: stream(policy) for name, policy in built.items()}
        for name, policy in built.items():
            seconds = cpu_seconds(lambda: stream(policy))
            rows.append({"trunk": name, "us_per_step": round(seconds / STEPS * 1e6)})
    same = float((last["GPT"] - last[GROWING]).abs().max())
    print(f"Acting: one step of {N_ENVS} episodes, averaged over a {STEPS}-step stream "
          f"(the two GPT caches agree to {same:.1e})")
    print_table(rows, list(rows[0]))
    return rows


def ppo_iteration(built: dict[str, torch.nn.Module], device: torch.device) -> list[dict]:
    env = Upright(N_ENVS, STEPS, device=device)
    config = CARTPOLE["GPT"]
    rows = []
    for name, policy in built.items():
        optimizer = torch.optim.Adam(policy.parameters(), lr=0.0)  # lr 0: every repeat updates the same policy
        batch = collect_episodes(env, policy, seed=0)
        rollout = cpu_seconds(lambda: collect_episodes(env, policy, seed=0))
        update = cpu_seconds(lambda: ppo_update(policy, optimizer, batch, config), repeats=3)
        rows.append({"trunk": name, "rollout_s": round(rollout, 3), "ms_per_env_step": round(rollout / STEPS * 1e3, 2),
                     "update_s": round(update, 3)})
    print(f"\nOne PPO iteration at full length: rollout of {N_ENVS} episodes x {STEPS} steps, update of "
          f"{config.epochs} passes x {config.minibatches} minibatches")
    print_table(rows, list(rows[0]))
    return rows


def cartpole(device: torch.device) -> list[dict]:
    rows = []
    for name, config in CARTPOLE.items():
        policy = build(name, device)
        env = MaskedCartPole(n_envs=N_ENVS, max_steps=STEPS, device=device)
        cpu = time.process_time()
        log = train(policy, env, config, seed=0)
        cpu = time.process_time() - cpu
        result = evaluate(MaskedCartPole(n_envs=256, device=device), policy, greedy=False)
        rows.append({"policy": name, "iterations": len(log.returns), "seconds": round(log.seconds, 1),
                     "cpu_seconds": round(cpu, 1), "mean_return": round(result["return"], 1)})
    print(f"\nCartPole without velocities (chapter 03's runs, {STEPS}-step cap, mean return of 256 episodes)")
    print_table(rows, list(rows[0]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-cartpole", action="store_true", help="only the acting and PPO-iteration tables")
    args = parser.parse_args()
    seqrl.configure_threads(1)
    device = seqrl.device()
    built = policies(device)
    payload = {"acting": acting(built, device), "ppo_iteration": ppo_iteration(built, device)}
    if not args.skip_cartpole:
        payload["cartpole"] = cartpole(device)
    print(f"wrote {write_json('history_policies', payload)}")


if __name__ == "__main__":
    main()
