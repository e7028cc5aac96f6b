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
def small_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=23, block_size=48, n_layer=2, n_head=2, n_embd=32)).eval()
