"""Tokenizers over a fixed symbol set, with special tokens shared by every task in the book.

Special tokens come first and have fixed ids, so ``PAD`` is always 0 and never collides with
``EOS`` (a pad that equals EOS silently masks the stop token out of every loss, a classic RLHF
bug). In text they are written ``<pad>``, ``<bos>``, ... and round-trip through encode/decode.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch

__all__ = ["SPECIAL_TOKENS", "Tokenizer", "CharTokenizer", "WordTokenizer"]

# pad, begin/end of sequence, a turn separator for dialogues, and the two speakers of a game.
SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<sep>", "<user>", "<agent>")


@dataclass(frozen=True)
class Tokenizer:
    """Maps symbols to ids: the special tokens first (``<pad>`` = 0), then ``symbols`` in order.

    Subclasses say how a string splits into symbols (characters or words).
    """

    symbols: tuple[str, ...]
    specials: tuple[str, ...] = SPECIAL_TOKENS
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        symbols, specials = tuple(self.symbols), tuple(self.specials)
        object.__setattr__(self, "symbols", symbols)
        object.__setattr__(self, "specials", specials)
        vocab = specials + symbols
        duplicates = sorted({s for s in vocab if vocab.count(s) > 1})
        if duplicates:
            raise ValueError(f"tokenizer symbols must be unique, repeated: {duplicates}")
        if "<pad>" not in specials or specials[0] != "<pad>":
            raise ValueError("the first special token must be '<pad>' (id 0)")
        object.__setattr__(self, "_index", {s: i for i, s in enumerate(vocab)})

    # ids of the special tokens, by name
    @property
    def pad_id(self) -> int:
        return self._index["<pad>"]

    @property
    def bos_id(self) -> int:
        return self._special_id("<bos>")

    @property
    def eos_id(self) -> int:
        return self._special_id("<eos>")

    @property
    def sep_id(self) -> int:
        return self._special_id("<sep>")

    def _special_id(self, name: str) -> int:
        if name not in self.specials:
            raise KeyError(f"this tokenizer has no {name} token; its specials are {self.specials}")
        return self._index[name]

    @property
    def vocab(self) -> tuple[str, ...]:
        return self.specials + self.symbols

    @property
    def vocab_size(self) -> int:
        return len(self.specials) + len(self.symbols)

    def __len__(self) -> int:
        return self.vocab_size

    def token_id(self, symbol: str) -> int:
        """The id of one symbol or special token."""
        try:
            return self._index[symbol]
        except KeyError:
            raise KeyError(f"{symbol!r} is not in the vocabulary") from None

    # splitting is what subclasses define
    def split(self, text: str) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def join(self, pieces: Sequence[str]) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Ids of ``text`` (special tokens written ``<eos>`` etc. are recognised).

        Raises ``ValueError`` naming the first symbol outside the vocabulary.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, got {type(text).__name__}")
        ids = [self.bos_id] if bos else []
        for piece in self._split_specials(text):
            if piece in self.specials:
                ids.append(self._index[piece])
                continue
            for symbol in self.split(piece):
                if symbol not in self._index:
                    raise ValueError(f"{symbol!r} in {text!r} is not in the tokenizer's vocabulary")
                ids.append(self._index[symbol])
        if eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Iterable[int] | torch.Tensor, skip_special: bool = False, stop_at_eos: bool = False) -> str:
        """Text of ``ids``; optionally drop special tokens or cut at the first ``<eos>``."""
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"decode takes one sequence (1-D), got shape {tuple(ids.shape)}; use decode_batch")
            ids = ids.tolist()
        vocab = self.vocab
        pieces: list[str] = []
        run: list[str] = []
        for i in ids:
            if not 0 <= int(i) < len(vocab):
                raise ValueError(f"token id {i} is outside the vocabulary [0, {len(vocab)})")
            symbol = vocab[int(i)]
            if stop_at_eos and symbol == "<eos>":
                break
            if symbol in self.specials:
                if run:
                    pieces.append(self.join(run))
                    run = []
                if not skip_special:
                    pieces.append(symbol)
            else:
                run.append(symbol)
        if run:
            pieces.append(self.join(run))
        return self._join_pieces(pieces)

    def decode_batch(self, ids: torch.Tensor, **kwargs) -> list[str]:
        """``decode`` every row of a ``(B, T)`` tensor."""
        if ids.dim() != 2:
            raise ValueError(f"decode_batch takes a (batch, time) tensor, got shape {tuple(ids.shape)}")
        return [self.decode(row, **kwargs) for row in ids.tolist()]

    def _split_specials(self, text: str) -> list[str]:
        pattern = "(" + "|".join(re.escape(s) for s in self.specials) + ")"
        return [piece for piece in re.split(pattern, text) if piece]

    def _join_pieces(self, pieces: list[str]) -> str:
        return "".join(pieces)

    def to_dict(self) -> dict:
        return {"kind": type(self).__name__, "symbols": list(self.symbols), "specials": list(self.specials)}

    @staticmethod
    def from_dict(spec: dict) -> "Tokenizer":
        kinds = {"CharTokenizer": CharTokenizer, "WordTokenizer": WordTokenizer}
        if spec.get("kind") not in kinds:
            raise ValueError(f"unknown tokenizer kind {spec.get('kind')!r}; expected one of {sorted(kinds)}")
        return kinds[spec["kind"]](tuple(spec["symbols"]), tuple(spec["specials"]))


class CharTokenizer(Tokenizer):
    """One token per character. ``CharTokenizer.from_text(corpus)`` takes the corpus's characters."""

    def split(self, text: str) -> list[str]:
        return list(text)

    def join(self, pieces: Sequence[str]) -> str:
        return "".join(pieces)

    @classmethod
    def from_text(cls, texts: Iterable[str], specials: tuple[str, ...] = SPECIAL_TOKENS) -> "CharTokenizer":
        chars: set[str] = set()
        for text in texts:
            chars.update(text)
        return cls(tuple(sorted(chars)), specials)


class WordTokenizer(Tokenizer):
    """One token per whitespace-separated word (the word-level tasks of Part 2)."""

    def split(self, text: str) -> list[str]:
        return text.split()

    def join(self, pieces: Sequence[str]) -> str:
        return " ".join(pieces)

    def _join_pieces(self, pieces: list[str]) -> str:
        return " ".join(pieces)
