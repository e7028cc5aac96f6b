"""The shared learning-rate schedules and evaluation recorder against hand-computed values."""
import math
from dataclasses import dataclass, field

import pytest
import torch

from seqrl.models.schedules import record_evaluation, warmup_cosine, warmup_linear_decay


def test_warmup_cosine_rises_linearly_then_decays_to_a_tenth():
    assert warmup_cosine(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 1.0, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 1.0, 10) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 1.0, 10) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 2)))
    assert warmup_cosine(100, 100, 2.0, 10) == pytest.approx(0.2)


def test_warmup_linear_decay_warms_up_then_anneals_to_zero():
    factor = warmup_linear_decay(total=10, warmup=4)
    assert [round(factor(t), 6) for t in (0, 3, 4, 9)] == [round(0.2 * 1.0, 6), round(0.8 * 0.7, 6), 0.6, 0.1]
    assert warmup_linear_decay(10, 0, anneal=False)(7) == 1.0
    with pytest.raises(ValueError, match="total >= 1"):
        warmup_linear_decay(0)


def test_record_evaluation_appends_metrics_without_gradients():
    @dataclass
    class History:
        evals: dict = field(default_factory=dict)
        steps: list = field(default_factory=list)

    model = torch.nn.Linear(1, 1)
    history = History()
    record_evaluation(history, history.steps, lambda m: {"grad_on": float(torch.is_grad_enabled())}, model, 3)
    record_evaluation(history, history.steps, None, model, 4)
    assert history.evals == {"grad_on": [0.0]} and history.steps == [3]
