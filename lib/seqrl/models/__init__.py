"""Tiny GPT models, their sampler and the heads that read their hidden states."""
from .completions import Completions, encode_completions, encode_prompts, sample_completions
from .gpt import GPT, GPTConfig, GPTOutput, Generation, KVCache, StaticKVCache
from .heads import ValueHead, gather_last
from .scoring import logprobs, token_logprobs
from .sampling import sample_from_logits, sampling_logprobs

__all__ = [
    "logprobs",
    "token_logprobs",
    "Completions",
    "encode_completions",
    "encode_prompts",
    "sample_completions",
    "GPT",
    "GPTConfig",
    "GPTOutput",
    "Generation",
    "KVCache",
    "StaticKVCache",
    "ValueHead",
    "gather_last",
    "sample_from_logits",
    "sampling_logprobs",
]
