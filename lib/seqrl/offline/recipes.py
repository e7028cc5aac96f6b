"""Cached checkpoints of Part 3's offline baselines (registered with :func:`seqrl.pretrained`).

Every offline learner starts from the same pretrained dialogue model, chapter 07's ``{task}_bc``
(a GPT trained on every token of the standard logged dialogues), as every method of LMRL-Gym starts
from the same pretrained GPT-2. Then, per task and training seed ``k`` in 0, 1, 2:

* ``{task}_bc_seed{k}``: behaviour cloning (agent tokens only, :func:`~seqrl.offline.bc.train_bc`)
  on *all* the standard logged dialogues;
* ``{task}_filtered_bc_seed{k}``: the same training on the ``top`` fraction of them by return
  (:func:`~seqrl.offline.data.top_fraction`).

The two differ in their data only (same start, trainer, steps and batch seed ``k``), which is the
comparison filtered BC is about. ILQL's heads train on the frozen hidden states of
``{task}_bc_seed{k}`` in the chapter itself (seconds), with :data:`ILQL_CONFIG`.

:data:`ILQL_CONFIG`'s slow target (Polyak rate 0.01) is what makes those heads reproducible. With a
rate of 0.1 the TD phase fed its own noise back into V: over 12 head seeds (3 BC trunks x 4) twenty
questions ranged from -4.6 to -6.3 (one run in two below filtered BC); at 0.01 the same 12 runs
gave -4.55 to -4.68, and guess-my-number -3.23 to -3.30 (sweep of 2026-12-02, 100 games per run).
"""
from __future__ import annotations

from ..pretrained import Pretrained, Recipe, recipes, register
from ..utils import configure_threads, seed_everything
from .bc import train_bc
from .data import top_fraction
from .ilql import ILQLConfig

__all__ = ["FINE_TUNE", "FILTER_TOP", "ILQL_BETA", "ILQL_CONFIG", "ILQL_WIDTH", "TRAINING_SEEDS", "build_offline_bc"]

TRAINING_SEEDS = (0, 1, 2)
# the fraction of episodes filtered BC keeps, per task (chosen by the sweep reported in chapter 08)
FILTER_TOP = {"twenty_questions": 0.4, "guess_my_number": 0.4}
FINE_TUNE = dict(n_train=3000, steps=200, batch_size=32, lr=1e-3, warmup=20)
# ILQL on a frozen BC trunk, as chapter 08 trains it: a Monte-Carlo warm start, then 120 ILQL steps
ILQL_CONFIG = ILQLConfig(tau=0.7, cql_weight=0.3, gamma=1.0, polyak=0.01, warm_start_steps=300, steps=120,
                         lr=5e-3, batch_size=32, seed=0)
ILQL_WIDTH = 64  # hidden width of the heads' MLPs
ILQL_BETA = 8.0  # inverse temperature of the policy extraction (the best of 4, 8, 16 on both tasks)


def build_offline_bc(seed: int, task_name: str, init: str, init_fingerprint: str, top: float, n_train: int,
                     steps: int, batch_size: int, lr: float, warmup: int) -> Pretrained:
    """Fine-tune the pretrained dialogue model ``init`` by behaviour cloning on the best ``top``
    fraction of the standard dataset (``top = 1``: plain BC). ``init_fingerprint`` is only there to
    rebuild this checkpoint when ``init``'s recipe changes."""
    from ..games import make_task, standard_dataset
    from ..pretrained import pretrained

    configure_threads()
    task = make_task(task_name)
    data = standard_dataset(task, n_train, seed=0)
    data = top_fraction(data, top) if top < 1.0 else data
    model = pretrained(init).model.train()
    seed_everything(seed)
    name = f"{task_name}_{'filtered_' if top < 1.0 else ''}bc_seed{seed}"
    history = train_bc(model, data, steps=steps, batch_size=batch_size, lr=lr, warmup=warmup, seed=seed, desc=f"training '{name}'")
    last = history.train_loss[-50:]
    metrics = {"train_loss": sum(last) / len(last), "episodes": float(len(data)),
               "data_return": float(data.returns.float().mean()), "seconds": history.seconds}
    return Pretrained(name, model, task.tokenizer(), history, metrics)


def _register() -> None:
    known = recipes()  # the book's recipes, among them the pretrained dialogue models ``{task}_bc``
    for task, top in FILTER_TOP.items():
        init = f"{task}_bc"
        base = {"task_name": task, "init": init, "init_fingerprint": known[init].fingerprint(), **FINE_TUNE}
        for seed in TRAINING_SEEDS:
            register(Recipe(
                name=f"{task}_bc_seed{seed}",
                description=f"{init} fine-tuned by behaviour cloning on all of {task}'s logged dialogues, training seed {seed} (chapter 08)",
                build=build_offline_bc, params={**base, "top": 1.0}, seed=seed, version=1))
            register(Recipe(
                name=f"{task}_filtered_bc_seed{seed}",
                description=f"{init} fine-tuned by behaviour cloning on the top {top:.0%} of {task}'s logged dialogues, training seed {seed} (chapter 08)",
                build=build_offline_bc, params={**base, "top": top}, seed=seed, version=1))


_register()
