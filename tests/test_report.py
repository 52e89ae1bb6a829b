"""helpers/report.py: the model card's front matter and sections, the run's curves (a PNG holding the
metrics' series, and one line instead when matplotlib is missing)."""
import json
import sys

import pytest

from helpers.report import curve_data, model_card, plot_curves


def test_a_model_card_says_what_was_forgotten_how_and_how_to_reproduce():
    card = model_card("models/original", ["tofu_198", "tofu_199"], "DareU: PPO against attribution.",
                      ["unlearning", "dareu"], {"learning rate": 1e-4}, ["python", "unlearn.py", "--out", "my out"],
                      table="| metric | a |\n|---|---|\n| x | 1 |", classifier_line="held-out accuracy 0.6",
                      notes=["Target reached."])
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert "base_model: models/original" in front and "- unlearning" in front and "library_name: transformers" in front
    assert "license" in front and not any(line.startswith("license:") for line in front.splitlines())   # the user's
    assert "`tofu_198`, `tofu_199`" in body and "| learning rate | 0.0001 |" in body and "| x | 1 |" in body
    assert "held-out accuracy 0.6" in body and "python unlearn.py --out 'my out'" in body


def test_the_curves_are_a_png_of_the_metrics_series(tmp_path):
    pytest.importorskip("matplotlib")
    lines = [{"iteration": i, "attribution": 1 - 0.1 * i, "score": -1 + 0.1 * i, "kl": 0.01 * i,
              "retain_kl": 0.001 * i, **({"greedy_attribution": 0.9 - 0.1 * i} if i % 2 == 0 else {})}
             for i in range(1, 6)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    data = plot_curves(tmp_path / "metrics.jsonl", tmp_path / "curves.png", target=0.15)
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert data == curve_data(tmp_path / "metrics.jsonl")
    assert data["attribution"] == [(i, 1 - 0.1 * i) for i in range(1, 6)]
    assert data["greedy_attribution"] == [(2, 0.7), (4, 0.5)] and len(data["retain_kl"]) == 5


def test_without_matplotlib_the_curves_are_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"iteration": 1}) + "\n")
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib now raises ImportError
    assert plot_curves(tmp_path / "metrics.jsonl", tmp_path / "curves.png") is None
    assert capsys.readouterr().out.strip() == "curves.png not drawn: matplotlib is not installed (pip install matplotlib)"
    assert not (tmp_path / "curves.png").exists()
