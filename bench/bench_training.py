"""Training throughput: tokens per second of forward + backward + AdamW, seqrl's GPT against the
Hugging Face ``transformers`` GPT-2 of the same configuration, on the same batches; and how far
both are from the machine's limit.

* **Peak**: the measured single-precision matmul rate of this machine (a 1024 x 1024 x 1024 matmul,
  :math:`2n^3` FLOPs), the ceiling for a dense model.
* **Optimiser**: each side the one its library trains with: seqrl's trainers use multi-tensor
  (``foreach``) AdamW (:mod:`seqrl.models.optim`); ``transformers``' ``Trainer`` defaults to the
  fused AdamW kernel (``adamw_torch_fused``) with torch >= 2.8.
* **MFU** (model FLOPs utilisation, Chowdhery et al. 2022): :math:`6 N` FLOPs per trained token
  (forward :math:`2N`, backward :math:`4N`, attention ignored), divided by the peak.

Run: ``python bench/bench_training.py`` (or ``make bench``). Peers need ``pip install -e .[bench]``.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

import seqrl
from seqrl.models import GPT, GPTConfig
from seqrl.models.optim import adamw

from common import SIZES, print_table, write_json
from peers import PeerMissing, hf_gpt2, parameter_count


def matmul_gflops(n: int = 1024, repeats: int = 10) -> float:
    """Measured fp32 matmul GFLOP/s on the current device with the current thread count."""
    device = seqrl.device()
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def _logits(model: torch.nn.Module, idx: torch.Tensor) -> torch.Tensor:
    out = model(idx)
    return out.logits


def make_optimizer(side: str, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The AdamW each library trains with (see the module docstring)."""
    if side == "seqrl":
        return adamw(model.parameters(), 3e-4)
    return torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True)


def tokens_per_second(model: torch.nn.Module, side: str, data: torch.Tensor, batch: int, steps: int, warmup: int = 3) -> float:
    """Train ``model`` for ``warmup + steps`` AdamW steps on consecutive batches of ``data (M, T+1)``;
    tokens per second over the last ``steps``. The loss is the same next-token cross-entropy for every model."""
    model.train()
    optimizer = make_optimizer(side, model)
    T = data.shape[1] - 1
    device = data.device
    start = None
    for step in range(warmup + steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        rows = data[(step * batch) % (len(data) - batch):][:batch]
        logits = _logits(model, rows[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), rows[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * T * steps / (time.perf_counter() - start)


def best_of(models: dict[str, torch.nn.Module], data: torch.Tensor, batch: int, steps: int, rounds: int) -> dict[str, float]:
    """Best tokens/s of each model over ``rounds`` alternating runs: on a shared machine the best run
    is the one least disturbed by other processes, and alternating exposes both to the same load."""
    best = {name: 0.0 for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            best[name] = max(best[name], tokens_per_second(model, name, data, batch, steps))
    return best


def main(batch: int = 32, context: int = 64, steps: int = 20, vocab: int = 32, rounds: int = 3) -> list[dict]:
    seqrl.configure_threads()
    device = seqrl.device()
    peak = max(matmul_gflops() for _ in range(3))
    generator = torch.Generator().manual_seed(0)
    data = torch.randint(0, vocab, (batch * (steps + 8), context + 1), generator=generator).to(device)
    rows = []
    for name, dims in SIZES.items():
        config = GPTConfig(vocab_size=vocab, block_size=context, **dims)
        seqrl.seed_everything(0)
        models = {"seqrl": GPT(config).to(device)}
        try:
            models["hf"] = hf_gpt2(config).to(device)
        except PeerMissing as missing:
            print(missing)
        n = parameter_count(models["seqrl"])
        best = best_of(models, data, batch, steps, rounds)
        row = {"model": name, "parameters": n, "seqrl_tokens_per_s": int(best["seqrl"]), "seqrl_MFU_%": round(100 * 6 * n * best["seqrl"] / (peak * 1e9), 1)}
        if "hf" in best:
            row.update({"hf_parameters": parameter_count(models["hf"]), "hf_tokens_per_s": int(best["hf"]),
                        "hf_MFU_%": round(100 * 6 * n * best["hf"] / (peak * 1e9), 1), "speedup_vs_hf": round(best["seqrl"] / best["hf"], 2)})
        rows.append(row)
    print(f"Training throughput, batch {batch} x context {context}, AdamW, on {device}; matmul peak {peak:.1f} GFLOP/s "
          f"with {torch.get_num_threads()} threads")
    print_table(rows, list(rows[0]))
    path = write_json("training", {"batch": batch, "context": context, "steps": steps, "matmul_gflops": peak, "rows": rows})
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
