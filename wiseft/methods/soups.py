"""Model soups (Wortsman et al., ICML 2022): averages of fine-tuned models that share one initialisation.

- **Uniform soup**: the plain average of every ingredient's weights.
- **Greedy soup**: ingredients sorted by held-out accuracy, best first; starting from the best alone, each next
  one is added (the soup is the uniform average of the ingredients kept) only if the soup's held-out accuracy
  strictly increases. As in the reference implementation (``mlfoundations/model-soups``, ``main.py``), both the
  order and the acceptance are decided on held-out reference data only, never on test or shift data.

Floating tensors are averaged in float64 and cast back, so the soup of identical checkpoints is that checkpoint
bit for bit (a float32 running average of three copies is not). Tensors that are not floating point (integer
buffers) are taken from the first ingredient, as :mod:`wiseft.methods.interpolate` takes them from one side.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from wiseft.methods.interpolate import StateDict, check_compatible


def _name(names: Sequence[str] | None, i: int) -> str:
    return names[i] if names is not None else f"ingredient {i}"


class _Sum:
    """A running float64 sum of state dicts (integer tensors: the first one's)."""

    def __init__(self, first: StateDict) -> None:
        self.dtypes = {k: v.dtype for k, v in first.items()}
        self.total = {k: v.detach().to(torch.float64, copy=True) if v.is_floating_point() else v.detach().clone()
                      for k, v in first.items()}
        self.count = 1

    def plus(self, other: StateDict, names: tuple[str, str] = ("first", "next")) -> _Sum:
        """A new sum with ``other`` added (this one is left as is); ``names`` name the two in a mismatch error."""
        check_compatible(self.total, other, names=names)
        out = _Sum.__new__(_Sum)
        out.dtypes = self.dtypes
        out.total = {k: t + other[k].detach().to(torch.float64) if t.is_floating_point() else t
                     for k, t in self.total.items()}
        out.count = self.count + 1
        return out

    def mean(self) -> dict[str, torch.Tensor]:
        """The average, in each tensor's original dtype."""
        return {k: (t / self.count).to(self.dtypes[k]) if t.is_floating_point() else t.clone()
                for k, t in self.total.items()}


def uniform_soup(ingredients: Sequence[StateDict], names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """The uniform soup: every floating tensor averaged over the ingredients.

    Args:
        ingredients: State dicts with the same keys and shapes; a lazy sequence is read once, one ingredient at
            a time.
        names: How to call each ingredient in error messages.

    Raises:
        ValueError: No ingredient.
        CheckpointError: Two ingredients differ in keys, shapes or kinds of dtype (naming both).
    """
    if not ingredients:
        raise ValueError("a soup needs at least one ingredient")
    total = _Sum(ingredients[0])
    for i in range(1, len(ingredients)):
        total = total.plus(ingredients[i], (_name(names, 0), _name(names, i)))
    return total.mean()


@dataclass
class GreedySoup:
    """The result of :func:`greedy_soup`.

    Attributes:
        state: The soup's weights.
        ingredients: Indices of the ingredients kept, in the order they were added.
        order: Every ingredient's index, in the order they were tried (best held-out accuracy first).
        held_out: Each ingredient's own held-out accuracy, by index.
        steps: One entry per ingredient tried after the first: its index, the candidate soup's held-out accuracy,
            the best accuracy before it, and whether it was kept.
        accuracy: The final soup's held-out accuracy.
    """

    state: dict[str, torch.Tensor]
    ingredients: list[int]
    order: list[int]
    held_out: list[float]
    steps: list[dict] = field(default_factory=list)
    accuracy: float = float("nan")


def greedy_order(held_out: Sequence[float]) -> list[int]:
    """Indices by decreasing held-out accuracy; ties keep the ingredients' order."""
    return sorted(range(len(held_out)), key=lambda i: (-held_out[i], i))


def greedy_soup(
    ingredients: Sequence[StateDict],
    held_out_accuracy: Callable[[StateDict], float],
    held_out: Sequence[float] | None = None,
    names: Sequence[str] | None = None,
) -> GreedySoup:
    """The greedy soup (the model-soups paper's Recipe 1).

    Args:
        ingredients: State dicts with the same keys and shapes; a lazy sequence is read as needed.
        held_out_accuracy: Accuracy of a state dict on held-out reference data (the only data the recipe reads).
        held_out: Each ingredient's accuracy on that data, if already known (else measured with
            ``held_out_accuracy``).
        names: How to call each ingredient in error messages.

    Returns:
        The soup, which ingredients it kept, and the trace of every decision.

    Raises:
        ValueError: No ingredient, or ``held_out`` of the wrong length.
        CheckpointError: Two ingredients differ in keys or shapes (naming both).
    """
    if not ingredients:
        raise ValueError("a soup needs at least one ingredient")
    scores = [float(s) for s in held_out] if held_out is not None else [held_out_accuracy(s) for s in ingredients]
    if len(scores) != len(ingredients):
        raise ValueError(f"{len(scores)} held-out accuracies for {len(ingredients)} ingredients")
    order = greedy_order(scores)
    total = _Sum(ingredients[order[0]])
    kept, best = [order[0]], scores[order[0]]
    steps = []
    for i in order[1:]:
        candidate = total.plus(ingredients[i], (_name(names, order[0]), _name(names, i)))
        accuracy = float(held_out_accuracy(candidate.mean()))
        # Strictly better only, as in the reference: an ingredient that leaves the accuracy unchanged adds
        # nothing the held-out data can see.
        accepted = accuracy > best
        steps.append({"ingredient": i, "accuracy": accuracy, "best_before": best, "accepted": accepted})
        if accepted:
            total, best = candidate, accuracy
            kept.append(i)
    return GreedySoup(total.mean(), kept, order, scores, steps, best)
