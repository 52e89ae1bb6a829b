"""helpers/retain_logs.py: open-unlearning's evaluation log read as the retain reference (a file built to its
schema here, no network), and our results written in that format and read back: the same Forget Quality
and privleak as computing them from the retain model's own scores."""
import json

import pytest

import evaluate as E
from helpers.retain_logs import ou_logs, read_ou_logs


def sets_of(n_forget=4, rows=None):
    """The forget set of 4 of 6 rows (evenly spaced: rows 0, 1, 3, 4) and a retain set, as make_set builds."""
    forget = [{"question": f"q{i}", "answer": f"a{i}", "paraphrased_answer": "p", "perturbed_answer": ["x", "y"]}
              for i in range(6)]
    return [E.make_set("forget", forget, n_forget, "f"), E.make_set("retain", forget[:2], None, "r")]


def test_a_retain_reference_read_from_open_unlearnings_log(tmp_path):
    """TOFU_EVAL.json as open-unlearning writes it (rows keyed by dataset index, strings): our evenly spaced
    subset of rows picks its rows' truth ratios by index, and Forget Quality and privleak equal those
    computed from the same numbers held as the retain model's scores."""
    sets = sets_of()
    assert sets[0]["indices"] == [0, 1, 3, 4]
    ratios = {str(i): {"score": r} for i, r in enumerate([0.5, 0.9, 7.0, 1.2, 0.8, 9.0])}
    log = {"forget_truth_ratio": {"agg_value": 0.7, "value_by_index": ratios},
           "forget_Q_A_ROUGE": {"agg_value": 0.4, "value_by_index": {str(i): {"rougeL_recall": 0.1 * i} for i in range(6)}},
           "mia_min_k": {"forget": {"agg_value": 1.0, "value_by_index": {}}, "holdout": {"agg_value": 1.0,
                         "value_by_index": {}}, "auc": 0.62, "agg_value": 0.62},
           "forget_quality": {"agg_value": None}, "privleak": {"agg_value": 0.0}}
    (tmp_path / "retain90").mkdir()
    (tmp_path / "retain90" / "TOFU_EVAL.json").write_text(json.dumps(log))
    name, entry = read_ou_logs(str(tmp_path / "retain90" / "TOFU_EVAL.json"), sets)
    assert name == "retain90"
    reference = entry["sets"]
    assert reference["forget"]["per_question"]["truth_ratio"] == [0.5, 0.9, 1.2, 0.8]   # rows 0, 1, 3, 4
    assert reference["forget"]["rouge"] == pytest.approx((0 + 0.1 + 0.3 + 0.4) / 4)
    model = {"forget": {"rouge": 0.3, "per_question": {"truth_ratio": [2.0, 3.0, 0.1, 4.0]}, "mia": {"min_k": 0.9}},
             "retain": {"rouge": 0.2, "truth_ratio": None}}
    from_log = E.summarise(model, reference)
    by_hand = E.summarise(model, {"forget": {"per_question": {"truth_ratio": [0.5, 0.9, 1.2, 0.8]},
                                             "mia": {"min_k": 0.62}, "rouge": reference["forget"]["rouge"]},
                                  "retain": reference["retain"]})
    assert from_log["forget_quality"] == by_hand["forget_quality"] == E.ks_pvalue([2.0, 3.0, 0.1, 4.0], [0.5, 0.9, 1.2, 0.8])
    assert from_log["privleak"] == pytest.approx((0.1 - 0.38) / 0.38 * 100)


def test_our_results_written_in_open_unlearnings_format_read_back(tmp_path):
    """A retain model's evaluate.py entry, written as TOFU_EVAL.json and read back as the reference, gives
    the Forget Quality and privleak that the entry itself gives."""
    sets = sets_of(n_forget=None)
    per = {"rouge": [0.2] * 6, "prob": [0.5] * 6, "truth_ratio": [0.3, 0.6, 0.9, 1.2, 1.5, 1.8],
           "exact_memorisation": [0.5] * 6, "extraction_strength": [0.25] * 6,
           "mia": {"min_k": {"forget": [1.0] * 6, "holdout": [2.0, 3.0]}}}
    retain = {"forget_quality": 1.0, "model_utility": None, "privleak": 0.0,
              "sets": {"forget": {"rouge": 0.2, "prob": 0.5, "truth_ratio": 0.7, "exact_memorisation": 0.5,
                                  "extraction_strength": 0.25, "mia": {"min_k": 0.3}, "per_question": per},
                       "retain": {"rouge": 0.2, "prob": 0.5, "truth_ratio": None,
                                  "per_question": {"rouge": [0.2, 0.2], "prob": [0.5, 0.5], "truth_ratio": None}}}}
    path = tmp_path / "TOFU_EVAL.json"
    path.write_text(json.dumps(ou_logs(retain, sets)))
    logs = json.loads(path.read_text())
    assert logs["forget_truth_ratio"]["value_by_index"]["2"] == {"score": 0.9} and logs["mia_min_k"]["auc"] == 0.3
    assert logs["exact_memorization"]["agg_value"] == 0.5 and list(logs) == sorted(logs)
    _, reference = read_ou_logs(str(path), sets)
    model = {"forget": {"rouge": 0.3, "per_question": {"truth_ratio": [2.0, 0.1, 0.2, 3.0, 0.4, 0.5]},
                        "mia": {"min_k": 0.8}}, "retain": {"rouge": 0.2, "truth_ratio": None}}
    assert E.summarise(model, reference["sets"])["forget_quality"] == E.summarise(model, retain["sets"])["forget_quality"]
    assert E.summarise(model, reference["sets"])["privleak"] == E.summarise(model, retain["sets"])["privleak"]
