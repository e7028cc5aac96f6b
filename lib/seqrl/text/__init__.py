"""Text: tokenizers with special tokens, padding helpers, and synthetic corpora."""
from .arithmetic import ADDITION_SPECIALS, AdditionTask
from .batching import IGNORE_INDEX, last_token_index, lm_inputs_and_targets, pad_batch, response_mask
from .corpora import SentenceGrammar
from .reviews import REVIEW_SPECIALS, ReviewGrammar
from .tokenizer import SPECIAL_TOKENS, CharTokenizer, Tokenizer, WordTokenizer

__all__ = [
    "last_token_index",
    "ADDITION_SPECIALS",
    "AdditionTask",
    "REVIEW_SPECIALS",
    "ReviewGrammar",
    "IGNORE_INDEX",
    "SPECIAL_TOKENS",
    "CharTokenizer",
    "SentenceGrammar",
    "Tokenizer",
    "WordTokenizer",
    "lm_inputs_and_targets",
    "pad_batch",
    "response_mask",
]
