"""helpers/metrics.py: each TOFU metric by hand, and against its reference implementation when installed
(rouge_score for ROUGE-L, scipy for the KS test and the harmonic mean)."""
import math
import os

import numpy as np
import pytest

from conftest import TOFU
from helpers import metrics as M
from helpers.records import read_json_records


def test_rouge_l_recall_hand():
    # reference: the cat is on the mat (6 words); prediction: the cat sat on the mat
    # LCS = "the cat on the mat" = 5 words, recall = 5/6
    assert M.rouge_l_recall("The cat sat on the mat.", "the cat is on the mat") == pytest.approx(5 / 6, abs=1e-12)
    assert M.rouge_l_recall_builtin("The cat sat on the mat.", "the cat is on the mat") == pytest.approx(5 / 6, abs=1e-12)
    assert M.rouge_l_recall("", "anything") == 0.0
    assert M.rouge_l_recall("anything", "!!") == 0.0
    # stemming: "runs" -> "run" and "running" -> "run" ("dogs" has 4 letters -> "dog"); LCS of
    # [the, dog, run] and [run, dog] is 1 word -> 1/3
    stem = lambda w: {"runs": "run", "running": "run", "dogs": "dog"}.get(w, w)  # noqa: E731
    assert M.rouge_l_recall_builtin("running dogs", "the dog runs", stem) == pytest.approx(1 / 3, abs=1e-12)


def test_rouge_l_recall_matches_rouge_score():
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    from nltk.stem.porter import PorterStemmer
    scorer, stem = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True), PorterStemmer().stem
    pairs = []
    if os.path.isfile(os.path.join(TOFU, "forget10_perturbed.json")):
        rows = read_json_records(os.path.join(TOFU, "forget10_perturbed.json"))[::4]
        pairs += [(p, r["answer"]) for r in rows for p in [r["paraphrased_answer"]] + r["perturbed_answer"][:2]]
    rng = np.random.default_rng(0)
    words = ["the", "writer", "writes", "writing", "novels", "novel", "born", "in", "1991", "Taipei,", "she's",
             "awards", "awarded", "x", ""]
    pairs += [(" ".join(rng.choice(words, rng.integers(0, 30))), " ".join(rng.choice(words, rng.integers(0, 30))))
              for _ in range(300)]
    for pred, ref in pairs:
        expected = scorer.score(ref, pred)["rougeL"].recall
        assert abs(M.rouge_l_recall_builtin(pred, ref, stem) - expected) < 1e-9, (pred, ref)
        assert abs(M.rouge_l_recall(pred, ref) - expected) < 1e-9


def test_ks_pvalue_hand():
    # x = [1, 2], y = [3, 4]: the ECDF gap reaches d = 1. Of the C(4, 2) = 6 equally likely orders
    # of the pooled sample only xxyy and yyxx reach it, so p = 2/6.
    assert M.ks_pvalue_exact([1, 2], [3, 4]) == pytest.approx(1 / 3, abs=1e-12)
    # x = [1, 3], y = [2, 4]: d = 1/2, reached by every order except... none stays below 1/2
    # (the first value alone gives a gap of 1/2), so p = 1.
    assert M.ks_pvalue_exact([1, 3], [2, 4]) == pytest.approx(1.0, abs=1e-12)
    # identical samples: d = 0, p = 1 (the retain model against itself)
    assert M.ks_pvalue_exact([0.5, 0.2, 0.9], [0.9, 0.5, 0.2]) == 1.0
    assert M.ks_pvalue([0.5, 0.2, 0.9], [0.9, 0.5, 0.2]) == 1.0


@pytest.mark.parametrize("m,n", [(3, 5), (7, 13), (40, 40), (40, 200), (200, 400), (400, 400), (13, 7)])
def test_ks_pvalue_matches_scipy(m, n):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(m * 1000 + n)
    for shift, decimals in [(0.0, None), (0.3, None), (0.5, 1), (2.0, None)]:   # rounding makes ties
        x, y = rng.normal(size=m), rng.normal(shift, size=n)
        if decimals is not None:
            x, y = np.round(x, decimals), np.round(y, decimals)
        expected = stats.ks_2samp(x, y).pvalue
        assert abs(M.ks_pvalue_exact(x, y) - expected) < 1e-9
        assert abs(M.ks_pvalue(x, y) - expected) < 1e-9


def test_hmean():
    assert M.hmean([1.0, 0.5]) == pytest.approx(2 / 3, abs=1e-12)   # 2 / (1 + 2)
    assert M.hmean([0.3, 0.0, 0.9]) == 0.0
    stats = pytest.importorskip("scipy.stats")
    values = np.random.default_rng(1).uniform(0.01, 1, 9)
    assert abs(M.hmean(values) - stats.hmean(values)) < 1e-12


def test_truth_ratio_hand():
    # q1: NLL_para = 1, perturbed NLLs 2 and 3 (mean 2.5): R = exp(1 − 2.5) = e^−1.5
    # q2: NLL_para = 2, perturbed NLLs 1 and 1:               R = exp(2 − 1)   = e^1
    r = M.truth_ratio([1.0, 2.0], [[2.0, 3.0], [1.0, 1.0]])
    assert np.allclose(r, [math.exp(-1.5), math.e], atol=1e-12)
    # forget: mean min(R, 1/R) = (e^−1.5 + e^−1) / 2; elsewhere mean max(0, 1 − R) = (1 − e^−1.5 + 0) / 2
    assert M.truth_ratio_score(r, forget=True) == pytest.approx((math.exp(-1.5) + math.exp(-1)) / 2, abs=1e-12)
    assert M.truth_ratio_score(r, forget=False) == pytest.approx((1 - math.exp(-1.5)) / 2, abs=1e-12)
    # KS p-value between two 2-question forget sets of R: [e^−1.5, e] vs [e^2, e^3] are fully separated,
    # d = 1, p = 2 / C(4, 2) = 1/3 (as in test_ks_pvalue_hand)
    assert M.ks_pvalue(r, [math.exp(2), math.exp(3)]) == pytest.approx(1 / 3, abs=1e-9)


def test_normalised_prob_hand():
    # P̃(a) = 1/2, two options with P̃ = 1/4 each: 0.5 / (0.5 + 0.25 + 0.25) = 0.5
    # P̃(a) = 1/2, one option with P̃ = 1/2:       0.5 / 1.0                   = 0.5 ... and 1/8 vs 1/2: 1/5
    p = M.normalised_prob([math.log(2), math.log(2), math.log(8)], [[math.log(4)] * 2, [math.log(2)], [math.log(2)]])
    assert np.allclose(p, [0.5, 0.5, 0.2], atol=1e-12)


def test_tug_of_war_hand():
    # (1 − |0.3 − 0.4|)(1 − |0.9 − 0.95|)(1 − 0) = 0.9 · 0.95 · 1 = 0.855
    tow = M.tug_of_war({"forget": 0.3, "retain": 0.9, "test": 0.8}, {"forget": 0.4, "retain": 0.95, "test": 0.8})
    assert tow == pytest.approx(0.855, abs=1e-12)
    assert M.tug_of_war({"forget": 0.3, "retain": 0.9}, {"forget": 0.3, "retain": 0.9}) == 1.0


def test_calibration_error_hand():
    # confidences 0.9 (right, bin 9), 0.6 (wrong, bin 6), 0.7 (right, bin 7): one record per bin
    # ECE = (|1 − 0.9| + |0 − 0.6| + |1 − 0.7|) / 3 = 1/3
    probs = [[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]]
    assert M.calibration_error(probs, [0, 1, 1]) == pytest.approx(1 / 3, abs=1e-12)
    # two records in one bin (confidence 0.8, one right, one wrong): |1/2 − 0.8| · 2/2
    assert M.calibration_error([[0.8, 0.2], [0.2, 0.8]], [0, 0]) == pytest.approx(0.3, abs=1e-12)
    assert M.calibration_error([[1.0, 0.0]], [0]) == 0.0      # confidence 1 falls in the last bin


def test_spearman_hand_and_against_scipy():
    assert M.ranks([10, 30, 20, 20]).tolist() == [1, 4, 2.5, 2.5]           # ties share their mean rank
    assert M.spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert M.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(M.spearman([1, 1, 1], [1, 2, 3]))
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.integers(0, 4, 25), rng.random(25)
        assert np.allclose(M.ranks(x), stats.rankdata(x))
        assert M.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_membership_scores_by_hand():
    """LOSS, ZLib, Min-K% and Min-K%++ on numbers worked out here (k = 40 %)."""
    assert M.loss_score(1.25) == 1.25
    assert M.zlib_score(2.0, "aaaa") == pytest.approx(2.0 / len(__import__("zlib").compress(b"aaaa")))
    logprobs = [-0.1, -2.0, -0.5, -3.0, -1.0]                 # lowest 40 % of 5 = 2 tokens: −3.0, −2.0
    assert M.min_k_score(logprobs) == pytest.approx(2.5)
    assert M.min_k_score([-0.7]) == pytest.approx(0.7)         # at least one token
    mu, var = [-1.0, -1.0, -0.5, -2.0, -1.0], [1.0, 4.0, 0.25, 1.0, 1e-9]
    z = [0.9, -0.5, 0.0, -1.0, 0.0 / 1e-3]                     # (lp − μ)/σ, σ² clamped at 1e-6 for the last
    assert M.min_k_plus_plus_score(logprobs, mu, var) == pytest.approx(-(sorted(z)[0] + sorted(z)[1]) / 2)


def test_mia_auc_privleak_and_memorisation_by_hand():
    """AUC with forget = 0, holdout = 1 (ties half); privleak against the retain model's AUC; the two
    teacher-forced memorisation scores."""
    # holdout scores above every forget score: 1; interleaved: pairs (h > f) counted by hand
    assert M.mia_auc([1, 2], [3, 4]) == 1.0 and M.mia_auc([3, 4], [1, 2]) == 0.0
    assert M.mia_auc([1, 3], [2, 3]) == pytest.approx((1 + 0 + 1 + 0.5) / 4)   # (2>1, 2<3, 3>1, 3=3)
    assert M.privleak(0.5, 0.5) == pytest.approx(0, abs=1e-6)
    assert M.privleak(0.9, 0.6) == pytest.approx((0.1 - 0.4) / 0.4 * 100)       # −75: more member-like
    assert M.exact_memorisation([5, 6, 9, 8], [5, 6, 7, 8]) == 0.75
    assert M.extraction_strength([5, 6, 9, 8], [5, 6, 7, 8]) == pytest.approx(1 - 3 / 4)   # from position 3 on
    assert M.extraction_strength([5, 6, 7, 8], [5, 6, 7, 8]) == 1.0
    assert M.extraction_strength([1, 2, 3, 4], [5, 6, 7, 8]) == pytest.approx(1 / 4)        # none: the least


def test_mia_auc_equals_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(20):
        forget, holdout = rng.integers(0, 6, rng.integers(1, 12)), rng.integers(0, 6, rng.integers(1, 12))
        labels = [0] * len(forget) + [1] * len(holdout)
        expected = metrics.roc_auc_score(labels, np.concatenate([forget, holdout]))
        assert M.mia_auc(forget, holdout) == pytest.approx(expected, abs=1e-12)
