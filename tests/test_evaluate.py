"""evaluate.py: the metrics pinned to their statistics, set building, answer_nll against the Hugging Face
loss, and end-to-end runs of the CLI on tiny random models (metric math: test_metrics.py)."""
import json
import math
import os

import numpy as np
import pytest
import torch

import evaluate as E
from conftest import TOFU, run_python
from helpers import metrics as M
from helpers.cli import DareuError
from helpers.prompts import encode_qa
from helpers.records import synthetic_world
from helpers.report import WHY_UNAVAILABLE

needs_tofu = pytest.mark.skipif(not os.path.isfile(os.path.join(TOFU, "forget10_perturbed.json")),
                                reason="no TOFU folder at ../shared/data/tofu")


def set_scores(prob, rouge, truth_ratio, per_question):
    """One set's scores as score_set returns them; per-question values other than those given are empty."""
    return {"prob": prob, "rouge": rouge, "truth_ratio": truth_ratio, "attribution": 0.9,
            "per_question": {"answer_nll": [], "prob": [], "rouge": [], "truth_ratio": None, **per_question}}


def test_summarise_pins_each_metric_to_its_statistic():
    """Hand-made tables where every candidate input differs, so only the right statistic gives the
    expected number."""
    unlearned = {
        "forget": set_scores(0.9, 0.2, 0.3, {"truth_ratio": [0.1, 0.2], "prob": [0.3, 0.6], "answer_nll": [1.0, 4.0],
                                             "rouge": [0.1, 0.3]}),
        "retain": set_scores(0.5, 0.9, 1.0, {"rouge": [0.9]}),
        "real_authors": set_scores(0.5, 0.5, 0.25, {"rouge": [1.0, 1.0, 0.0, 0.0]}),
        "world_facts": set_scores(0.5, 1.0, 0.5, {"rouge": [1.0]})}
    retain = {
        "forget": set_scores(0.1, 0.5, 0.7, {"truth_ratio": [0.8, 0.9], "prob": [0.4, 0.5], "answer_nll": [2.0, 3.0],
                                             "rouge": [0.2, 0.8]}),
        "retain": set_scores(0.6, 1.0, 0.8, {"rouge": [1.0]}),
        "real_authors": set_scores(0.4, 1.0, 0.2, {"rouge": [1.0, 1.0, 1.0, 1.0]}),
        "world_facts": set_scores(0.3, 0.0, 0.1, {"rouge": [0.0]})}
    out = E.summarise(unlearned, retain)
    # Forget Quality: KS on the forget set's per-question truth ratios, [0.1, 0.2] vs [0.8, 0.9], fully
    # separated: p = 2 / C(4, 2) = 1/3. Probability [0.3, 0.6] vs [0.4, 0.5], NLL [1, 4] vs [2, 3] and
    # ROUGE [0.1, 0.3] vs [0.2, 0.8] interleave: p = 1.
    assert out["forget_quality"] == pytest.approx(1 / 3, abs=1e-9)
    # Model Utility: harmonic mean of prob, ROUGE, truth ratio on retain (0.5, 0.9, 1), real authors
    # (0.5, 0.5, 0.25), world facts (0.5, 1, 0.5): 9 / (2 + 10/9 + 1 + 2 + 2 + 4 + 2 + 1 + 2) = 9 / (17 + 1/9)
    # (the forget set's 0.9, 0.2, 0.3 and the attribution 0.9 must not enter)
    assert out["model_utility"] == pytest.approx(9 / (17 + 1 / 9), abs=1e-12)
    # Tug-of-War on ROUGE-L: forget 0.2 vs 0.5, retain 0.9 vs 1.0, test = pooled per-question ROUGE of
    # real authors + world facts: 3/5 = 0.6 vs 4/5 = 0.8 (a mean of the two set means would give 0.75 vs 0.5)
    # (1 − 0.3)(1 − 0.1)(1 − 0.2) = 0.7 · 0.9 · 0.8 = 0.504
    assert out["tug_of_war"] == pytest.approx(0.504, abs=1e-12)
    assert E.summarise(retain, retain) == {"forget_quality": 1.0, "model_utility": pytest.approx(M.hmean(
        [0.6, 1.0, 0.8, 0.4, 1.0, 0.2, 0.3, 0.0, 0.1])), "tug_of_war": 1.0, "privleak": None}


def test_score_set_slices_the_nlls_by_hand(monkeypatch):
    """score_set's bookkeeping on a table of NLLs keyed by (question, answer): gold, paraphrased and a
    ragged list of perturbed answers, on a plain set and on a multiple-choice one."""
    nll = {("q1", "red fox"): 1.0, ("q2", "blue sky"): 2.0, ("q1", "a red fox"): 0.5, ("q2", "the blue sky"): 3.0,
           ("q1", "x1"): 1.5, ("q1", "y1"): 2.5, ("q2", "x2"): 1.0, ("q2", "y2"): 2.0, ("q2", "z2"): 3.0}
    monkeypatch.setattr(E, "answer_nll", lambda model, tok, qs, ans, *args, **kw: np.array([nll[k] for k in zip(qs, ans)]))
    monkeypatch.setattr(E, "greedy_answers", lambda model, tok, qs, cfg, desc: ["red fox", "green"])
    rows = [{"question": "q1", "answer": "red fox", "paraphrased_answer": "a red fox", "perturbed_answer": ["x1", "y1"]},
            {"question": "q2", "answer": "blue sky", "paraphrased_answer": "the blue sky",
             "perturbed_answer": ["x2", "y2", "z2"]}]
    cfg = E.EvalConfig()
    forget = E.score_set(None, None, E.make_set("forget", rows, 0, "hand"), cfg)
    # Probability exp(−NLL(a)): (e^−1 + e^−2) / 2; ROUGE-L recall of "red fox", "green": (1 + 0) / 2
    assert forget["prob"] == pytest.approx((math.exp(-1) + math.exp(-2)) / 2, abs=1e-12)
    assert forget["rouge"] == pytest.approx(0.5, abs=1e-12)
    # R = exp(NLL_para − mean NLL_pert): exp(0.5 − 2) = e^−1.5, exp(3 − 2) = e; forget: mean min(R, 1/R)
    assert np.allclose(forget["per_question"]["truth_ratio"], [math.exp(-1.5), math.e], atol=1e-12)
    assert forget["truth_ratio"] == pytest.approx((math.exp(-1.5) + math.exp(-1)) / 2, abs=1e-12)
    assert forget["per_question"]["perturbed_nll"] == [[1.5, 2.5], [1.0, 2.0, 3.0]]
    # multiple choice (no paraphrase, as TOFU's real authors): P̃(a) / (P̃(a) + Σ_j P̃(â_j)) and R against the answer
    options = E.score_set(None, None, E.make_set("real_authors", [{k: r[k] for k in ("question", "answer",
                                                                                     "perturbed_answer")} for r in rows],
                                                 0, "hand"), cfg)
    expected = [1 / (1 + math.exp(1 - 1.5) + math.exp(1 - 2.5)), 1 / (1 + math.exp(2 - 1) + 1 + math.exp(2 - 3))]
    assert np.allclose(options["per_question"]["prob"], expected, atol=1e-12)
    # R = exp(NLL(a) − mean NLL_pert) = e^−1, e^0; elsewhere mean max(0, 1 − R) = (1 − e^−1 + 0) / 2
    assert options["truth_ratio"] == pytest.approx((1 - math.exp(-1)) / 2, abs=1e-12)


def test_make_set_subset():
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(10)]
    s = E.make_set("retain", rows, 4, "test")
    assert s["questions"] == ["q0", "q2", "q5", "q7"] and s["n_total"] == 10   # rows i*10//4
    assert s["paraphrased"] is None and s["perturbed"] is None
    with pytest.raises(DareuError):
        E.make_set("forget", [], 0, "test")


# ----------------------------------------------------------------------------------------------
# Tiny models

def test_answer_nll_equals_hf_loss(tiny):
    model, tokenizer = tiny
    records = synthetic_world()[:5]
    questions, answers = [r["question"] for r in records], [r["answer"] for r in records]
    answers[1] = "Yes."   # rows of very different lengths, so the batch is left-padded
    nll = E.answer_nll(model, tokenizer, questions, answers, batch_size=5)
    ids, mask, answer_mask = encode_qa(tokenizer, questions, answers)
    assert (mask == 0).any()
    for i in range(len(records)):
        row = ids[i][mask[i].bool()][None]
        labels = row.masked_fill(answer_mask[i][mask[i].bool()][None] == 0, -100)
        with torch.no_grad():
            loss = model(input_ids=row, labels=labels).loss.item()
        assert abs(nll[i] - loss) < 1e-5


class FakeClassifier:
    def forget_attribution(self, questions, responses, forget_owners):
        return torch.full((len(questions),), 0.25)


def test_evaluate_records(tiny):
    model, tokenizer = tiny
    records = synthetic_world()
    forget, retain = records[:12], records[12:]
    cfg = E.EvalConfig(max_new_tokens=4, batch_size=4, max_questions=3)
    out = E.evaluate_records(model, tokenizer, forget, retain, cfg, FakeClassifier(), [records[0]["owner"]])
    assert out["forget_attribution"] == pytest.approx(0.25) and out["retain_attribution"] == pytest.approx(0.25)
    assert 0 < out["forget_prob"] < 1 and 0 <= out["retain_rouge"] <= 1
    assert len(out["per_question"]["forget"]["generated"]) == 3
    assert set(out["per_question"]["retain"]) >= {"generated", "rouge", "prob", "attribution", "facts"}
    # fact recall: the mean over the questions whose gold answer has owner-specific words, recomputed here
    from helpers.owner_text import fact_recall, specific_words
    specific, q = specific_words(records), out["per_question"]["forget"]
    expected = [fact_recall(r["question"], g, r["answer"], specific) for r, g in zip(forget, q["generated"])]
    assert q["facts"] == expected and out["forget_facts"] == pytest.approx(np.mean([f for f in expected if f is not None]))
    no_clf = E.evaluate_records(model, tokenizer, forget, retain, cfg)
    assert no_clf["forget_attribution"] is None and no_clf["forget_prob"] == pytest.approx(out["forget_prob"])


def run_cli(*args):
    # one OpenMP thread: tiny models gain nothing from two, and lose much when the cores are busy
    return run_python(["evaluate.py", *args], env={"OMP_NUM_THREADS": "1"}, timeout=300)


def test_help():
    proc = run_cli("--help")
    assert proc.returncode == 0 and "--retain-json" in proc.stdout


@needs_tofu
def test_cli_tofu(tiny_folders, tmp_path):
    paths = tiny_folders
    common = ["--data", TOFU, "--forget", "forget10", "--max-questions", "3", "--max-new-tokens", "4",
              "--batch-size", "8"]
    # the retain model and the original, side by side
    out = tmp_path / "eval.json"
    proc = run_cli("--model", paths["original"], "--retain-model", paths["retain"], *common, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "| metric | original | retain |" in proc.stdout and "Forget quality" in proc.stdout
    result = json.loads(out.read_text())
    assert result["retain_model"] == "retain" and list(result["sets"]) == list(E.TOFU_FILES)
    assert all(len(s["questions"]) == 3 for s in result["sets"].values())
    assert result["unavailable"] == {k: WHY_UNAVAILABLE[k] for k in ("attribution", "privleak")}   # no --holdout
    retain, original = result["models"]["retain"], result["models"]["original"]
    assert retain["forget_quality"] == 1.0 and retain["tug_of_war"] == 1.0
    assert 0 <= original["forget_quality"] <= 1 and 0 <= original["model_utility"] <= 1
    per_q = original["sets"]["forget"]["per_question"]
    assert len(per_q["truth_ratio"]) == 3 and len(per_q["perturbed_nll"][0]) == 5
    assert len(original["sets"]["real_authors"]["per_question"]["perturbed_nll"][0]) == 3
    protocol = result["protocol"]
    assert protocol["config"] == {"max_new_tokens": 4, "batch_size": 8, "max_questions": 3}
    assert protocol["rouge"] == M.ROUGE_IMPL and protocol["ks"] == M.KS_IMPL and "torch" in protocol["versions"]
    assert original["prompt_format"] == "plain" and original["dtype"] == "float32"
    # the retain model's saved results as the reference for a later run
    out2 = tmp_path / "eval2.json"
    proc = run_cli("--model", paths["original"], "--retain-json", str(out), *common, "--out", str(out2))
    assert proc.returncode == 0, proc.stderr
    again = json.loads(out2.read_text())["models"]
    assert again["original"]["forget_quality"] == pytest.approx(original["forget_quality"], abs=1e-12)
    assert again["original"]["tug_of_war"] == pytest.approx(original["tug_of_war"], abs=1e-12)
    assert again["retain"]["forget_quality"] == 1.0
    # a reference evaluated on other questions is refused in one line
    other_questions = [a if a != "3" else "2" for a in common]   # --max-questions 2
    proc = run_cli("--model", paths["original"], "--retain-json", str(out), *other_questions,
                   "--out", str(tmp_path / "x.json"))
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1


def test_cli_holdout_and_open_unlearnings_logs(tiny_folders, tmp_path):
    """--holdout: the membership attacks and privleak (0 for the retain model against itself); --ou-logs
    writes each model's results as open-unlearning's TOFU_EVAL.json, and the retain model's, read back
    with --retain-logs, gives the same Forget Quality and privleak as evaluating the retain model."""
    from helpers.records import load_records
    paths = tiny_folders
    holdout = tmp_path / "holdout.jsonl"
    holdout.write_text("".join(json.dumps(r) + "\n" for r in load_records(TOFU) if r["owner"] in ("tofu_100", "tofu_101")))
    common = ["--data", TOFU, "--forget", "forget10", "--max-questions", "3", "--max-new-tokens", "4",
              "--batch-size", "8", "--holdout", str(holdout)]
    proc = run_cli("--model", paths["original"], "--retain-model", paths["retain"], *common,
                   "--out", str(tmp_path / "a.json"), "--ou-logs", str(tmp_path / "logs"))
    assert proc.returncode == 0, proc.stderr
    first = json.loads((tmp_path / "a.json").read_text())["models"]
    assert first["retain"]["privleak"] == pytest.approx(0, abs=1e-6) and first["original"]["privleak"] is not None
    assert set(first["original"]["sets"]["forget"]["mia"]) == {"loss", "zlib", "min_k", "min_k_plus_plus"}
    logs = json.loads((tmp_path / "logs" / "retain" / "TOFU_EVAL.json").read_text())
    assert logs["mia_min_k"]["auc"] == first["retain"]["sets"]["forget"]["mia"]["min_k"]
    assert "privleak" in proc.stdout and "forget MIA AUC (min_k)" in proc.stdout
    proc = run_cli("--model", paths["original"], "--retain-logs", str(tmp_path / "logs" / "retain" / "TOFU_EVAL.json"),
                   *common, "--out", str(tmp_path / "b.json"))
    assert proc.returncode == 0, proc.stderr
    second = json.loads((tmp_path / "b.json").read_text())["models"]["original"]
    assert second["forget_quality"] == pytest.approx(first["original"]["forget_quality"], abs=1e-12)
    assert second["privleak"] == pytest.approx(first["original"]["privleak"], abs=1e-9)
    assert second["tug_of_war"] == pytest.approx(first["original"]["tug_of_war"], abs=1e-12)


def test_cli_generic_records(tiny_folders, tmp_path):
    paths = tiny_folders
    records = synthetic_world()
    data = tmp_path / "records.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "eval.json"
    # the retain model named twice (--model and --retain-model) is evaluated once
    proc = run_cli("--model", paths["original"], "--model", paths["retain"], "--retain-model", paths["retain"],
                   "--data", str(data), "--forget", records[0]["owner"], "--max-questions", "4",
                   "--max-new-tokens", "4", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert list(result["sets"]) == ["forget", "retain"] and result["protocol"]["suite"] == "records"
    assert list(result["models"]) == ["original", "retain"] and result["models"]["retain"]["tug_of_war"] == 1.0
    assert set(result["unavailable"]) == {"truth_ratio", "forget_quality", "model_utility", "attribution", "privleak"}
    assert "unavailable: truth_ratio" in proc.stdout and "forget ROUGE-L" in proc.stdout
    assert result["models"]["original"]["sets"]["forget"]["truth_ratio"] is None
    # user errors: one line on stderr, exit status 2
    (tmp_path / "not-a-model").mkdir()
    proc = run_cli("--model", str(tmp_path / "not-a-model"), "--data", str(data), "--forget", records[0]["owner"],
                   "--out", str(out))
    assert proc.returncode == 2 and "not a Hugging Face model folder" in proc.stderr


def test_classifier_report_line_says_n_a_where_a_score_is_missing():
    report = {"heldout_accuracy": None, "heldout_ece": None, "probes": {"I don't know.": 0.1, "": 0.3},
              "fact_probe": {"spearman": None, "answers": 3}}
    assert E.classifier_report_line(report) == (
        "a_F at most 0.300 on 2 refusal / empty / generic texts; fact probe ρ(a_F, forget ROUGE-L) n/a over 3 "
        "answers; held-out accuracy n/a, calibration error n/a")
    report.update(heldout_accuracy=0.625, heldout_ece=0.3343, fact_probe_unlearned={"spearman": 0.48, "answers": 12})
    assert E.classifier_report_line(report).endswith(
        "n/a over 3 answers, 0.480 over the unlearned model's 12; held-out accuracy 0.625, calibration error 0.334")


def test_score_model_and_summarise_wired_by_hand(monkeypatch):
    """The seam between evaluate.py and the metric functions: score_model and summarise on four hand-made TOFU
    sets, answer_nll and greedy_answers stubbed by tables, every value worked out here by hand. Pins which argument
    of ROUGE-L is the gold answer, Probability's form and the truth-ratio branch per set, which NLL is the
    paraphrase's, the nine Model Utility inputs, and how Forget Quality and Tug-of-War are put together."""
    # question: (gold answer, the unlearned model's NLL of the gold answer, of the paraphrase (None: no paraphrase,
    # as TOFU's real authors / world facts), of the two perturbed answers); words of <= 3 letters: no stemming
    table = {"forget": {"fq1": ("a cat sat on my mat", 0.5, 1.0, (2.0, 3.0)),
                        "fq2": ("she ate two red yam", 1.0, 2.0, (0.5, 1.5))},
             "retain": {"rq1": ("he won a big cup", 0.25, 1.0, (2.0, 4.0)),
                        "rq2": ("we saw ten old elk", 0.75, 2.0, (1.0, 2.0))},
             "real_authors": {"aq1": ("jo met an old fox", 1.0, None, (2.0, 3.0)),
                              "aq2": ("it was in may", 2.0, None, (1.0, 2.0))},
             "world_facts": {"wq1": ("the sun is hot", 0.5, None, (1.0, 4.0)),
                             "wq2": ("ice is not dry", 1.0, None, (1.5, 2.5))}}
    retain_forget = {"fq1": (1.5, 2.0, (4.0, 5.0)), "fq2": (3.0, 1.0, (3.0, 5.0))}   # the retain model's; rest alike
    greedy = {"u": {"fq1": "my cat", "fq2": "no way", "rq1": "he won a cup", "rq2": "we saw ten old elk",
                    "aq1": "jo met an old fox", "aq2": "it was far", "wq1": "the sun is hot", "wq2": "ice is dry"},
              "r": {"fq1": "a dog sat on my big rug", "fq2": "she ate a fig", "rq1": "he won a big cup",
                    "rq2": "we saw an elk", "aq1": "jo met a fox", "aq2": "it was in may", "wq1": "sun is hot",
                    "wq2": "ice is not dry"}}
    sets, nll = [], {"u": {}, "r": {}}   # nll[model][(question, answer text)]
    for name, rows in table.items():
        sets.append({"name": name, "source": "hand", "n_total": 2, "questions": list(rows),
                     "answers": [row[0] for row in rows.values()],
                     "paraphrased": [f"{q} para" for q in rows] if name in ("forget", "retain") else None,
                     "perturbed": [[f"{q} pert1", f"{q} pert2"] for q in rows]})
        for q, (gold, *values) in rows.items():
            for model, (g, p, (x, y)) in (("u", values), ("r", retain_forget.get(q, values))):
                nll[model].update({(q, gold): g, (q, f"{q} para"): p, (q, f"{q} pert1"): x, (q, f"{q} pert2"): y})
    monkeypatch.setattr(E, "answer_nll", lambda model, tok, qs, ans, *args, **kw: np.array(
        [nll[model][qa] for qa in zip(qs, ans)]))   # a KeyError if an answer is scored under another question
    monkeypatch.setattr(E, "greedy_answers", lambda model, tok, qs, cfg, desc: [greedy[model][q] for q in qs])
    monkeypatch.setattr(E, "token_stats", lambda *args: None)   # the privacy metrics: tests/test_privacy.py
    monkeypatch.setattr(E, "privacy", lambda *args: {"exact_memorisation": None, "extraction_strength": None,
                                                     "mia": None, "per_question": {}})
    scores, retain_scores = (E.score_model(model, None, sets, E.EvalConfig()) for model in ("u", "r"))
    out = E.summarise(scores, retain_scores)

    e = math.exp
    # ROUGE-L recall = LCS(greedy, gold) / gold words (the arguments swapped: / greedy words, another value in each
    # non-identical pair): "my cat" vs "a cat sat on my mat": LCS 1 ("cat" or "my", not both in order) / 6;
    # "he won a cup" 4 / 5; "it was far" vs "it was in may" 2 / 4; "ice is dry" vs "ice is not dry" 3 / 4
    rouge = {"forget": [1 / 6, 0.0], "retain": [4 / 5, 1.0], "real_authors": [1.0, 2 / 4], "world_facts": [1.0, 3 / 4]}
    # Probability: exp(−NLL(a)) on forget / retain; 1 / (1 + Σ_j exp(NLL(a) − NLL(â_j))) on the multiple-choice sets
    prob = {"forget": [e(-0.5), e(-1.0)], "retain": [e(-0.25), e(-0.75)],
            "real_authors": [1 / (1 + e(1 - 2) + e(1 - 3)), 1 / (1 + e(2 - 1) + e(2 - 2))],
            "world_facts": [1 / (1 + e(0.5 - 1) + e(0.5 - 4)), 1 / (1 + e(1 - 1.5) + e(1 - 2.5))]}
    # R = exp(NLL(paraphrase; the gold answer where none) − mean_j NLL(â_j)); the gold answer's NLL in place of
    # the paraphrase's would give e^(0.5 − 2.5), e^(1 − 1) on forget
    ratio = {"forget": [e(1 - 2.5), e(2 - 1)], "retain": [e(1 - 3), e(2 - 1.5)],
             "real_authors": [e(1 - 2.5), e(2 - 1.5)], "world_facts": [e(0.5 - 2.5), e(1 - 2)]}
    # reported: forget mean min(R, 1/R) = (e^−1.5 + e^−1) / 2; elsewhere mean max(0, 1 − R), R > 1 counting 0
    truth = {"forget": (e(-1.5) + e(-1)) / 2, "retain": (1 - e(-2) + 0) / 2, "real_authors": (1 - e(-1.5) + 0) / 2,
             "world_facts": (1 - e(-2) + 1 - e(-1)) / 2}
    for name, s in scores.items():
        q = s["per_question"]
        assert q["generated"] == [greedy["u"][k] for k in table[name]]
        assert q["rouge"] == pytest.approx(rouge[name], abs=1e-12)
        assert q["prob"] == pytest.approx(prob[name], abs=1e-12)
        assert q["truth_ratio"] == pytest.approx(ratio[name], abs=1e-12)
        assert (s["rouge"], s["prob"], s["truth_ratio"]) == pytest.approx(
            (sum(rouge[name]) / 2, sum(prob[name]) / 2, truth[name]), abs=1e-12)
    # Model Utility: 9 / Σ 1/x over {Probability, ROUGE-L, truth ratio} × {retain, real authors, world facts}
    nine = [v for name in ("retain", "real_authors", "world_facts")
            for v in (sum(prob[name]) / 2, sum(rouge[name]) / 2, truth[name])]
    assert out["model_utility"] == pytest.approx(9 / sum(1 / v for v in nine), abs=1e-12)
    # Tug-of-War. The retain model's ROUGE-L: forget "a dog sat on my big rug" 4 / 6, "she ate a fig" 2 / 5;
    # retain 1, "we saw an elk" 3 / 5; test "jo met a fox" 3 / 5, 1, "sun is hot" 3 / 4, 1.
    # A_u: forget 1/12, retain 0.9, test (1 + 1/2 + 1 + 3/4) / 4 = 0.8125
    # A_r: forget 8/15, retain 0.8, test (3/5 + 1 + 3/4 + 1) / 4 = 0.8375
    # ToW = (1 − |1/12 − 8/15|)(1 − 0.1)(1 − 0.025) = 0.55 · 0.9 · 0.975
    assert out["tug_of_war"] == pytest.approx(0.55 * 0.9 * 0.975, abs=1e-12)
    # Forget Quality: KS p of the forget R, the unlearned model's [e^−1.5, e] against the retain model's
    # [exp(2 − 4.5), exp(1 − 4)]: fully separated, p = 2 / C(4, 2) = 1/3
    # (the two-sided KS p is symmetric in its samples: no value can tell the argument order)
    ratio_r = [e(2 - 4.5), e(1 - 4)]
    assert retain_scores["forget"]["per_question"]["truth_ratio"] == pytest.approx(ratio_r, abs=1e-12)
    assert out["forget_quality"] == pytest.approx(1 / 3, abs=1e-12)
    stats = pytest.importorskip("scipy.stats")
    assert out["forget_quality"] == pytest.approx(stats.ks_2samp(ratio["forget"], ratio_r).pvalue, abs=1e-12)
