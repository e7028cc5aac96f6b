"""The book's model zoo: pretrained recipes, each training a tiny GPT on data that ``seqrl.text`` generates.

``sentences``: a character-level GPT (~0.1M parameters) on sentences of
:class:`~seqrl.text.SentenceGrammar`; the model of chapter 00, and the first example of a
sequence model that later parts turn into a policy.
"""
from __future__ import annotations

import torch

from .models.gpt import GPT, GPTConfig
from .models.training import train_language_model
from .pretrained import Pretrained, Recipe, register
from .text.batching import pad_batch
from .text.corpora import SentenceGrammar
from .text.tokenizer import CharTokenizer
from .utils import configure_threads, device, seed_everything

__all__ = ["build_sentences", "encode_corpus"]


def encode_corpus(tokenizer: CharTokenizer, texts: list[str], block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``<bos> text <eos>`` for every text, right-padded into ``(tokens, mask)``."""
    ids = [tokenizer.encode(text, bos=True, eos=True) for text in texts]
    longest = max(map(len, ids))
    if longest > block_size:
        raise ValueError(f"a text of {longest} tokens does not fit block_size {block_size}")
    return pad_batch(ids, tokenizer.pad_id, side="right")


def build_sentences(
    seed: int,
    n_train: int = 20_000,
    n_val: int = 1_000,
    n_layer: int = 2,
    n_head: int = 4,
    n_embd: int = 64,
    block_size: int = 64,
    steps: int = 700,
    batch_size: int = 64,
    lr: float = 3e-3,
) -> Pretrained:
    """Pretrain a char-level GPT on the sentence grammar and report train/val loss and grammaticality."""
    configure_threads()
    grammar = SentenceGrammar()
    tokenizer = CharTokenizer(grammar.alphabet())
    train = encode_corpus(tokenizer, grammar.sample(n_train, seed=seed), block_size)
    val = encode_corpus(tokenizer, grammar.sample(n_val, seed=seed + 1), block_size)
    seed_everything(seed)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd)
    model = GPT(config).to(device())
    history = train_language_model(
        model, train, val, steps=steps, batch_size=batch_size, lr=lr, seed=seed, desc="pretraining 'sentences'"
    )
    metrics = {
        "train_loss": sum(history.train_loss[-50:]) / len(history.train_loss[-50:]),
        "val_loss": history.val_loss[-1],
        "entropy_floor": grammar.entropy_per_token(),
        "grammatical": grammaticality(model, tokenizer, grammar, n=256, seed=seed),
        "parameters": float(model.num_parameters()),
        "seconds": history.seconds,
    }
    return Pretrained("sentences", model, tokenizer, history, metrics)


@torch.no_grad()
def grammaticality(model: GPT, tokenizer: CharTokenizer, grammar: SentenceGrammar, n: int = 256, seed: int = 0) -> float:
    """Fraction of ``n`` samples (temperature 1, from ``<bos>``) that are sentences of ``grammar``."""
    prompts = torch.full((n, 1), tokenizer.bos_id, dtype=torch.long, device=model.device)
    generator = torch.Generator(device=model.device).manual_seed(seed)
    out = model.generate(
        prompts, model.config.block_size - 1, stop_token=tokenizer.eos_id, pad_token=tokenizer.pad_id, generator=generator
    )
    texts = tokenizer.decode_batch(out.tokens.cpu(), stop_at_eos=True, skip_special=True)
    ended = (out.tokens == tokenizer.eos_id).any(dim=1).cpu().tolist()
    return sum(stop and grammar.is_grammatical(text) for text, stop in zip(texts, ended)) / n


register(
    Recipe(
        name="sentences",
        description="char-level GPT (2 layers, 64 wide) on sentences of a small English-like grammar",
        build=build_sentences,
        params={},
        seed=0,
        version=1,
    )
)
