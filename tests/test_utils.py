"""Seeding, device choice, progress bars and plotting defaults."""
from __future__ import annotations

import random

import matplotlib as mpl
import numpy as np
import pytest
import torch

import seqrl
from seqrl.viz import caption, use_style


def test_seed_everything_makes_every_generator_repeat():
    seqrl.seed_everything(11)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    generator = seqrl.seed_everything(11)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
    assert torch.rand(1, generator=generator).item() == torch.rand(1, generator=torch.Generator().manual_seed(11)).item()
    with pytest.raises(TypeError):
        seqrl.seed_everything(1.5)
    with pytest.raises(ValueError):
        seqrl.seed_everything(-1)


def test_device_prefers_cuda_and_can_be_overridden(monkeypatch):
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    monkeypatch.delenv("SEQRL_DEVICE", raising=False)
    assert seqrl.device().type == expected
    monkeypatch.setenv("SEQRL_DEVICE", "cpu")
    assert seqrl.device() == torch.device("cpu")


def test_progress_is_quiet_in_ci(monkeypatch, capsys):
    monkeypatch.setenv("CI", "true")
    assert seqrl.in_ci()
    assert list(seqrl.progress(range(3), desc="x")) == [0, 1, 2]
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("CI", "")
    monkeypatch.delenv("SEQRL_QUIET", raising=False)
    assert not seqrl.in_ci()


def test_configure_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert seqrl.configure_threads(1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("SEQRL_NUM_THREADS", "2")
        assert seqrl.configure_threads() == 2
        with pytest.raises(ValueError):
            seqrl.configure_threads(0)
    finally:
        torch.set_num_threads(before)


def test_plot_style_and_caption(capsys):
    use_style()
    assert mpl.rcParams["axes.spines.top"] is False
    caption("Loss falls to the entropy floor.")
    assert "Figure. Loss falls" in capsys.readouterr().out
    with pytest.raises(ValueError):
        caption("  ")


def test_evaluating_switches_dropout_off_and_restores_the_mode_even_after_an_error():
    from seqrl.utils import evaluating

    model = torch.nn.Sequential(torch.nn.Dropout(0.5))
    model.train()
    with evaluating(model):
        assert not model.training and torch.equal(model(torch.ones(100)), torch.ones(100))  # no dropout
    assert model.training
    with pytest.raises(RuntimeError, match="boom"):
        with evaluating(model):
            raise RuntimeError("boom")
    assert model.training, "the mode comes back when the block raises"
    model.eval()
    with evaluating(model):
        pass
    assert not model.training, "a model in eval mode stays there"
