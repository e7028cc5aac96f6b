"""The tiny GPT: shapes, the KV cache, padding, sampling and heads."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seqrl.models import GPT, GPTConfig, ValueHead, gather_last, sample_from_logits, sampling_logprobs


def test_forward_returns_logits_hidden_and_cache(small_gpt):
    idx = torch.randint(0, 23, (3, 7))
    out = small_gpt(idx)
    assert out.logits.shape == (3, 7, 23)
    assert out.hidden.shape == (3, 7, 32)
    assert len(out.past) == 2
    assert out.past[0][0].shape == (3, 2, 7, 16)


def test_forward_is_causal(small_gpt):
    idx = torch.randint(0, 23, (2, 10))
    changed = idx.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 23
    a, b = small_gpt(idx).logits, small_gpt(changed).logits
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_incremental_forward_with_cache_matches_full_forward(small_gpt):
    idx = torch.randint(0, 23, (2, 12))
    full = small_gpt(idx)
    first = small_gpt(idx[:, :5])
    rest = small_gpt(idx[:, 5:], past=first.past)
    torch.testing.assert_close(rest.logits, full.logits[:, 5:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rest.hidden, full.hidden[:, 5:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("temperature,top_k", [(1.0, None), (0.7, None), (1.3, 5), (0.0, None)])
def test_sampling_with_cache_gives_the_same_tokens_as_without(small_gpt, temperature, top_k):
    prompts = torch.randint(0, 23, (16, 3))
    kwargs = dict(max_new_tokens=40, temperature=temperature, top_k=top_k)
    cached = small_gpt.generate(prompts, use_cache=True, generator=torch.Generator().manual_seed(7), **kwargs)
    uncached = small_gpt.generate(prompts, use_cache=False, generator=torch.Generator().manual_seed(7), **kwargs)
    assert torch.equal(cached.tokens, uncached.tokens)
    torch.testing.assert_close(cached.logprobs, uncached.logprobs, atol=1e-5, rtol=1e-5)


def test_generate_is_deterministic_given_the_generator(small_gpt):
    prompts = torch.zeros(4, 1, dtype=torch.long)
    a = small_gpt.generate(prompts, 20, generator=torch.Generator().manual_seed(3))
    b = small_gpt.generate(prompts, 20, generator=torch.Generator().manual_seed(3))
    c = small_gpt.generate(prompts, 20, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.tokens, b.tokens)
    assert not torch.equal(a.tokens, c.tokens)


def test_generated_logprobs_are_the_models_logprobs(small_gpt):
    """The sampler and the scorer use the same distribution: re-scoring gives the same numbers."""
    prompts = torch.randint(0, 23, (5, 4))
    out = small_gpt.generate(prompts, 10, temperature=0.8, generator=torch.Generator().manual_seed(0))
    seq = torch.cat([prompts, out.tokens], dim=1)
    logits = small_gpt(seq).logits[:, 3:-1] / 0.8
    rescored = F.log_softmax(logits, -1).gather(-1, out.tokens[..., None]).squeeze(-1)
    torch.testing.assert_close(out.logprobs, rescored, atol=1e-5, rtol=1e-5)


def test_stop_token_ends_a_row_and_pads_the_rest(small_gpt):
    prompts = torch.randint(0, 23, (32, 2))
    out = small_gpt.generate(prompts, 30, stop_token=5, pad_token=0, generator=torch.Generator().manual_seed(1))
    stopped = 0
    for row, logprobs in zip(out.tokens, out.logprobs):
        hits = (row == 5).nonzero()
        if len(hits):
            stopped += 1
            first = int(hits[0])
            assert (row[first + 1 :] == 0).all()
            assert (logprobs[first + 1 :] == 0).all()
    assert stopped > 0


def test_stopped_rows_leave_the_cached_batch_without_changing_any_sample(small_gpt):
    # rows stop at different steps; with the cache they are dropped from the batch, yet every row
    # draws its uniform at every step, so the tokens are those of the recomputing path
    lengths = torch.tensor([3, 1, 2, 3, 2, 1, 3, 3] * 4)
    prompts = torch.randint(1, 23, (32, 3), generator=torch.Generator().manual_seed(0))
    mask = (torch.arange(3)[None, :] >= 3 - lengths[:, None]).long()  # left padding
    for attention_mask in (None, mask):
        kwargs = dict(stop_token=5, pad_token=0, attention_mask=attention_mask)
        cached = small_gpt.generate(prompts, 30, use_cache=True, generator=torch.Generator().manual_seed(2), **kwargs)
        recomputed = small_gpt.generate(prompts, 30, use_cache=False, generator=torch.Generator().manual_seed(2), **kwargs)
        stop_steps = {int((row == 5).nonzero()[0]) for row in cached.tokens if (row == 5).any()}
        assert len(stop_steps) > 3, "rows stop at several different steps"
        assert torch.equal(cached.tokens, recomputed.tokens)
        torch.testing.assert_close(cached.logprobs, recomputed.logprobs, atol=1e-5, rtol=0)


def test_identical_prompts_are_computed_once_and_sample_as_if_each_had_its_own(small_gpt):
    """k samples of each prompt (RLOO, best-of-n): the prompts' forward pass runs on the distinct
    prompts only (one row per prompt), and the samples are those of the recomputing path."""
    prompts = torch.randint(1, 23, (4, 3), generator=torch.Generator().manual_seed(5))
    mask = torch.tensor([[1, 1, 1], [0, 1, 1], [0, 0, 1], [0, 1, 1]])
    prompts[3, 1:] = prompts[1, 1:]  # rows 1 and 3: the same real tokens behind different padding tokens
    prompts, mask = prompts.repeat_interleave(3, dim=0), mask.repeat_interleave(3, dim=0)  # 12 rows, 3 distinct prompts
    prompt_batches = []
    hook = small_gpt.tok_emb.register_forward_hook(lambda module, args, out: prompt_batches.append(tuple(args[0].shape)))
    try:
        kwargs = dict(stop_token=5, pad_token=0, attention_mask=mask, temperature=1.0)
        cached = small_gpt.generate(prompts, 20, use_cache=True, generator=torch.Generator().manual_seed(1), **kwargs)
    finally:
        hook.remove()
    assert prompt_batches[0] == (3, 3)  # the prefill: 3 distinct prompts, not 12 rows
    recomputed = small_gpt.generate(prompts, 20, use_cache=False, generator=torch.Generator().manual_seed(1), **kwargs)
    assert torch.equal(cached.tokens, recomputed.tokens)
    torch.testing.assert_close(cached.logprobs, recomputed.logprobs, atol=1e-5, rtol=0)
    assert len({tuple(row.tolist()) for row in cached.tokens}) > 6  # copies of a prompt sample different tokens


def test_left_padding_does_not_change_logits_or_samples(small_gpt):
    prompt = torch.randint(1, 23, (1, 5))
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), prompt], dim=1)
    mask = torch.tensor([[0] * 4 + [1] * 5])
    torch.testing.assert_close(small_gpt(padded, attention_mask=mask).logits[:, 4:], small_gpt(prompt).logits, atol=1e-5, rtol=1e-5)
    plain = small_gpt.generate(prompt, 15, generator=torch.Generator().manual_seed(2)).tokens
    for use_cache in (True, False):
        left = small_gpt.generate(padded, 15, attention_mask=mask, use_cache=use_cache, generator=torch.Generator().manual_seed(2))
        assert torch.equal(left.tokens, plain)


def test_a_static_cache_with_padding_between_chunks_gives_the_logits_of_the_real_tokens(small_gpt):
    # two rows grow by different numbers of tokens per call (as games in play() do): each chunk is
    # left-padded, so the cache holds padding between real tokens; positions count real tokens only
    from seqrl.models import StaticKVCache

    rows = [[3, 4, 5, 6, 7, 8, 9], [10, 11, 12, 13, 14, 15, 16]]
    chunks = [([3, 4], [10]), ([5], [11, 12, 13]), ([6, 7, 8], [14]), ([9], [15, 16])]  # per call: row 0's, row 1's
    cache = StaticKVCache.for_model(small_gpt, 2, 64)
    slots = torch.zeros(2, 64, dtype=torch.long)
    with torch.no_grad():
        for new in chunks:
            width = max(map(len, new))
            tokens = torch.zeros(2, width, dtype=torch.long)
            mask = torch.zeros(2, width, dtype=torch.long)
            for r, toks in enumerate(new):
                tokens[r, width - len(toks):], mask[r, width - len(toks):] = torch.tensor(toks), 1
            slots[:, cache.length : cache.length + width] = mask
            out = small_gpt(tokens, past=cache, attention_mask=slots[:, : cache.length + width])
        full = small_gpt(torch.tensor(rows)).logits[:, -1]
    assert cache.length == 2 + 3 + 3 + 2 > len(rows[0])  # more slots than real tokens
    torch.testing.assert_close(out.logits[:, -1], full, atol=1e-5, rtol=1e-5)
    cache.select(torch.tensor([1]))  # drop row 0: row 1 goes on alone
    with torch.no_grad():
        alone = small_gpt(torch.tensor([[17]]), past=cache, attention_mask=torch.cat([slots[1:, : cache.length], torch.ones(1, 1, dtype=torch.long)], 1))
        reference = small_gpt(torch.tensor([rows[1] + [17]])).logits[:, -1]
    torch.testing.assert_close(alone.logits[:, -1], reference, atol=1e-5, rtol=1e-5)


def test_a_padded_cache_may_exceed_block_size_but_its_real_tokens_may_not(small_gpt):
    from seqrl.models import StaticKVCache

    cache = StaticKVCache.for_model(small_gpt, 1, 128)  # block_size 48
    with torch.no_grad():
        small_gpt(torch.zeros(1, 40, dtype=torch.long), past=cache, attention_mask=torch.zeros(1, 40, dtype=torch.long))  # 40 padding slots
        small_gpt(torch.ones(1, 30, dtype=torch.long), past=cache, attention_mask=torch.cat([torch.zeros(1, 40), torch.ones(1, 30)], 1).long())
        with pytest.raises(ValueError, match="sequence of 49 tokens exceeds the model's block_size 48"):
            small_gpt(torch.ones(1, 19, dtype=torch.long), past=cache, attention_mask=torch.cat([torch.zeros(1, 40), torch.ones(1, 49)], 1).long())


def test_bad_input_gives_clear_errors(small_gpt):
    with pytest.raises(ValueError, match="batch, time"):
        small_gpt(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="integer token ids"):
        small_gpt(torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 23\)"):
        small_gpt(torch.tensor([[1, 99]]))
    with pytest.raises(ValueError, match="block_size"):
        small_gpt(torch.zeros(1, 49, dtype=torch.long))
    with pytest.raises(ValueError, match="block_size"):
        small_gpt.generate(torch.zeros(1, 10, dtype=torch.long), 40)
    with pytest.raises(ValueError, match="attention_mask"):
        small_gpt(torch.zeros(2, 3, dtype=torch.long), attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(vocab_size=10, n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="vocab_size"):
        GPTConfig(vocab_size=0)


def test_sampling_frequencies_match_the_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2, 0.0]])).expand(20000, 4)
    tokens, logprobs = sample_from_logits(logits, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(tokens, minlength=4).float() / len(tokens)
    torch.testing.assert_close(freq, torch.tensor([0.5, 0.3, 0.2, 0.0]), atol=0.015, rtol=0)
    torch.testing.assert_close(logprobs.exp(), torch.tensor([0.5, 0.3, 0.2])[tokens])


def test_top_k_and_temperature_shape_the_sampling_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    top2 = sampling_logprobs(logits, 1.0, top_k=2).exp()
    torch.testing.assert_close(top2, torch.tensor([[1 / (1 + torch.e**-1), 1 / (1 + torch.e), 0.0, 0.0]]))
    cold = sampling_logprobs(logits, 0.5).exp()
    torch.testing.assert_close(cold, torch.softmax(logits / 0.5, -1))
    with pytest.raises(ValueError, match="temperature"):
        sampling_logprobs(logits, 0.0)


def test_value_head_zero_init_and_gather_last():
    head = ValueHead(8)
    assert torch.equal(head(torch.randn(2, 5, 8)), torch.zeros(2, 5))
    values = torch.arange(12.0).view(2, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 1, 1]])
    assert gather_last(values, mask).tolist() == [2.0, 11.0]
    with pytest.raises(ValueError, match="features"):
        head(torch.randn(2, 7))
    with pytest.raises(ValueError, match="no real token"):
        gather_last(values, torch.zeros(2, 6))


def test_value_head_reads_the_trunk_and_gets_gradients(small_gpt):
    head = ValueHead(small_gpt.config.n_embd, init="normal")
    values = head(small_gpt(torch.randint(0, 23, (2, 6))).hidden)
    values.sum().backward()
    assert values.shape == (2, 6)
    assert small_gpt.tok_emb.weight.grad is not None and small_gpt.tok_emb.weight.grad.abs().sum() > 0


def test_inputs_embeds_feed_the_same_trunk(small_gpt):
    idx = torch.randint(0, 23, (2, 5))
    from_ids = small_gpt(idx)
    from_vectors = small_gpt(None, inputs_embeds=small_gpt.tok_emb(idx))
    torch.testing.assert_close(from_ids.logits, from_vectors.logits)
    first = small_gpt(None, inputs_embeds=small_gpt.tok_emb(idx[:, :3]))
    rest = small_gpt(None, past=first.past, inputs_embeds=small_gpt.tok_emb(idx[:, 3:]))
    torch.testing.assert_close(rest.hidden, from_ids.hidden[:, 3:], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="exactly one"):
        small_gpt(idx, inputs_embeds=small_gpt.tok_emb(idx))
    with pytest.raises(ValueError, match="inputs_embeds must have shape"):
        small_gpt(None, inputs_embeds=torch.randn(2, 5, 7))


def test_sample_completions_left_pads_prompts_and_masks_after_eos():
    from seqrl.models import sample_completions
    from seqrl.text import CharTokenizer

    tok = CharTokenizer(tuple("ab"))
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=1, n_embd=8))
    out = sample_completions(model, tok, ["a", "abab", ""], 6, generator=torch.Generator().manual_seed(0))
    assert out.prompt_tokens.shape == (3, 5) and out.prompt_mask.tolist()[2] == [0, 0, 0, 0, 1]
    assert out.tokens.shape == out.mask.shape == out.logprobs.shape
    for row, mask, finished in zip(out.tokens, out.mask, out.finished):
        if finished:
            eos = int((row == tok.eos_id).nonzero()[0])
            assert mask[: eos + 1].all() and not mask[eos + 1 :].any()
            assert (row[eos + 1 :] == tok.pad_id).all()
    assert out.sequences.shape == (3, 11) and out.attention_mask.shape == (3, 11)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_scoring_reproduces_the_sampling_logprobs_exactly(temperature):
    """With learning rate 0 the PPO ratio is 1: rollout and training log-probs agree, padding included."""
    from seqrl.models import logprobs, sample_completions
    from seqrl.text import CharTokenizer

    tok = CharTokenizer(tuple("abc"))
    torch.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=24, n_layer=2, n_head=2, n_embd=16)).eval()
    out = sample_completions(model, tok, ["a", "abcab", "", "cc"], 10, temperature=temperature, generator=torch.Generator().manual_seed(0))
    scored = logprobs(model, out.sequences, out.attention_mask, out.prompt_tokens.shape[1], temperature)
    torch.testing.assert_close(scored * out.mask, out.logprobs * out.mask, atol=1e-5, rtol=1e-5)
    scored, hidden = logprobs(model, out.sequences, out.attention_mask, out.prompt_tokens.shape[1], temperature, return_hidden=True)
    assert hidden.shape == (4, 10, 16)
    with pytest.raises(ValueError, match="response_start"):
        logprobs(model, out.sequences, out.attention_mask, 0)


def test_encode_completions_lays_out_stored_responses_as_the_sampler_does():
    from seqrl.models import encode_completions
    from seqrl.text import CharTokenizer

    tok = CharTokenizer("ab+=")
    a, b, plus, eq = (tok.encode(c)[0] for c in "ab+=")
    stored = encode_completions(tok, ["a+b=", "ab="], ["ba", "aab"], [True, False])
    bos, eos, pad = tok.bos_id, tok.eos_id, tok.pad_id
    assert stored.prompt_tokens.tolist() == [[bos, a, plus, b, eq], [pad, bos, a, b, eq]]  # left-padded prompts
    assert stored.tokens.tolist() == [[b, a, eos], [a, a, b]]  # <eos> only where finished, then <pad>
    assert stored.mask.tolist() == [[1, 1, 1], [1, 1, 1]]
    assert stored.finished.tolist() == [True, False]
    short = encode_completions(tok, ["a"], ["b"], [True])
    assert short.tokens.tolist() == [[b, eos]] and short.attention_mask.tolist() == [[1, 1, 1, 1]]
    with pytest.raises(ValueError, match="one prompt, text and finished"):
        encode_completions(tok, ["a", "b"], ["a"], [True, True])
    with pytest.raises(ValueError, match="empty and unfinished"):
        encode_completions(tok, ["a"], [""], [False])


def test_length_buckets_minimise_padded_work_plus_a_cost_per_group():
    from seqrl.models.scoring import length_buckets

    # 10 short rows and 2 long ones: one group costs 12 * 20 + c, two cost 10 * 5 + 2 * 20 + 2c
    widths = [5] * 10 + [20, 20]
    assert length_buckets(widths, group_cost=100) == [(list(range(10)), 5), ([10, 11], 20)]  # 290 < 340
    assert length_buckets(widths, group_cost=200) == [(list(range(12)), 20)]  # 440 < 490
    # unsorted rows come back grouped by width, every row exactly once, each group at its largest width
    widths = [9, 3, 3, 9, 4, 30, 3]
    groups = length_buckets(widths, group_cost=4)
    assert sorted(r for rows, _ in groups for r in rows) == list(range(7))
    assert all(width == max(widths[r] for r in rows) for rows, width in groups)
    assert groups == [([1, 2, 6, 4], 4), ([0, 3], 9), ([5], 30)]
    # the split is the cheapest of all splits of the sorted order (brute force over cut points)
    import itertools

    ordered = sorted(widths)
    def cost(cuts):
        bounds = [0, *cuts, len(ordered)]
        return sum((b - a) * ordered[b - 1] + 4 for a, b in zip(bounds, bounds[1:]))
    best = min(cost(c) for n in range(7) for c in itertools.combinations(range(1, 7), n))
    assert sum(len(rows) * width + 4 for rows, width in groups) == best
    assert length_buckets([]) == []


def test_scoring_in_length_groups_and_shared_prompts_gives_the_values_and_gradients_of_one_pass():
    """Rows of very different lengths are scored in groups, each cut to its longest row, and rows
    that share a prompt compute it once: the log-probabilities, hidden states and gradients on the
    real tokens are those of one full pass."""
    from seqrl.models import logprobs, sample_completions, token_logprobs
    from seqrl.models.scoring import _groups, _shared_prompts
    from seqrl.text import CharTokenizer

    tok = CharTokenizer(tuple("abc"))
    torch.manual_seed(3)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=40, n_layer=2, n_head=2, n_embd=16)).eval()
    prompts = ["a", "abcab", "", "cc"] * 16
    out = sample_completions(model, tok, prompts, 30, generator=torch.Generator().manual_seed(0))
    # make the lengths very unequal: end half of the rows after 2 tokens
    tokens, mask = out.tokens.clone(), out.mask.clone()
    tokens[::2, 2:], mask[::2, 2:] = tok.pad_id, 0
    tokens[::2, 1] = tok.eos_id
    sequences = torch.cat([out.prompt_tokens, tokens], dim=1)
    attention = torch.cat([out.prompt_mask, mask], dim=1)
    start = out.prompt_tokens.shape[1]
    groups = _groups(sequences, attention, start)
    assert len(groups) >= 2  # this batch is scored in groups
    assert any(_shared_prompts(sequences[rows, :w], attention[rows, :w], start)[0] is not None for rows, w in groups)

    def one_pass(model, sequences, attention, start, temperature, return_hidden):
        out = model(sequences, attention_mask=attention)
        return token_logprobs(out.logits[:, start - 1 : -1], sequences[:, start:], temperature), out.hidden[:, start - 1 : -1]

    def loss_and_grads(score):
        model.zero_grad()
        lp, hidden = score(model, sequences, attention, start, 0.8, True)
        (lp * mask).sum().backward()
        return lp.detach(), hidden.detach(), [p.grad.clone() for p in model.parameters()]

    grouped = loss_and_grads(logprobs)
    one_pass = loss_and_grads(one_pass)
    real = mask.bool()
    torch.testing.assert_close(grouped[0][real], one_pass[0][real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grouped[1][real], one_pass[1][real], atol=1e-5, rtol=1e-5)
    for g1, g2 in zip(grouped[2], one_pass[2]):
        torch.testing.assert_close(g1, g2, atol=1e-5, rtol=1e-4)
    assert torch.isfinite(grouped[0]).all() and torch.isfinite(grouped[1]).all()  # padding columns: finite
