"""Cached checkpoints of Part 3's offline baselines (registered with :func:`seqrl.pretrained`).

* ``twenty_questions_filtered_bc``: the book's tiny GPT trained
  by behaviour cloning (agent tokens only, :func:`~seqrl.offline.bc.train_bc`) on the ``top``
  fraction of the standard logged dialogues by return (the same data as the ``*_bc`` recipes).

Plain BC is the ``*_bc`` recipe of chapter 07 (trained on every token of the same dialogues; as an
agent only its agent-token conditionals matter).
"""
from __future__ import annotations

from ..models.gpt import GPT, GPTConfig
from ..pretrained import Pretrained, Recipe, register
from ..utils import configure_threads, device, seed_everything
from .bc import train_bc
from .data import top_fraction

__all__ = ["FILTERED_BC", "build_filtered_bc"]

FILTERED_BC = dict(top=0.2, n_train=3000, n_layer=2, n_head=4, n_embd=64, block_size=128, steps=600, batch_size=32, lr=3e-3)


def build_filtered_bc(seed: int, task_name: str, top: float, n_train: int, n_layer: int, n_head: int, n_embd: int,
                      block_size: int, steps: int, batch_size: int, lr: float) -> Pretrained:
    """Filtered BC: behaviour cloning on the best ``top`` fraction of the standard dataset."""
    from ..games import make_task, standard_dataset

    configure_threads()
    task = make_task(task_name)
    data = top_fraction(standard_dataset(task, n_train, seed=0), top)
    seed_everything(seed)
    config = GPTConfig(vocab_size=task.tokenizer().vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd)
    model = GPT(config).to(device())
    history = train_bc(model, data, steps=steps, batch_size=batch_size, lr=lr, seed=seed, desc=f"training '{task_name}_filtered_bc'")
    last = history.train_loss[-50:]
    metrics = {"train_loss": sum(last) / len(last), "episodes": float(len(data.tokens)),
               "data_return": float(data.returns.float().mean()), "seconds": history.seconds}
    return Pretrained(f"{task_name}_filtered_bc", model, task.tokenizer(), history, metrics)


for _task in ("twenty_questions",):  # guess-my-number gets its recipe when a chapter uses it
    register(Recipe(
        name=f"{_task}_filtered_bc",
        description=f"behaviour cloning on the top {FILTERED_BC['top']:.0%} of {_task}'s logged dialogues (chapter 08)",
        build=build_filtered_bc,
        params={"task_name": _task, **FILTERED_BC},
        seed=0,
        version=1,
    ))
