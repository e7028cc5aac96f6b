"""A model on CUDA works with what a learner writes on the CPU (run on a GPU machine; skipped elsewhere)."""
from __future__ import annotations

import pytest
import torch

from seqrl.models import GPT, GPTConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture
def models() -> tuple[GPT, GPT]:
    torch.manual_seed(0)
    cpu = GPT(GPTConfig(vocab_size=13, block_size=24, n_layer=2, n_head=2, n_embd=32)).eval()
    gpu = GPT(GPTConfig(vocab_size=13, block_size=24, n_layer=2, n_head=2, n_embd=32)).eval()
    gpu.load_state_dict(cpu.state_dict())
    return cpu, gpu.cuda()


def test_a_cuda_model_scores_cpu_tokens_like_the_cpu_model(models):
    cpu, gpu = models
    tokens = torch.randint(0, 13, (4, 10))
    mask = torch.ones(4, 10, dtype=torch.long)
    mask[0, :3] = 0
    torch.testing.assert_close(gpu(tokens, attention_mask=mask).logits.cpu(), cpu(tokens, attention_mask=mask).logits, atol=1e-4, rtol=1e-4)


def test_a_cpu_generator_seeds_a_cuda_model_with_the_cpu_models_uniforms(models):
    cpu, gpu = models
    prompts = torch.zeros(8, 1, dtype=torch.long)
    on_cpu = cpu.generate(prompts, 12, generator=torch.Generator().manual_seed(5))
    on_gpu = gpu.generate(prompts, 12, generator=torch.Generator().manual_seed(5))
    assert on_gpu.tokens.device.type == "cuda"
    assert torch.equal(on_gpu.tokens.cpu(), on_cpu.tokens)  # same uniforms, logits equal to ~1e-6: same tokens


def test_ilql_heads_live_on_the_trunks_device(models):
    from seqrl.offline import ILQL

    ilql = ILQL(models[1], width=16, train_trunk=False)
    assert {p.device.type for p in ilql.parameters()} == {"cuda"}
    out = ilql.values(ilql.hidden(torch.randint(0, 13, (2, 6))))
    assert out.q1.device.type == "cuda"
