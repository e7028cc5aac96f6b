"""Sampling speed: the tiny GPT's KV-cache ``generate`` against the same model without the cache.

Measures 128 new tokens for a batch of 64 prompts (one ``<bos>``-like token each) at three model
sizes, and checks on the way that both paths sample identical tokens from the same seed. The peer is
Hugging Face ``transformers``' GPT-2 of the same configuration, ``generate(use_cache=True)`` with pure
sampling (``pip install -e .[bench]``).
Run: ``python bench/bench_sampling.py`` (or ``make bench``).
"""
from __future__ import annotations

import torch

import seqrl
from seqrl.models import GPT, GPTConfig

from common import SIZES, print_table, time_call, write_json
from peers import PeerMissing, hf_gpt2, hf_sample

def main(batch: int = 64, new_tokens: int = 128, vocab: int = 32) -> list[dict]:
    seqrl.configure_threads()
    device = seqrl.device()
    rows = []
    for name, dims in SIZES.items():
        seqrl.seed_everything(0)
        model = GPT(GPTConfig(vocab_size=vocab, block_size=new_tokens + 1, **dims)).to(device).eval()
        prompts = torch.ones(batch, 1, dtype=torch.long, device=device)

        outputs = {}

        def run(use_cache: bool):
            generator = torch.Generator(device=device).manual_seed(0)
            outputs[use_cache] = model.generate(prompts, new_tokens, use_cache=use_cache, generator=generator)

        cached = time_call(lambda: run(True))
        uncached = time_call(lambda: run(False), repeats=1, warmup=0)  # slow: one run is enough
        identical = torch.equal(outputs[True].tokens, outputs[False].tokens)
        try:
            seqrl.seed_everything(0)
            peer = hf_gpt2(model.config).to(device).eval()
            with torch.no_grad():
                peer_s = time_call(lambda: hf_sample(peer, prompts, new_tokens))
        except PeerMissing as missing:
            print(missing)
            peer_s = float("nan")
        rows.append(
            {
                "model": name,
                "parameters": model.num_parameters(),
                "cache_s": round(cached, 3),
                "no_cache_s": round(uncached, 3),
                "speedup": round(uncached / cached, 1),
                "hf_generate_s": round(peer_s, 3),
                "speedup_vs_hf": round(peer_s / cached, 2),
                "tokens_per_s_cached": int(batch * new_tokens / cached),
                "identical_tokens": identical,
            }
        )
    print(f"Sampling {new_tokens} new tokens for a batch of {batch} on {device}")
    print_table(rows, list(rows[0]))
    path = write_json("sampling", {"batch": batch, "new_tokens": new_tokens, "rows": rows})
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
