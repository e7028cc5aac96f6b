"""Chapter 08's headline on the book's own checkpoints: ILQL > filtered BC > BC on twenty questions.

The BC and filtered-BC models are the cached recipes ``twenty_questions_{bc,filtered_bc}_seed{k}``
(built by ``seqrl models``, which ``make test`` runs first); ILQL's heads are trained here on each
BC seed's frozen trunk with the chapter's configuration (seconds). The tests read the cache the
session started with and never write to it.
"""
from dataclasses import replace

import pytest
import torch

from seqrl.games import TwentyQuestions, standard_dataset
from seqrl.offline import ILQLAgent, LMAgent, evaluate_runs, train_ilql_heads
from seqrl.offline.recipes import ILQL_BETA, ILQL_CONFIG, ILQL_WIDTH, TRAINING_SEEDS
from seqrl.pretrained import cache_dir, is_cached, pretrained

BOOK_CACHE = cache_dir()  # read at import, before conftest points SEQRL_CACHE at a private folder
TASK = TwentyQuestions()


def book_models(kind: str) -> list:
    names = [f"{TASK.name}_{kind}_seed{k}" for k in TRAINING_SEEDS]
    missing = [n for n in names if not is_cached(n, BOOK_CACHE)]
    if missing:
        pytest.skip(f"checkpoints {missing} are not built in {BOOK_CACHE}: run `seqrl models` (make test does)")
    return [pretrained(n, directory=BOOK_CACHE).model for n in names]


@pytest.fixture(scope="module")
def evaluations():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        bc, filtered = book_models("bc"), book_models("filtered_bc")
        data = standard_dataset(TASK, 3000, seed=0)
        heads = [train_ilql_heads(m, data, replace(ILQL_CONFIG, seed=k), ILQL_WIDTH) for k, m in zip(TRAINING_SEEDS, bc)]
        agents = {"BC": [LMAgent(m) for m in bc], "filtered BC": [LMAgent(m) for m in filtered],
                  "ILQL": [ILQLAgent(q, m, ILQL_BETA) for q, m in zip(heads, bc)]}
        return {method: evaluate_runs(TASK, runs, 100, seed=1) for method, runs in agents.items()}, data
    finally:
        torch.set_num_threads(before)


def test_ilql_beats_filtered_bc_beats_bc_by_more_than_the_seed_spread(evaluations):
    results, _ = evaluations
    bc, filtered, ilql = results["BC"], results["filtered BC"], results["ILQL"]
    assert filtered.beats(bc), f"filtered BC {filtered.returns} vs BC {bc.returns}"
    assert ilql.beats(filtered), f"ILQL {ilql.returns} vs filtered BC {filtered.returns}"


def test_ilql_beats_the_data_it_learned_from_and_nearly_matches_the_optimum(evaluations):
    results, data = evaluations
    ilql = results["ILQL"]
    assert ilql.mean_return > data.returns.float().mean().item() + 0.5  # the behaviour mixture's average
    assert ilql.mean_return > -TASK.optimal_mean_turns() - 0.4  # 4.5 turns is the optimum of 16 objects
    assert ilql.spread < 0.3  # the slow target: training seeds agree
