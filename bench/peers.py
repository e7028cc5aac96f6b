"""The tools a reader would pick instead of seqrl, built to match seqrl's models exactly.

Peers are optional (``pip install -e .[bench]``): :func:`require` raises a clear error naming the
missing package, and the benchmarks then report seqrl alone.
"""
from __future__ import annotations

import importlib

import torch

from seqrl.models import GPT, GPTConfig


class PeerMissing(RuntimeError):
    pass


def require(module: str):
    """Import ``module`` or raise :class:`PeerMissing` saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise PeerMissing(f"{module} is not installed: pip install -e '.[bench]' ({error})") from error


def hf_gpt2(config: GPTConfig) -> torch.nn.Module:
    """A randomly initialised Hugging Face ``GPT2LMHeadModel`` with seqrl's configuration: same
    widths, depth, heads, context, vocabulary, exact GELU, no dropout, tied embeddings, biases."""
    transformers = require("transformers")
    transformers.logging.set_verbosity_error()  # no advice about attention masks on unpadded batches
    hf_config = transformers.GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.block_size,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        activation_function="gelu",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    model = transformers.GPT2LMHeadModel(hf_config)
    model.config.use_cache = True
    return model


def parameter_count(model: torch.nn.Module) -> int:
    """Distinct parameters (tied weights counted once), the ``N`` of ``6 N`` FLOPs per token."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def seqrl_gpt(config: GPTConfig) -> GPT:
    return GPT(config)


def hf_sample(model: torch.nn.Module, prompts: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Pure sampling of exactly ``new_tokens`` tokens with the KV cache, as seqrl's ``generate`` does:
    temperature 1, no top-k / top-p truncation (``generate`` would default to top-k 50), no stop token."""
    return model.generate(
        prompts,
        attention_mask=torch.ones_like(prompts),
        do_sample=True,
        top_k=0,
        top_p=1.0,
        temperature=1.0,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        use_cache=True,
        eos_token_id=None,
        pad_token_id=0,
    )


def gpt_to_hf(model: GPT) -> torch.nn.Module:
    """A Hugging Face ``GPT2LMHeadModel`` holding ``model``'s weights (a copy, on ``model``'s device).

    seqrl's GPT follows nanoGPT's layout, which is GPT-2's with other names; GPT-2 stores its linear
    maps as ``Conv1D`` (``y = x W + b`` with ``W (in, out)``), the transpose of ``nn.Linear``'s
    ``(out, in)``. The fused query/key/value projection splits in the same ``q, k, v`` order. A
    missing bias (``GPTConfig.bias=False``) becomes a zero bias, which GPT-2 always has.
    """
    hf = hf_gpt2(model.config)
    state = {}

    def put(name: str, tensor: torch.Tensor | None, like: str) -> None:
        state[name] = tensor.detach().clone() if tensor is not None else torch.zeros_like(hf.state_dict()[like])

    put("transformer.wte.weight", model.tok_emb.weight, "transformer.wte.weight")
    put("transformer.wpe.weight", model.pos_emb.weight, "transformer.wpe.weight")
    for i, block in enumerate(model.blocks):
        h = f"transformer.h.{i}."
        for ours, theirs in ((block.ln_1, "ln_1"), (block.ln_2, "ln_2")):
            put(h + theirs + ".weight", ours.weight, h + theirs + ".weight")
            put(h + theirs + ".bias", ours.bias, h + theirs + ".bias")
        for ours, theirs in ((block.attn.qkv, "attn.c_attn"), (block.attn.proj, "attn.c_proj"),
                             (block.mlp.fc, "mlp.c_fc"), (block.mlp.proj, "mlp.c_proj")):
            put(h + theirs + ".weight", ours.weight.t(), h + theirs + ".weight")  # Linear (out, in) -> Conv1D (in, out)
            put(h + theirs + ".bias", ours.bias, h + theirs + ".bias")
    put("transformer.ln_f.weight", model.ln_f.weight, "transformer.ln_f.weight")
    put("transformer.ln_f.bias", model.ln_f.bias, "transformer.ln_f.bias")
    state["lm_head.weight"] = state["transformer.wte.weight"]  # tied, as in seqrl
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("attn.bias") and not m.endswith("masked_bias")]  # buffers, not weights
    if missing or unexpected:
        raise RuntimeError(f"GPT -> GPT2LMHeadModel conversion left weights out: missing {missing}, unexpected {unexpected}")
    hf.tie_weights()
    return hf.to(model.device)


@torch.no_grad()
def max_logit_gap(model: GPT, hf: torch.nn.Module, idx: torch.Tensor, attention_mask: torch.Tensor | None = None) -> float:
    """max |seqrl logits - GPT-2 logits| over a batch ``idx (B, T)``. With a (left-padding)
    ``attention_mask``, GPT-2 gets seqrl's positions (real tokens counted) and only real positions count."""
    model.eval()
    hf.eval()
    ours = model(idx, attention_mask=attention_mask).logits
    if attention_mask is None:
        theirs = hf(idx).logits
        return float((ours - theirs).abs().max())
    positions = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)
    theirs = hf(idx, attention_mask=attention_mask, position_ids=positions).logits
    real = attention_mask.bool()
    return float((ours - theirs).abs()[real].max())


def hf_tokenizer(tokenizer) -> "PreTrainedTokenizerFast":  # noqa: F821 (transformers is optional)
    """A ``transformers.PreTrainedTokenizerFast`` with exactly seqrl's ids for a seqrl
    :class:`~seqrl.text.CharTokenizer` or :class:`~seqrl.text.WordTokenizer`: same vocabulary order,
    ``<pad>`` = 0, ``<bos>`` prepended to every encoded text (as seqrl's ``encode(bos=True)`` lays out
    a prompt), ``<eos>`` as the stop token, left padding (what TRL requires), and decoding that joins
    characters without spaces / words with one space."""
    transformers = require("transformers")
    tk = require("tokenizers")
    from seqrl.text import CharTokenizer, WordTokenizer

    vocab = {symbol: i for i, symbol in enumerate(tokenizer.vocab)}
    # Unknown symbols are an error in seqrl; map them to <pad> here, the check in the bench catches a mismatch.
    backend = tk.Tokenizer(tk.models.WordLevel(vocab, unk_token="<pad>"))
    if isinstance(tokenizer, CharTokenizer):
        backend.pre_tokenizer = tk.pre_tokenizers.Split(tk.Regex("."), behavior="isolated")
        backend.decoder = tk.decoders.Fuse()
    elif isinstance(tokenizer, WordTokenizer):
        backend.pre_tokenizer = tk.pre_tokenizers.WhitespaceSplit()  # decoding joins words with one space
    else:
        raise ValueError(f"no Hugging Face tokenizer for {type(tokenizer).__name__}; expected a CharTokenizer or WordTokenizer")
    backend.add_special_tokens(list(tokenizer.specials))
    backend.post_processor = tk.processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", tokenizer.bos_id)])
    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
        unk_token="<pad>", padding_side="left", model_max_length=10_000)
    return hf
