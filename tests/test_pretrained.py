"""The recipe registry and its on-disk cache: train once, verify on load, rebuild what is broken."""
from __future__ import annotations

import warnings

import pytest
import torch

from seqrl import pretrained
from seqrl.pretrained import Recipe, cache_path, recipes, register
from seqrl.zoo import build_sentences

BUILDS = {"count": 0}


def _build_tiny(seed: int, steps: int = 20) -> "pretrained.Pretrained":
    BUILDS["count"] += 1
    return build_sentences(seed, n_train=300, n_val=50, steps=steps, batch_size=16, n_layer=1, n_embd=16, n_head=2)


TINY = register(Recipe(name="test-tiny", description="a seconds-long recipe for tests", build=_build_tiny, params={"steps": 20}))


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_first_call_trains_and_caches_then_loads(tmp_path):
    BUILDS["count"] = 0
    first = pretrained("test-tiny", directory=tmp_path)
    assert BUILDS["count"] == 1
    assert first.path == cache_path("test-tiny", tmp_path) and first.path.exists()
    second = pretrained("test-tiny", directory=tmp_path)
    assert BUILDS["count"] == 1, "a valid cached file must be loaded, not retrained"
    for key, value in _weights(first.model).items():
        assert torch.equal(value, second.model.state_dict()[key])
    assert second.tokenizer == first.tokenizer
    assert second.history.train_loss == first.history.train_loss
    assert set(second.metrics) >= {"train_loss", "val_loss", "grammatical"}
    assert not second.model.training
    assert not list(tmp_path.glob("*.tmp")), "no temporary files may be left behind"


def test_cache_dir_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQRL_CACHE", str(tmp_path / "elsewhere"))
    result = pretrained("test-tiny")
    assert result.path.parent == tmp_path / "elsewhere"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip-weights", "empty"])
def test_a_corrupt_cache_file_is_rebuilt_with_a_warning(tmp_path, damage):
    good = pretrained("test-tiny", directory=tmp_path)
    reference = _weights(good.model)
    path = good.path
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint")
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        payload = torch.load(path, weights_only=True)
        key = next(iter(payload["state_dict"]))
        payload["state_dict"][key] = payload["state_dict"][key] + 1.0
        torch.save(payload, path)
    BUILDS["count"] = 0
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        rebuilt = pretrained("test-tiny", directory=tmp_path)
    assert BUILDS["count"] == 1
    for key, value in reference.items():  # the recipe is deterministic: the same weights come back
        assert torch.equal(value, rebuilt.model.state_dict()[key])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pretrained("test-tiny", directory=tmp_path)  # now valid: loads silently


def test_a_missing_file_is_rebuilt(tmp_path):
    first = pretrained("test-tiny", directory=tmp_path)
    first.path.unlink()
    BUILDS["count"] = 0
    again = pretrained("test-tiny", directory=tmp_path)
    assert BUILDS["count"] == 1 and again.path.exists()


def test_unknown_recipe_names_the_known_ones():
    with pytest.raises(KeyError, match="sentences"):
        pretrained("no-such-model")


def test_fingerprint_depends_on_hyperparameters_and_registration_is_guarded():
    other = Recipe(name="test-tiny", description="", build=_build_tiny, params={"steps": 21})
    assert other.fingerprint() != TINY.fingerprint()
    with pytest.raises(ValueError, match="already registered"):
        register(other)
    register(TINY)  # the same recipe again is fine (re-running a notebook cell)


def test_builtin_sentences_recipe_is_registered_and_deterministic():
    assert "sentences" in recipes()
    a = build_sentences(0, n_train=200, n_val=20, steps=5, batch_size=8, n_layer=1, n_embd=16, n_head=2)
    b = build_sentences(0, n_train=200, n_val=20, steps=5, batch_size=8, n_layer=1, n_embd=16, n_head=2)
    for key, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[key])
    assert a.history.train_loss == b.history.train_loss


def test_review_and_addition_recipes_train_and_report_task_metrics():
    from seqrl.zoo import build_addition, build_reviews

    small = dict(n_train=300, n_val=50, steps=10, batch_size=16, n_layer=1, n_embd=16, n_head=2)
    reviews = build_reviews(0, **small)
    assert {"grammatical", "mean_gold", "val_loss"} <= set(reviews.metrics)
    assert reviews.tokenizer.vocab_size == 27
    addition = build_addition(0, **small)
    assert 0.0 <= addition.metrics["sampled_accuracy"] <= 1.0 and "greedy_accuracy" in addition.metrics
    assert {"reviews", "addition", "sentences"} <= set(recipes())


def test_warm_cache_checks_names_and_jobs_before_building_anything(tmp_path):
    from seqrl.pretrained import is_cached, warm_cache

    assert not is_cached("sentences", tmp_path)
    with pytest.raises(KeyError, match="no pretrained recipe named 'nope'"):
        warm_cache(["sentences", "nope"], directory=tmp_path)
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        warm_cache(["sentences"], jobs=0, directory=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_seqrl_models_lists_every_recipe_and_its_cache_state(tmp_path, monkeypatch, capsys):
    from seqrl.cli import main
    from seqrl.pretrained import recipes

    monkeypatch.setenv("SEQRL_CACHE", str(tmp_path))
    assert main(["models", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sorted(line.split()[0] for line in lines) == sorted(recipes())
    assert all(line.split()[1] == "missing" for line in lines)


def test_recipes_that_start_from_a_checkpoint_are_built_after_those_that_do_not():
    from seqrl.pretrained import build_order

    order = build_order(["twenty_questions_bc_seed1", "addition", "twenty_questions_bc", "guess_my_number_filtered_bc_seed0", "reviews"])
    assert order == ["addition", "twenty_questions_bc", "reviews", "twenty_questions_bc_seed1", "guess_my_number_filtered_bc_seed0"]
