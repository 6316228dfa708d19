"""Choosing alpha on held-out data: the best alpha, or the smallest one within k standard errors of it."""

import math

import pytest

from tests.conftest import compose_cfg
from wiseft.config.schema import WiseftConfig
from wiseft.errors import ConfigError
from wiseft.review.console import selection_note, summary_table
from wiseft.sweep.summary import Columns, add_averages, selection_tolerance, summarize, summarize_methods

COLUMNS = Columns("ref_val", "ref", ("s1",))
# A plateau like the toy's: the held-out curve rises to 0.6 and stays within 1 point of its best (0.8) after it.
VAL = {0.0: 72.3, 0.2: 80.0, 0.4: 84.5, 0.6: 86.6, 0.7: 86.8, 0.8: 87.4, 0.9: 87.2, 1.0: 87.1}


def _rows(val: dict[float, float] = VAL) -> list[dict[str, float]]:
    return [add_averages({"alpha": a, "ref_val": v, "ref": v - 0.5, "s1": 70 - 8 * a}, COLUMNS) for a, v in val.items()]


def test_tolerance_is_k_binomial_standard_errors_of_the_best_accuracy():
    assert selection_tolerance(87.4, 1000, 1.0) == pytest.approx(100 * math.sqrt(0.874 * 0.126 / 1000))
    assert selection_tolerance(87.4, 1000, 2.0) == pytest.approx(2 * selection_tolerance(87.4, 1000, 1.0))
    assert selection_tolerance(87.4, 4000, 1.0) == pytest.approx(selection_tolerance(87.4, 1000, 1.0) / 2)
    assert selection_tolerance(100.0, 1000, 1.0) == 0.0  # no spread to tolerate
    assert selection_tolerance(87.4, 0, 0.0) == 0.0
    with pytest.raises(ValueError, match="no example"):
        selection_tolerance(87.4, 0, 1.0)


def test_plain_argmax_picks_the_best_and_breaks_ties_toward_zero_shot():
    summary = summarize(_rows(), COLUMNS)
    assert summary["chosen_alpha"] == 0.8
    assert summary["selection"] == {"within_se": 0.0, "num_examples": None, "best_alpha": 0.8, "best": 87.4,
                                    "tolerance": 0.0}
    tied = summarize(_rows({0.0: 50.0, 0.5: 80.0, 0.7: 80.0, 1.0: 79.0}), COLUMNS)
    assert tied["chosen_alpha"] == 0.5


def test_one_standard_error_rule_picks_the_smallest_alpha_within_the_noise_of_the_best():
    # 1 SE of 87.4% on 1,000 examples is 1.05 points: 0.6 (86.6) is within, 0.4 (84.5) is not.
    summary = summarize(_rows(), COLUMNS, within_se=1.0, num_examples=1000)
    assert summary["chosen_alpha"] == 0.6
    assert summary["chosen"]["ref_val"] == 86.6
    assert summary["selection"]["best_alpha"] == 0.8
    assert summary["selection"]["tolerance"] == pytest.approx(1.0494, abs=1e-4)
    # More held-out data resolves smaller differences: with 16,000 examples the tolerance is 0.26 points.
    assert summarize(_rows(), COLUMNS, within_se=1.0, num_examples=16000)["chosen_alpha"] == 0.8
    # The reported optimal alphas are the paper's per-column argmaxes, untouched by the rule.
    assert summary["optimal_alpha"]["ref_val"] == 0.8


def test_the_boundary_of_the_tolerance_is_inclusive():
    tolerance = selection_tolerance(90.0, 900, 1.0)  # exactly 1.0 point
    assert tolerance == pytest.approx(1.0)
    summary = summarize(_rows({0.0: 60.0, 0.5: 89.0, 1.0: 90.0}), COLUMNS, within_se=1.0, num_examples=900)
    assert summary["chosen_alpha"] == 0.5


def test_every_method_is_chosen_by_the_same_rule_on_the_same_column():
    curves = {"wiseft": _rows(), "ensemble": _rows({**VAL, 0.6: 85.0, 0.7: 86.5})}
    counts = {"ref_val": 1000, "ref": 2000, "s1": 1000}
    summary = summarize_methods(curves, COLUMNS, within_se=1.0, num_examples=counts)
    assert summary["chosen_alpha"] == 0.6
    assert summary["methods"]["ensemble"]["chosen_alpha"] == 0.7
    assert summary["num_examples"] == counts
    with pytest.raises(ValueError, match="number of examples"):
        summarize(_rows(), COLUMNS, within_se=1.0)


def test_the_default_job_uses_the_one_standard_error_rule_and_a_bad_value_fails_at_compose_time():
    assert compose_cfg([]).wiseft.select_within_se == 1.0
    assert WiseftConfig(select_within_se=0.0).select_within_se == 0.0
    with pytest.raises(ConfigError, match=r"wiseft.select_within_se: .* got -1"):
        WiseftConfig(select_within_se=-1.0)


def test_terminal_says_how_alpha_was_chosen_when_the_rule_moved_it():
    summary = summarize(_rows(), COLUMNS, within_se=1.0, num_examples=1000)
    note = selection_note(summary)
    assert note == "alpha 0.6: smallest within 1 SE (1.0 pts) of the best ref_val (87.4 at 0.8)"
    assert len(note.replace("ref_val", "photo_val")) <= 80  # one line of an 80-column terminal
    assert summary_table(summary).caption == note
    assert selection_note(summarize(_rows(), COLUMNS)) is None  # plain argmax: nothing to explain
    # The rule was on but chose the best alpha anyway: nothing to explain either.
    assert selection_note(summarize(_rows(), COLUMNS, within_se=1.0, num_examples=16000)) is None
