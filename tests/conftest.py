"""Shared fixtures: a small GPT and a private pretrained cache for every test session."""
from __future__ import annotations

import pytest
import torch

from seqrl.models import GPT, GPTConfig


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Tests never read or write the user's real checkpoint cache."""
    monkeypatch.setenv("SEQRL_CACHE", str(tmp_path / "seqrl-cache"))


@pytest.fixture
def one_torch_thread():
    """Tiny models run fastest on one thread (and never fight a parallel test worker for the cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def small_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=23, block_size=48, n_layer=2, n_head=2, n_embd=32)).eval()


@pytest.fixture(scope="session")
def tiny_addition():
    """A one-layer addition GPT trained for a few seconds (tests never build the book's checkpoint)."""
    from seqrl.models.training import train_language_model
    from seqrl.text import AdditionTask
    from seqrl.zoo import encode_corpus

    task = AdditionTask()
    tokenizer = task.tokenizer()
    train = encode_corpus(tokenizer, [p + a for p, a in task.corpus(3000, seed=0)], 16)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=32))
    train_language_model(model, train, steps=120, batch_size=64, lr=5e-3, warmup=10, eval_every=10_000)
    return model.eval(), tokenizer
