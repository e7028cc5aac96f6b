"""ILQL, BC and filtered BC end to end on the two-turn toy whose optimal Q-values are known by hand."""
import copy

import pytest
import torch

from seqrl.models import GPT, GPTConfig
from seqrl.offline import (
    ILQL,
    ILQLAgent,
    ILQLConfig,
    LMAgent,
    TwoStepToy,
    UtteranceAgent,
    decision_states,
    expectile,
    top_fraction,
    train_bc,
    train_ilql,
)

TOY = TwoStepToy()
TOK = TOY.tokenizer()
A, B = TOK.encode("a")[0], TOK.encode("b")[0]


def tiny_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=len(TOK), block_size=16, n_layer=1, n_head=2, n_embd=32))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: more threads only fight over the cores
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    return TOY.dataset(256, seed=0)


@pytest.fixture(scope="module")
def bc(data):
    model = tiny_gpt()
    train_bc(model, data, steps=100, batch_size=32, lr=3e-3, seed=0)
    return model


@pytest.fixture(scope="module")
def ilql(bc, data):
    torch.manual_seed(0)
    # the trunk is trained too: in this toy the BC model's own hidden states need not remember
    # the first word (its prediction is the same 80/20 at both turns), so fixed features cannot work
    model = ILQL(copy.deepcopy(bc), train_trunk=True)
    config = ILQLConfig(tau=0.9, cql_weight=0.01, warm_start_steps=100, steps=250, lr=3e-3, batch_size=32, seed=0)
    train_ilql(model, data, config)
    return model


def first_choice_logits(agent) -> torch.Tensor:
    h0 = TOY.history()
    return agent.next_token_logits(h0, torch.ones_like(h0))[0]


def empirical_ilql_q_of_b(data, tau: float) -> float:
    """ILQL's fixed point on this dataset: the tau-expectile of the second-turn rewards after 'b'."""
    after_b = [t for t in data.texts if t.startswith("<bos> <agent> b")]
    rewards = [1.0 if t.split()[7] == "b" else -1.0 for t in after_b]
    p_plus = sum(r > 0 for r in rewards) / len(rewards)
    return expectile([-1.0, 1.0], [1 - p_plus, p_plus], tau)


def test_toy_dataset_follows_the_behaviour_policy_and_its_rewards(data):
    assert len(data) == 256
    first_a = sum(t.startswith("<bos> <agent> a") for t in data.texts) / len(data)
    assert first_a == pytest.approx(TOY.p_a, abs=0.07)
    assert torch.equal(data.returns, data.rewards.sum(1))
    assert TOY.dataset(256, seed=0).texts == data.texts  # same seed, same data


def test_behaviour_q_and_ilql_fixed_points_by_hand():
    assert TOY.behaviour_q()["b"] == pytest.approx(-0.6)
    assert TOY.optimal_q()["b"] == 1.0
    assert TOY.ilql_q(0.5)["b"] == pytest.approx(-0.6)  # tau = 1/2: the behaviour's value (SARSA)
    assert TOY.ilql_q(0.9)["b"] == pytest.approx(5 / 13)  # 0.9*0.2*(1-e) = 0.1*0.8*(1+e)
    assert TOY.ilql_q(0.999)["b"] > 0.95  # tau -> 1: the optimal value


def test_bc_copies_the_majority_first_word(bc):
    probs = first_choice_logits(LMAgent(bc)).softmax(-1)
    assert probs[A] == pytest.approx(TOY.p_a, abs=0.1)
    assert probs[A] > probs[B]


def test_ilql_learns_q_values_near_the_expectile_fixed_point(ilql, data):
    q, v = ilql.q_and_v(TOY.history())
    assert q[0, -1, B].item() == pytest.approx(empirical_ilql_q_of_b(data, 0.9), abs=0.2)
    assert q[0, -1, A].item() == pytest.approx(0.0, abs=0.15)
    q_b, _ = ilql.q_and_v(TOY.history("b"))
    assert q_b[0, -1, B].item() == pytest.approx(1.0, abs=0.2)
    assert q_b[0, -1, A].item() == pytest.approx(-1.0, abs=0.2)


def test_ilql_recovers_the_optimal_action_where_bc_copies_the_majority(ilql, bc):
    agent = ILQLAgent(ilql, bc, beta=10.0)
    first = first_choice_logits(agent)
    assert first[B] > first[A]
    h1 = TOY.history("b")
    second = agent.next_token_logits(h1, torch.ones_like(h1))[0]
    assert second[B] > second[A]
    assert first_choice_logits(LMAgent(bc)).argmax().item() == A


def test_ilql_at_beta_zero_is_the_behaviour_model(ilql, bc):
    agent_logits = first_choice_logits(ILQLAgent(ilql, bc, beta=0.0))
    assert torch.allclose(agent_logits.softmax(-1), first_choice_logits(LMAgent(bc)).softmax(-1), atol=1e-6)


def test_utterance_agent_commits_to_the_best_candidate(ilql, bc):
    agent = UtteranceAgent(ilql, bc, end_token=TOK.sep_id, turn_start=TOK.token_id("<agent>"), n_candidates=16, max_len=3)
    h0 = TOY.history()
    assert first_choice_logits(agent).argmax().item() == B
    written = torch.cat([h0, torch.tensor([[B]])], dim=1)
    assert agent.next_token_logits(written, torch.ones_like(written))[0].argmax().item() == TOK.sep_id


def test_filtered_bc_keeps_the_top_returns(data):
    top = top_fraction(data, 0.1)
    assert len(top) == round(0.1 * len(data))
    assert top.returns.min() >= data.returns.float().quantile(0.85)


def test_agents_read_left_padded_histories_like_unpadded_ones(ilql, bc):
    h0 = TOY.history("b")
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), h0], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones_like(h0)], dim=1)
    agent = ILQLAgent(ilql, bc, beta=4.0)
    assert torch.allclose(agent.next_token_logits(padded, mask), agent.next_token_logits(h0, torch.ones_like(h0)), atol=1e-4)


def test_heads_on_the_bc_model_itself_read_one_forward_pass(bc):
    torch.manual_seed(0)
    shared = ILQL(bc, train_trunk=False)
    separate = ILQL(copy.deepcopy(bc), train_trunk=False)
    separate.load_state_dict(shared.state_dict())
    h = TOY.history("b")
    mask = torch.ones_like(h)
    assert torch.allclose(ILQLAgent(shared, bc, 3.0).next_token_logits(h, mask),
                          ILQLAgent(separate, bc, 3.0).next_token_logits(h, mask), atol=1e-5)


def test_training_is_deterministic(data, bc):
    runs = []
    for _ in range(2):
        torch.manual_seed(1)  # the heads' initial weights
        model = ILQL(copy.deepcopy(bc), train_trunk=True)
        history = train_ilql(model, data, ILQLConfig(steps=10, warm_start_steps=5, batch_size=16, seed=3))
        runs.append((history.series("loss"), model.q_and_v(TOY.history())[0]))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])


def test_decision_states_are_the_states_before_agent_tokens(data):
    states = decision_states(data.action_mask[:1], data.mask[:1])
    # <bos> 0, <agent> 1, a 2, <sep> 3, <user> 4, x 5, <agent> 6, w 7, <sep> 8, <user> 9, x 10, <eos> 11
    assert states[0].nonzero().flatten().tolist() == [1, 2, 6, 7, 11]


def test_configuration_errors_are_clear():
    with pytest.raises(ValueError, match="tau"):
        ILQLConfig(tau=1.0)
    with pytest.raises(ValueError, match="polyak"):
        ILQLConfig(polyak=0.0)
    with pytest.raises(ValueError, match="fraction"):
        top_fraction(TOY.dataset(8), 0.0)


def test_normalised_score_puts_random_at_0_and_the_best_behaviour_at_100():
    from seqrl.offline import normalised_score

    assert normalised_score(-7.0, low=-7.0, high=-4.5) == 0.0
    assert normalised_score(-4.5, low=-7.0, high=-4.5) == 100.0
    assert normalised_score(-5.75, low=-7.0, high=-4.5) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="differ"):
        normalised_score(1.0, 2.0, 2.0)


def test_evaluate_averages_over_seeds_and_reports_the_spread():
    from seqrl.offline import evaluate

    class FixedTask:  # a stand-in for a game: the return is minus the seed
        def play(self, agent, n_episodes, seed):
            return {"return": torch.full((n_episodes,), -float(seed)), "success": torch.ones(n_episodes, dtype=torch.bool),
                    "dialogues": [f"game {seed}"] * n_episodes}

    ev = evaluate(FixedTask(), agent=None, seeds=(1, 2, 3), n_episodes=4)
    assert ev.returns == [-1.0, -2.0, -3.0] and ev.mean_return == -2.0 and ev.spread == 2.0 and ev.success == 1.0
    assert ev.dialogues[0] == "game 1"
