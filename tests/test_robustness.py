"""Effective robustness: the published fits, ER against hand-computed values, fitting, column mapping."""

import json
import math

import pytest

from wiseft.errors import ConfigError, DataError
from wiseft.review.robustness import (
    LinearFit,
    add_effective_robustness,
    fit_linear,
    fit_table,
    load_baselines,
    logit,
    main,
    resolve_baselines,
    sigmoid,
)

IMAGENET_SHIFTS = ["imagenet_v2", "imagenet_r", "imagenet_sketch", "objectnet", "imagenet_a"]


def test_shipped_imagenet_fits_are_the_published_constants():
    table = load_baselines("imagenet")
    assert table.reference == "imagenet"
    got = {name: (fit.w, fit.b) for name, fit in table.fits.items()}
    assert got == {"imagenet_v2": (0.9233, -0.4982), "imagenet_r": (0.9122, -1.6023),
                   "imagenet_sketch": (1.0712, -2.3722), "objectnet": (1.1992, -2.0236),
                   "avg_shifts": (1.0446, -1.8946)}
    assert sorted(table.fits["avg_shifts"].over) == sorted(IMAGENET_SHIFTS)
    assert "imagenet_a" not in table.fits  # no published constant: no baseline


def test_er_at_50_percent_reference_is_shift_minus_sigmoid_b():
    # logit(0.5) = 0, so the baseline is sigmoid(b) = 1 / (1 + e^2.3722) = 0.0853173 -> 8.53173 %.
    sketch = load_baselines("imagenet").fits["imagenet_sketch"]
    assert sketch.baseline(50.0) == pytest.approx(8.531730, abs=1e-5)
    assert sketch.effective_robustness(50.0, 20.0) == pytest.approx(11.468270, abs=1e-5)


def test_er_matches_the_formula_worked_by_hand():
    # IN-V2 at 76.2 % ImageNet: logit(0.762) = ln(0.762 / 0.238) = 1.163679; z = 0.9233 * 1.163679 - 0.4982
    # = 0.576222; sigmoid(z) = 0.640198 -> baseline 64.0198 %; a model at 70 % has ER = +5.9802 points.
    v2 = LinearFit(0.9233, -0.4982)
    assert v2.baseline(76.2) == pytest.approx(64.0198, abs=1e-4)
    assert v2.effective_robustness(76.2, 70.0) == pytest.approx(5.9802, abs=1e-4)
    z = 0.9233 * math.log(0.762 / 0.238) - 0.4982
    assert v2.baseline(76.2) == pytest.approx(100.0 / (1.0 + math.exp(-z)), rel=1e-12)


def test_logit_sigmoid_edges():
    assert logit(0.0) == -math.inf and logit(1.0) == math.inf
    assert sigmoid(-1000.0) == 0.0 and sigmoid(1000.0) == 1.0
    assert sigmoid(logit(0.3)) == pytest.approx(0.3)
    assert LinearFit(1.0, 0.0).baseline(100.0) == 100.0  # a perfect reference model: no robustness to spare


def test_fit_recovers_a_known_line_and_table_fits_the_average():
    w, b = 1.2, -0.7
    refs = [55.0, 62.0, 70.0, 77.0, 84.0]
    models = [{"model": f"m{i}", "imagenet": r, "shift_a": 100 * sigmoid(w * logit(r / 100) + b),
               "shift_b": 100 * sigmoid(0.8 * logit(r / 100) - 1.0)} for i, r in enumerate(refs)]
    fit = fit_linear(refs, [m["shift_a"] for m in models])
    assert (fit.w, fit.b) == (pytest.approx(w), pytest.approx(b))
    table = fit_table(models, "imagenet")
    assert table.fits["shift_b"].w == pytest.approx(0.8) and table.fits["shift_b"].b == pytest.approx(-1.0)
    avg = [(m["shift_a"] + m["shift_b"]) / 2 for m in models]
    expected = fit_linear(refs, avg)
    assert table.fits["avg_shifts"].w == pytest.approx(expected.w)
    assert table.fits["avg_shifts"].over == ("shift_a", "shift_b")


def test_fit_rejects_degenerate_input():
    with pytest.raises(DataError, match="at least two models"):
        fit_linear([70.0], [60.0])
    with pytest.raises(DataError, match=r"model 'b': accuracy 100\.0"):
        fit_linear([70.0, 100.0], [60.0, 61.0], names=["a", "b"])
    with pytest.raises(DataError, match="same reference accuracy"):
        fit_linear([70.0, 70.0], [60.0, 61.0])
    with pytest.raises(DataError, match="model 'x': 'v2' = 'n/a' is not a number"):
        fit_table([{"model": "x", "ref": 70, "v2": "n/a"}, {"model": "y", "ref": 71, "v2": 60}], "ref")


def test_resolve_applies_fits_by_name_and_mapping():
    fits = resolve_baselines({"fits": "imagenet"}, "imagenet", IMAGENET_SHIFTS)
    assert set(fits) == {"imagenet_v2", "imagenet_r", "imagenet_sketch", "objectnet", "avg_shifts"}
    # avg_shifts only when the run averages exactly the five shifts of the published fit.
    assert "avg_shifts" not in resolve_baselines({"fits": "imagenet"}, "imagenet", IMAGENET_SHIFTS[:4])
    # Another reference column: nothing applies unless it is mapped.
    assert resolve_baselines({"fits": "imagenet"}, "photo", ["v2"]) == {}
    mapped = resolve_baselines({"fits": "imagenet", "columns": {"photo": "imagenet", "v2": "imagenet_v2"}},
                               "photo", ["v2", "sketch"])
    assert set(mapped) == {"v2"} and mapped["v2"].w == 0.9233
    assert resolve_baselines({"fits": None}, "imagenet", IMAGENET_SHIFTS) == {}
    with pytest.raises(ConfigError, match=r"robustness\.columns\.nope: the run has no result column 'nope'"):
        resolve_baselines({"fits": "imagenet", "columns": {"nope": "imagenet_v2"}}, "imagenet", IMAGENET_SHIFTS)
    with pytest.raises(ConfigError, match="neither a shipped table"):
        resolve_baselines({"fits": "/no/such/file.json"}, "imagenet", IMAGENET_SHIFTS)


def test_add_effective_robustness_adds_one_column_per_fit():
    row = {"alpha": 0.5, "imagenet": 76.2, "imagenet_v2": 70.0, "imagenet_a": 40.0}
    out = add_effective_robustness(row, "imagenet", {"imagenet_v2": LinearFit(0.9233, -0.4982)})
    assert out["er_imagenet_v2"] == pytest.approx(5.9802, abs=1e-4)
    assert "er_imagenet_a" not in out and row == {k: out[k] for k in row}


def test_cli_fit_writes_a_table_that_runs_can_use(tmp_path, capsys):
    csv_file = tmp_path / "models.csv"
    csv_file.write_text("model,ref,v2\nresnet,70.0,60.0\nvit,80.0,72.0\nconvnext,75.0,66.0\n")
    out = tmp_path / "fits.json"
    main(["fit", str(csv_file), "--reference", "ref", "--out", str(out)])
    table = load_baselines(str(out))
    assert table.reference == "ref" and set(table.fits) == {"v2"}
    assert json.loads(capsys.readouterr().out)["fits"]["v2"]["w"] == pytest.approx(table.fits["v2"].w)
    assert set(resolve_baselines({"fits": str(out)}, "ref", ["v2"])) == {"v2"}
