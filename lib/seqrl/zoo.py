"""The book's model zoo: pretrained recipes, each training a tiny GPT on data that ``seqrl.text`` generates.

* ``sentences``: a character-level GPT (~0.1M parameters) on sentences of
  :class:`~seqrl.text.SentenceGrammar`; the model of chapter 00.
* ``reviews``: a word-level GPT on :class:`~seqrl.text.ReviewGrammar` reviews; the reference
  policy of the RLHF chapters, scored by the hidden gold reader.
* ``addition``: a character-level GPT on ``a+b=`` sums with plausible mistakes; the verifiable-
  reward task whose answers can be enumerated exactly.
* ``twenty_questions_bc`` / ``guess_my_number_bc``: word-level GPTs trained on the logged
  dialogues of :func:`seqrl.games.standard_dataset` (a third each of random, noisy and expert
  games): behaviour cloning of the mixture, the dialogue model of chapter 07.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch

from .models.completions import sample_completions
from .models.gpt import GPT, GPTConfig
from .models.training import TrainHistory, train_language_model
from .pretrained import Pretrained, Recipe, register
from .text.batching import pad_batch
from .text.arithmetic import AdditionTask
from .text.corpora import SentenceGrammar
from .text.reviews import ReviewGrammar
from .text.tokenizer import CharTokenizer, Tokenizer
from .utils import configure_threads, device, seed_everything

__all__ = [
    "build_addition",
    "build_dialogue_bc",
    "build_guess_my_number_bc",
    "build_reviews",
    "build_sentences",
    "build_twenty_questions_bc",
    "encode_corpus",
    "grammaticality",
]


def encode_corpus(tokenizer: Tokenizer, texts: list[str], block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``<bos> text <eos>`` for every text, right-padded into ``(tokens, mask)``."""
    ids = [tokenizer.encode(text, bos=True, eos=True) for text in texts]
    longest = max(map(len, ids))
    if longest > block_size:
        raise ValueError(f"a text of {longest} tokens does not fit block_size {block_size}")
    return pad_batch(ids, tokenizer.pad_id, side="right")


@dataclass(frozen=True)
class PretrainSettings:
    """Data size, model size and optimisation of one pretraining run."""

    n_train: int = 20_000
    n_val: int = 1_000
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    block_size: int = 64
    steps: int = 700
    batch_size: int = 64
    lr: float = 3e-3


def _pretrain(name: str, tokenizer: Tokenizer, train_texts: list[str], val_texts: list[str], seed: int, s: PretrainSettings) -> tuple[GPT, TrainHistory]:
    """Train a fresh GPT on ``<bos> text <eos>`` sequences; the same seed gives the same weights."""
    configure_threads()
    train = encode_corpus(tokenizer, train_texts, s.block_size)
    val = encode_corpus(tokenizer, val_texts, s.block_size)
    seed_everything(seed)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=s.block_size, n_layer=s.n_layer, n_head=s.n_head, n_embd=s.n_embd)
    model = GPT(config).to(device())
    history = train_language_model(
        model, train, val, steps=s.steps, batch_size=s.batch_size, lr=s.lr, seed=seed, desc=f"pretraining '{name}'"
    )
    return model, history


def _loss_metrics(model: GPT, history: TrainHistory) -> dict[str, float]:
    last = history.train_loss[-50:]
    return {
        "train_loss": sum(last) / len(last),
        "val_loss": history.val_loss[-1],
        "parameters": float(model.num_parameters()),
        "seconds": history.seconds,
    }


SENTENCES = PretrainSettings()
REVIEWS = PretrainSettings(block_size=32, steps=800)
ADDITION = PretrainSettings(n_train=40_000, block_size=16, steps=1500, batch_size=128)


def build_sentences(seed: int, **overrides) -> Pretrained:
    """Pretrain a char-level GPT on the sentence grammar; report losses, entropy floor, grammaticality.

    ``overrides`` replace fields of :data:`SENTENCES` (e.g. ``steps=10`` in tests).
    """
    s = replace(SENTENCES, **overrides)
    grammar = SentenceGrammar()
    tokenizer = CharTokenizer(grammar.alphabet())
    model, history = _pretrain("sentences", tokenizer, grammar.sample(s.n_train, seed=seed), grammar.sample(s.n_val, seed=seed + 1), seed, s)
    metrics = _loss_metrics(model, history)
    metrics["entropy_floor"] = grammar.entropy_per_token()
    metrics["grammatical"] = grammaticality(model, tokenizer, grammar, n=256, seed=seed)
    return Pretrained("sentences", model, tokenizer, history, metrics)


def build_reviews(seed: int, **overrides) -> Pretrained:
    """Pretrain a word-level GPT on synthetic reviews (Part 2's reference policy); report gold metrics."""
    s = replace(REVIEWS, **overrides)
    grammar = ReviewGrammar()
    tokenizer = grammar.tokenizer()
    model, history = _pretrain("reviews", tokenizer, grammar.sample(s.n_train, seed=seed), grammar.sample(s.n_val, seed=seed + 1), seed, s)
    completions = sample_completions(model, tokenizer, [""] * 512, s.block_size - 1, generator=_generator(model, seed))
    golds = [grammar.gold(t, bool(f)) for t, f in zip(completions.texts, completions.finished.tolist())]
    metrics = _loss_metrics(model, history)
    metrics["grammatical"] = sum(g != -2.0 for g in golds) / len(golds)
    metrics["mean_gold"] = sum(golds) / len(golds)
    return Pretrained("reviews", model, tokenizer, history, metrics)


def build_addition(seed: int, **overrides) -> Pretrained:
    """Pretrain a char-level GPT on ``a+b=`` sums, 30% of them plausibly wrong (Part 2's RLVR task)."""
    s = replace(ADDITION, **overrides)
    task = AdditionTask()
    tokenizer = task.tokenizer()
    train = [p + a for p, a in task.corpus(s.n_train, seed=seed)]
    val = [p + a for p, a in task.corpus(s.n_val, seed=seed + 10_000)]
    model, history = _pretrain("addition", tokenizer, train, val, seed, s)
    prompts = task.prompts(512, seed=seed + 20_000)
    metrics = _loss_metrics(model, history)
    for name, temperature in (("sampled_accuracy", 1.0), ("greedy_accuracy", 0.0)):
        completions = sample_completions(model, tokenizer, prompts, 4, temperature=temperature, generator=_generator(model, seed))
        scores = [task.gold(p, t, bool(f)) for p, t, f in zip(prompts, completions.texts, completions.finished.tolist())]
        metrics[name] = sum(s == 1.0 for s in scores) / len(scores)
    return Pretrained("addition", model, tokenizer, history, metrics)


@dataclass(frozen=True)
class DialogueSettings(PretrainSettings):
    """A GPT trained on a game's logged dialogues (data from :func:`seqrl.games.standard_dataset`)."""

    n_train: int = 3000
    n_val: int = 300
    block_size: int = 128
    steps: int = 1500
    batch_size: int = 32
    lr: float = 3e-3
    n_eval: int = 300


DIALOGUES = DialogueSettings()


def build_dialogue_bc(task_name: str, seed: int, **overrides) -> Pretrained:
    """Train a GPT on the standard logged dialogues of ``task_name`` and play it against the oracle.

    The model learns every token of the dialogues (its own turns and the user's replies); as an
    agent only its conditionals at the agent's tokens matter, which is behaviour cloning of the
    behaviour mixture. Metrics: sampled and greedy mean return and success over ``n_eval`` games.
    """
    from .games import LanguageModelAgent, make_task, standard_dataset

    s = replace(DIALOGUES, **overrides)
    configure_threads()
    task = make_task(task_name)
    train, val = standard_dataset(task, s.n_train, seed=seed), standard_dataset(task, s.n_val, seed=seed + 1)
    seed_everything(seed)
    config = GPTConfig(vocab_size=task.tokenizer().vocab_size, block_size=s.block_size, n_layer=s.n_layer, n_head=s.n_head, n_embd=s.n_embd)
    model = GPT(config).to(device())
    history = train_language_model(model, (train.tokens, train.mask), (val.tokens, val.mask), steps=s.steps,
                                   batch_size=s.batch_size, lr=s.lr, seed=seed, desc=f"training '{task_name}_bc'")
    metrics = _loss_metrics(model, history)
    metrics["data_return"] = float(train.returns.mean())
    metrics["data_success"] = float(train.success.float().mean())
    for name, greedy in (("sampled", False), ("greedy", True)):
        result = task.play(LanguageModelAgent(model), s.n_eval, seed=seed + 2, greedy=greedy)
        metrics[f"{name}_return"] = float(result["return"].mean())
        metrics[f"{name}_success"] = float(result["success"].float().mean())
        metrics[f"{name}_invalid"] = float(result["invalid"].sum() / result["turns"].sum())
    return Pretrained(f"{task_name}_bc", model, task.tokenizer(), history, metrics)


def build_twenty_questions_bc(seed: int, **overrides) -> Pretrained:
    """Behaviour cloning on twenty questions' standard logged dialogues (chapter 07)."""
    return build_dialogue_bc("twenty_questions", seed, **overrides)


def build_guess_my_number_bc(seed: int, **overrides) -> Pretrained:
    """Behaviour cloning on guess-my-number's standard logged dialogues (chapter 07)."""
    return build_dialogue_bc("guess_my_number", seed, **overrides)


def _generator(model: GPT, seed: int) -> torch.Generator:
    return torch.Generator(device=model.device).manual_seed(seed)


@torch.no_grad()
def grammaticality(model: GPT, tokenizer: Tokenizer, grammar: SentenceGrammar, n: int = 256, seed: int = 0) -> float:
    """Fraction of ``n`` samples (temperature 1, from ``<bos>``) that are finished sentences of ``grammar``."""
    completions = sample_completions(model, tokenizer, [""] * n, model.config.block_size - 1, generator=_generator(model, seed))
    finished = completions.finished.tolist()
    return sum(f and grammar.is_grammatical(text) for text, f in zip(completions.texts, finished)) / n


_BOOK_RECIPES = (
    ("sentences", "char-level GPT (2 layers, 64 wide) on sentences of a small English-like grammar", build_sentences, SENTENCES),
    ("reviews", "word-level GPT (2 layers, 64 wide) on synthetic movie reviews: Part 2's reference policy", build_reviews, REVIEWS),
    ("addition", "char-level GPT (2 layers, 64 wide) on two-digit sums with 30% plausible mistakes", build_addition, ADDITION),
    ("twenty_questions_bc", "word-level GPT (2 layers, 64 wide) cloning random/noisy/expert twenty-questions games", build_twenty_questions_bc, DIALOGUES),
    ("guess_my_number_bc", "word-level GPT (2 layers, 64 wide) cloning random/noisy/expert guess-my-number games", build_guess_my_number_bc, DIALOGUES),
)
for _name, _description, _build, _settings in _BOOK_RECIPES:
    # The settings are part of the fingerprint: changing one builds a new checkpoint.
    register(Recipe(name=_name, description=_description, build=_build, params=asdict(_settings), seed=0, version=1))
