"""Multi-turn language tasks with rule-based oracles (the simulated "users" of Part 3).

A task (:class:`TwentyQuestions`, :class:`GuessMyNumber`) is a guessing game given by an answer
table; it renders dialogues as word tokens, answers utterances as the oracle, offers behaviour
policies of different quality, logs their games as an :class:`OfflineDataset`
(:func:`build_dataset`) and evaluates any token-level agent in batch (:func:`play`).
"""
from .dataset import STANDARD_MIX, OfflineDataset, build_dataset, encode_dialogue, mix_counts, rollout, standard_dataset
from .guess_number import GuessMyNumber
from .play import Agent, LanguageModelAgent, ScriptedAgent, agent_vocabulary, play
from .policies import BEHAVIOURS, BehaviourPolicy, ExpertPolicy, GuesserPolicy, NoisyPolicy, RandomPolicy, behaviour_policy, reply_entropy
from .task import END_OF_TURN, PARDON, DialogueTask, Turn
from .twenty_questions import TwentyQuestions

TASKS = {"twenty_questions": TwentyQuestions, "guess_my_number": GuessMyNumber}


def make_task(name: str, **kwargs) -> DialogueTask:
    """A task of the book by name: ``"twenty_questions"`` or ``"guess_my_number"``."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)}")
    return TASKS[name](**kwargs)


__all__ = [
    "Agent",
    "BEHAVIOURS",
    "BehaviourPolicy",
    "DialogueTask",
    "END_OF_TURN",
    "ExpertPolicy",
    "GuessMyNumber",
    "GuesserPolicy",
    "LanguageModelAgent",
    "NoisyPolicy",
    "OfflineDataset",
    "PARDON",
    "RandomPolicy",
    "STANDARD_MIX",
    "TASKS",
    "ScriptedAgent",
    "Turn",
    "TwentyQuestions",
    "agent_vocabulary",
    "behaviour_policy",
    "build_dataset",
    "encode_dialogue",
    "make_task",
    "mix_counts",
    "play",
    "reply_entropy",
    "rollout",
    "standard_dataset",
]
