"""seqrl: RL with sequence models and language models, as a runnable notebook textbook.

One idea runs through the library: a sequence model reading a history is the policy. The same tiny
GPT trunk (:mod:`seqrl.models`) is a history-based policy in a POMDP, a language policy fine-tuned
with RLHF, and a multi-turn agent trained with offline RL.
"""
from .pretrained import pretrained, recipes
from .utils import configure_threads, device, in_ci, progress, seed_everything

__version__ = "0.1.0"

__all__ = ["configure_threads", "device", "in_ci", "pretrained", "progress", "recipes", "seed_everything"]
