"""Weight-merging methods on hand-made tensors: model soups, Model Stock, the Fisher-weighted merge."""

import math

import pytest
import torch
from safetensors import safe_open
from torch import nn

from wiseft.errors import CheckpointError
from wiseft.methods.fisher import (
    FLOOR,
    FisherMix,
    estimate_fisher,
    fisher_interpolate,
    fisher_merge,
    fisher_sums,
    load_fisher,
    save_fisher,
)
from wiseft.methods.interpolate import interpolate
from wiseft.methods.model_stock import EPS, model_stock, stock_ratio, stock_ratios
from wiseft.methods.soups import greedy_order, greedy_soup, uniform_soup


def _state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g), "steps": torch.tensor(seed)}


# --- model soups -----------------------------------------------------------------------------------------------


def test_uniform_soup_of_identical_checkpoints_is_that_checkpoint_bit_for_bit():
    state = _state(0)
    for n in (1, 2, 3, 7):
        soup = uniform_soup([state] * n)
        assert soup.keys() == state.keys()
        assert all(torch.equal(soup[k], state[k]) and soup[k].dtype == state[k].dtype for k in state), n


def test_uniform_soup_is_the_average_and_takes_integers_from_the_first():
    states = [_state(i) for i in range(3)]
    soup = uniform_soup(states)
    torch.testing.assert_close(soup["w"], sum(s["w"] for s in states) / 3)
    assert soup["steps"].item() == 0


def test_soup_of_mismatched_checkpoints_names_both():
    a, b = _state(0), _state(1)
    b["w"] = torch.zeros(3, 4)
    with pytest.raises(CheckpointError, match=r"key 'w' has shape \(4, 3\) in the job 0 weights but \(3, 4\) in the "
                                              r"job 1 weights"):
        uniform_soup([a, b], names=["job 0", "job 1"])


def _accuracy_of(target: torch.Tensor):
    """A stand-in for held-out accuracy: 100 minus the distance to ``target`` (every call is recorded)."""
    calls = []

    def accuracy(state):
        calls.append(state)
        return 100.0 - float((state["w"] - target).norm())

    return accuracy, calls


def test_greedy_soup_never_accepts_a_model_that_lowers_held_out_accuracy():
    target = torch.zeros(4, 3)
    # Ingredients at different distances from the target: some lower the soup's accuracy when averaged in.
    states = [{"w": torch.full((4, 3), v), "b": torch.zeros(3)} for v in (0.5, -0.4, 3.0, -0.45, 2.0, 0.3)]
    accuracy, _ = _accuracy_of(target)
    soup = greedy_soup(states, accuracy)
    individual = [accuracy(s) for s in states]
    assert soup.order == greedy_order(individual) and soup.order[0] == 5  # best alone first
    best = individual[soup.order[0]]
    for step in soup.steps:
        assert step["best_before"] == best
        assert step["accepted"] == (step["accuracy"] > best)
        if step["accepted"]:
            best = step["accuracy"]
    assert soup.ingredients == [5, 1]  # -0.4 averages 0.3 to -0.05; every later ingredient would lower it
    assert [s["ingredient"] for s in soup.steps if not s["accepted"]] == [3, 0, 4, 2]
    assert soup.accuracy == best == accuracy(soup.state) >= max(individual)
    torch.testing.assert_close(soup.state["w"], sum(states[i]["w"] for i in soup.ingredients) / len(soup.ingredients))


def test_greedy_soup_rejects_an_ingredient_that_leaves_accuracy_unchanged():
    states = [{"w": torch.ones(2)}, {"w": torch.ones(2)}]
    soup = greedy_soup(states, lambda s: 50.0)
    assert soup.ingredients == [0] and soup.steps[0]["accepted"] is False


def test_greedy_soup_uses_given_held_out_accuracies_for_the_order():
    states = [{"w": torch.full((2,), float(i))} for i in range(3)]
    accuracy, calls = _accuracy_of(torch.full((2,), 2.0))
    soup = greedy_soup(states, accuracy, held_out=[10.0, 30.0, 20.0])
    assert soup.order == [1, 2, 0] and len(calls) == 2  # only the candidate soups are evaluated


# --- Model Stock -----------------------------------------------------------------------------------------------


def test_model_stock_ratio_equals_a_direct_computation():
    w0 = {"a": torch.tensor([1.0, 1.0, 0.0]), "b": torch.tensor([[2.0, 0.0]]), "n": torch.tensor(5)}
    w1 = {"a": torch.tensor([2.0, 1.0, 0.0]), "b": torch.tensor([[3.0, 1.0]]), "n": torch.tensor(6)}
    w2 = {"a": torch.tensor([2.0, 2.0, 0.0]), "b": torch.tensor([[1.0, 1.0]]), "n": torch.tensor(7)}
    # a: offsets (1, 0, 0) and (1, 1, 0): cos = 1/sqrt(2). b: offsets (1, 1) and (-1, 1): cos = 0.
    cos_a = 1 / math.sqrt(2)
    t_a = 2 * cos_a / (1 + cos_a)
    ratios = stock_ratios(w0, [w1, w2])
    assert ratios.keys() == {"a", "b"}
    assert ratios["a"] == pytest.approx(t_a, rel=1e-6) and ratios["b"] == pytest.approx(0.0, abs=1e-7)
    merged, _ = model_stock(w0, [w1, w2])
    average_a = torch.tensor([2.0, 1.5, 0.0])
    torch.testing.assert_close(merged["a"], t_a * average_a + (1 - t_a) * w0["a"])
    torch.testing.assert_close(merged["b"], w0["b"])  # orthogonal runs: back to the pretrained weights
    assert merged["n"].item() == 6


def test_model_stock_ratio_formula_for_n_runs_and_its_limits():
    assert stock_ratio(1.0, 2) == pytest.approx(1.0)  # identical directions: the average itself
    assert stock_ratio(0.0, 5) == 0.0
    cos = 0.3
    assert stock_ratio(cos, 3) == pytest.approx(3 * cos / (1 + 2 * cos + EPS))
    # Three runs: the mean of the three pairwise cosines.
    w0 = {"x": torch.zeros(2)}
    runs = [{"x": torch.tensor([1.0, 0.0])}, {"x": torch.tensor([0.0, 1.0])}, {"x": torch.tensor([1.0, 1.0])}]
    mean_cos = (0.0 + 1 / math.sqrt(2) + 1 / math.sqrt(2)) / 3  # pairs (1, 2), (1, 3), (2, 3)
    assert stock_ratios(w0, runs)["x"] == pytest.approx(3 * mean_cos / (1 + 2 * mean_cos), rel=1e-6)


def test_model_stock_of_an_untouched_layer_keeps_the_pretrained_weights():
    w0 = {"frozen": torch.ones(3), "tuned": torch.zeros(3)}
    runs = [{"frozen": torch.ones(3), "tuned": torch.tensor([1.0, 0.0, 0.0])},
            {"frozen": torch.ones(3), "tuned": torch.tensor([1.0, 0.1, 0.0])}]
    merged, ratios = model_stock(w0, runs)
    assert ratios["frozen"] == 0.0 and torch.equal(merged["frozen"], w0["frozen"])
    assert 0.9 < ratios["tuned"] < 1.0


def test_model_stock_needs_two_runs():
    with pytest.raises(ValueError, match="at least two fine-tuned runs, got 1"):
        model_stock(_state(0), [_state(1)])


# --- Fisher-weighted merge -------------------------------------------------------------------------------------


def test_fisher_merge_with_equal_fishers_is_the_plain_average():
    states = [_state(i) for i in range(3)]
    g = torch.Generator().manual_seed(9)
    fisher = {"w": torch.rand(4, 3, generator=g) + 0.1, "b": torch.rand(3, generator=g) + 0.1}
    merged = fisher_merge(states, [fisher] * 3)
    torch.testing.assert_close(merged["w"], uniform_soup(states)["w"])
    torch.testing.assert_close(merged["b"], uniform_soup(states)["b"])


def test_fisher_merge_with_equal_fishers_and_alpha_is_wiseft():
    a, b = _state(0), _state(1)
    fisher = {"w": torch.rand(4, 3) + 0.5, "b": torch.rand(3) + 0.5}
    for alpha in (0.0, 0.25, 0.5, 0.9, 1.0):
        expected = interpolate(a, b, alpha)
        general = fisher_merge([a, b], [fisher, fisher], [1 - alpha, alpha])
        pairwise = fisher_interpolate(a, b, fisher, fisher, alpha)
        for k in ("w", "b"):
            torch.testing.assert_close(general[k], expected[k])
            torch.testing.assert_close(pairwise[k], expected[k])
    assert all(torch.equal(fisher_interpolate(a, b, fisher, fisher, 0.0)[k], a[k]) for k in ("w", "b"))
    assert all(torch.equal(fisher_interpolate(a, b, fisher, fisher, 1.0)[k], b[k]) for k in ("w", "b"))


def test_fisher_weights_pull_towards_the_more_certain_model():
    a, b = {"w": torch.zeros(2)}, {"w": torch.ones(2)}
    f_a, f_b = {"w": torch.tensor([9.0, 0.0])}, {"w": torch.tensor([1.0, 1.0])}
    out = fisher_interpolate(a, b, f_a, f_b, 0.5)
    # (0.5 * 9 * 0 + 0.5 * 1 * 1) / (0.5 * 9 + 0.5 * 1) = 0.1; a zero Fisher is floored, so b wins there.
    torch.testing.assert_close(out["w"], torch.tensor([0.1, 1.0 / (1.0 + FLOOR)]))


def test_fisher_mix_writes_the_pure_function_into_a_module():
    torch.manual_seed(3)
    m0, m1, target = nn.Linear(5, 2), nn.Linear(5, 2), nn.Linear(5, 2)
    t0, t1 = m0.state_dict(), m1.state_dict()
    f0 = {k: torch.rand_like(v) for k, v in t0.items()}
    f1 = {k: torch.rand_like(v) for k, v in t0.items()}
    mix = FisherMix(f0, f1)
    for alpha in (0.0, 0.4, 1.0):
        mix(target, t0, t1, alpha)
        expected = fisher_interpolate(t0, t1, f0, f1, alpha)
        for k, v in target.state_dict().items():
            torch.testing.assert_close(v, expected[k], rtol=1e-6, atol=1e-7)


def test_a_fisher_on_one_side_only_is_refused():
    a, b = _state(0), _state(1)
    with pytest.raises(CheckpointError, match="key 'b' has a Fisher for some models but not for others"):
        fisher_interpolate(a, b, {"b": torch.ones(3)}, {}, 0.5)


def _tiny_classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3))


def _batches(n: int = 10, batch: int = 4):
    g = torch.Generator().manual_seed(1)
    images = torch.randn(n, 3, 2, 2, generator=g)
    labels = torch.randint(0, 3, (n,), generator=g)
    return [(images[i:i + batch], labels[i:i + batch]) for i in range(0, n, batch)], images, labels


def test_empirical_fisher_equals_the_batch_size_one_loop_of_the_reference():
    model = _tiny_classifier()
    theta = {k: v.detach().clone() for k, v in model.state_dict().items()}
    batches, images, labels = _batches()
    fisher = estimate_fisher(model, theta, batches, 7, labels="true", chunk=3)
    expected = {k: torch.zeros_like(p) for k, p in model.named_parameters()}
    for i in range(7):
        model.zero_grad()
        nn.functional.cross_entropy(model(images[i:i + 1]), labels[i:i + 1]).backward()
        for k, p in model.named_parameters():
            expected[k] += p.grad ** 2 / 7
    assert fisher.keys() == expected.keys()
    for k in expected:
        torch.testing.assert_close(fisher[k], expected[k])


def test_sampled_fisher_does_not_depend_on_how_the_examples_are_split():
    model = _tiny_classifier()
    theta = {k: v.detach().clone() for k, v in model.state_dict().items()}
    batches, images, labels = _batches(n=8)
    whole, n = fisher_sums(model, theta, batches, 8, seed=5)
    first, n1 = fisher_sums(model, theta, [(images[:3], labels[:3])], 3, seed=5)
    second, n2 = fisher_sums(model, theta, [(images[3:], labels[3:])], 5, seed=5, first_index=3)
    assert (n, n1, n2) == (8, 3, 5)
    for k in whole:
        torch.testing.assert_close(first[k] + second[k], whole[k])
    other, _ = fisher_sums(model, theta, batches, 8, seed=6)
    assert any(not torch.allclose(other[k], whole[k]) for k in whole)  # the labels are sampled, not the data's


def test_estimated_fisher_round_trips_through_safetensors(tmp_path):
    model = _tiny_classifier()
    theta = {k: v.detach().clone() for k, v in model.state_dict().items()}
    fisher = estimate_fisher(model, theta, _batches()[0], 10)
    path = tmp_path / "fisher_finetuned.safetensors"
    save_fisher(fisher, path, {"examples": 10, "labels": "sampled"})
    with safe_open(str(path), framework="pt") as f:  # a plain safetensors file any tool can read
        assert set(f.keys()) == set(fisher)
    loaded, meta = load_fisher(path)
    assert loaded.keys() == fisher.keys() and all(torch.equal(loaded[k], fisher[k]) for k in fisher)
    assert meta["examples"] == 10 and meta["labels"] == "sampled"
    assert all((v >= 0).all() for v in loaded.values())


def test_load_fisher_refuses_a_file_that_is_not_a_fisher(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="is not a Fisher written by wiseft"):
        load_fisher(path)
