"""TOFU's metric math (METHOD.md §8): pure functions of numbers and strings, no models.

Notation: NLL(a|q) = −(1/|a|) Σ_t log p(a_t | q, a_<t) over the answer tokens (EOS included), and
P̃(a|q) = exp(−NLL(a|q)), the length-normalised probability.
  Probability     mean P̃(a|q); on real authors / world facts P̃(a) / (P̃(a) + Σ_j P̃(â_j)) over the options
  ROUGE-L recall  LCS(greedy answer, a) / |a| on lower-cased alphanumeric words, Porter-stemmed
  Truth ratio     R = P̄_pert / P̃_para, P̄_pert = exp(−mean_j NLL(â_j|q)) over the perturbed answers;
                  reported as mean min(R, 1/R) on the forget set and mean max(0, 1 − R) elsewhere
  Forget quality  KS two-sample p-value between this model's and the retain model's forget-set R
  Model utility   harmonic mean of {Probability, ROUGE-L, truth ratio} × {retain, real authors, world facts}
  Tug-of-War      Π_S (1 − |A(θ_u, S) − A(θ_r, S)|), A = ROUGE-L recall, S = forget, retain, test
                  (Zhao et al., 2024); test pools the real-author and world-fact questions
open-unlearning's privacy and memorisation metrics, on the answer tokens under teacher forcing (EOS
included in the loss, left out of the rest, as open-unlearning does):
  LOSS / ZLib     score = NLL(a|q), or NLL(a|q) / (bytes of zlib.compress(a)); higher: less like a member
  Min-K%          score = −mean of the lowest k = 40 % of the gold tokens' log-probabilities (Shi et al., 2024)
  Min-K%++        the same over (log p(y_t) − μ_t) / σ_t, μ_t and σ_t² the mean and variance of log p
                  under p itself at position t (Zhang et al., 2024)
  MIA AUC         ROC AUC of the scores, forget records labelled 0 and holdout (non-member) records 1:
                  1 when the forget records look much more like members than the holdout ones
  privleak        ((1 − AUC) − (1 − AUC_retain)) / (1 − AUC_retain) × 100: 0 is the retain model's level
  exact memorisation   the share of answer tokens the model's argmax predicts
  extraction strength  1 − k/|a|, k the first position from which every later argmax is right
and two for the attribution classifier (attribution.py):
  Calibration     ECE = Σ_b (n_b / n) |accuracy_b − mean confidence_b| over 10 equal-width bins of the
                  top label's probability (Guo et al., 2017)
  Fact probe      Spearman's ρ: Pearson correlation of the (tie-averaged) ranks of two samples
scipy (KS) and rouge_score (ROUGE-L) are used when installed; the built-in versions below equal them
(tests/test_evaluate.py), and evaluate.py's protocol names the implementation that produced the numbers.
"""
import math
import re
import zlib
from importlib import metadata

import numpy as np

from helpers.cli import DareuError

try:  # optional reference implementations
    import scipy.stats
except ImportError:
    scipy = None
try:
    from rouge_score import rouge_scorer
except ImportError:
    rouge_scorer = None
try:
    from nltk.stem.porter import PorterStemmer  # the stemmer rouge_score uses
except ImportError:
    PorterStemmer = None


def rouge_tokens(text, stem=None):
    """rouge_score's tokenizer: lower-case, non-alphanumerics to spaces, stem words longer than 3."""
    words = re.sub(r"[^a-z0-9]+", " ", text.lower()).split()
    return [stem(w) if stem and len(w) > 3 else w for w in words]


def rouge_l_recall_builtin(prediction, reference, stem=None):
    """ROUGE-L recall = LCS(prediction, reference) / |reference| in words (0 if either is empty)."""
    pred, ref = rouge_tokens(prediction, stem), rouge_tokens(reference, stem)
    if not pred or not ref:
        return 0.0
    lcs = [0] * (len(pred) + 1)   # lcs[j] = LCS(ref[:i], pred[:j]), one row at a time
    for r in ref:
        diagonal = 0
        for j, p in enumerate(pred, 1):
            diagonal, lcs[j] = lcs[j], diagonal + 1 if r == p else max(lcs[j], lcs[j - 1])
    return lcs[-1] / len(ref)


if rouge_scorer is not None:
    _scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    ROUGE_IMPL = f"rouge_score {metadata.version('rouge_score')} RougeScorer(['rougeL'], use_stemmer=True)"
elif PorterStemmer is not None:
    _stem = PorterStemmer().stem
    ROUGE_IMPL = f"builtin LCS + nltk {metadata.version('nltk')} PorterStemmer"
else:
    _stem = None
    ROUGE_IMPL = "builtin-nostem (no Porter stemmer: install rouge_score to match TOFU)"


def rouge_l_recall(prediction, reference):
    """TOFU's ROUGE-L recall of a generated answer against the gold answer."""
    if rouge_scorer is not None:
        return _scorer.score(reference, prediction)["rougeL"].recall
    return rouge_l_recall_builtin(prediction, reference, _stem)


def ks_pvalue_exact(x, y):
    """Two-sided two-sample Kolmogorov-Smirnov p-value P(D ≥ d), exact: the share of the C(m+n, m)
    equally likely interleavings of the pooled sample whose ECDF gap reaches d, in integer arithmetic.
    scipy.stats.ks_2samp's default computes the same up to 10,000 values per sample (then asymptotic)."""
    x, y = np.sort(np.asarray(x, dtype=float)), np.sort(np.asarray(y, dtype=float))
    m, n = len(x), len(y)
    if not m or not n:
        raise DareuError("the KS test needs two non-empty samples")
    pooled = np.concatenate([x, y])
    # d·m·n = max over pooled values v of |n·#{x ≤ v} − m·#{y ≤ v}| (ties count together)
    dmn = int(np.abs(n * np.searchsorted(x, pooled, "right") - m * np.searchsorted(y, pooled, "right")).max())
    if dmn == 0:
        return 1.0
    # paths[j] = lattice paths (0,0) → (i,j) with |n·i' − m·j'| < d·m·n at every point, i.e. gap < d
    paths = [0] * (n + 1)
    for i in range(m + 1):
        for j in range(n + 1):
            if abs(n * i - m * j) >= dmn:
                paths[j] = 0
            elif i or j:
                paths[j] += paths[j - 1] if j else 0
            else:
                paths[j] = 1
    total = math.comb(m + n, m)
    return (total - paths[n]) / total


KS_IMPL = (f"scipy {scipy.__version__} stats.ks_2samp (two-sided, method='auto')" if scipy is not None
           else "builtin exact (= scipy ks_2samp two-sided, method='exact')")


def ks_pvalue(x, y):
    """Two-sided two-sample KS p-value (forget quality)."""
    if scipy is not None:
        return float(scipy.stats.ks_2samp(x, y).pvalue)
    return ks_pvalue_exact(x, y)


def hmean(values):
    """Harmonic mean n / Σ 1/x of non-negative numbers; 0 if any is 0 (as scipy.stats.hmean)."""
    values = np.asarray(values, dtype=float)
    if (values < 0).any():
        raise DareuError("the harmonic mean needs non-negative numbers")
    return 0.0 if (values == 0).any() else float(len(values) / (1 / values).sum())


def truth_ratio(nll_paraphrased, nll_perturbed):
    """Per question R = P̄_pert / P̃_para = exp(NLL_para − mean_j NLL_pert_j)."""
    return np.exp(np.asarray(nll_paraphrased) - np.array([np.mean(p) for p in nll_perturbed]))


def truth_ratio_score(ratios, forget):
    """Forget set: mean min(R, 1/R) (1 = no preference); elsewhere: mean max(0, 1 − R) (1 = truth preferred)."""
    ratios = np.asarray(ratios)
    return float(np.mean(np.minimum(ratios, 1 / ratios) if forget else np.maximum(0, 1 - ratios)))


def normalised_prob(nll_answer, nll_perturbed):
    """Per question P̃(a) / (P̃(a) + Σ_j P̃(â_j)) = 1 / (1 + Σ_j exp(NLL(a) − NLL(â_j)))."""
    return np.array([1 / (1 + np.exp(a - np.asarray(p)).sum()) for a, p in zip(nll_answer, nll_perturbed)])


def tug_of_war(accuracy, retain_accuracy):
    """ToW = Π_S (1 − |A(θ_u, S) − A(θ_r, S)|) over the sets S both dicts score."""
    return float(np.prod([1 - abs(accuracy[s] - retain_accuracy[s]) for s in accuracy if s in retain_accuracy]))


def calibration_error(probs, truth, bins=10):
    """Expected calibration error of the top label: probs [n, k], truth [n] label indices."""
    probs, truth = np.asarray(probs, dtype=float), np.asarray(truth)
    confidence, correct = probs.max(-1), probs.argmax(-1) == truth
    which = np.minimum((confidence * bins).astype(int), bins - 1)   # bin b holds confidences in [b/bins, (b+1)/bins)
    return float(sum(abs(correct[which == b].mean() - confidence[which == b].mean()) * (which == b).mean()
                     for b in range(bins) if (which == b).any()))


def ranks(x):
    """1-based ranks of x, ties given their average rank (as scipy.stats.rankdata)."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="stable")
    sorted_x, r = x[order], np.empty(len(x))
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    for a, b in zip(starts, np.r_[starts[1:], len(x)]):
        r[order[a:b]] = (a + b + 1) / 2   # the mean of ranks a+1 .. b
    return r


def spearman(x, y):
    """Spearman's rank correlation of two equal-length samples (nan when either is constant)."""
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


# ----------------------------------------------------------------------------------------------
# Privacy and memorisation (open-unlearning's definitions)

MIN_K = 0.4   # the share of the lowest token scores Min-K% and Min-K%++ average (open-unlearning's TOFU setting)


def loss_score(nll):
    """LOSS attack: the answer's NLL (mean over its tokens, EOS included)."""
    return float(nll)


def zlib_score(nll, answer):
    """ZLib attack: NLL / the byte length of the answer's zlib compression."""
    return float(nll) / len(zlib.compress(answer.encode("utf-8")))


def min_k_score(logprobs, k=MIN_K):
    """Min-K%: −mean of the lowest max(1, ⌊k·n⌋) of n token log-probabilities."""
    lowest = np.sort(np.asarray(logprobs, dtype=float))[:max(1, int(len(logprobs) * k))]
    return float(-lowest.mean())


def min_k_plus_plus_score(logprobs, mu, var, k=MIN_K):
    """Min-K%++: Min-K% of (log p(y_t) − μ_t) / σ_t, with μ_t = Σ_v p log p, σ_t² = Σ_v p (log p)² − μ_t²
    (clamped at 1e-6)."""
    z = (np.asarray(logprobs, dtype=float) - np.asarray(mu)) / np.sqrt(np.maximum(np.asarray(var), 1e-6))
    return min_k_score(z, k)


def mia_auc(forget_scores, holdout_scores):
    """ROC AUC with forget = 0 and holdout = 1: the probability that a holdout record scores above a forget
    record (ties count half; the Mann-Whitney U statistic over both counts)."""
    r = ranks(np.concatenate([np.asarray(forget_scores, dtype=float), np.asarray(holdout_scores, dtype=float)]))
    n_f, n_h = len(forget_scores), len(holdout_scores)
    if not n_f or not n_h:
        raise DareuError("a membership AUC needs forget and holdout records")
    return float((r[n_f:].sum() - n_h * (n_h + 1) / 2) / (n_f * n_h))


def privleak(auc, retain_auc):
    """((1 − AUC) − (1 − AUC_retain)) / (1 − AUC_retain) × 100: how much more the forget records look like
    members than they do to the retain model (0: as to the retain model; negative: more)."""
    return float(((1 - auc) - (1 - retain_auc)) / (1 - retain_auc + 1e-10) * 100)


def exact_memorisation(predicted, gold):
    """The share of answer tokens whose teacher-forced argmax is the gold token."""
    predicted, gold = np.asarray(predicted), np.asarray(gold)
    return float((predicted == gold).mean()) if len(gold) else None


def extraction_strength(predicted, gold):
    """1 − k/n, k the first position from which the teacher-forced argmax equals the gold answer to its end
    (n − 1 when none does, so the least is 1/n)."""
    predicted, gold = list(predicted), list(gold)
    if not gold:
        return 0.0
    k = next((k for k in range(len(gold)) if predicted[k:] == gold[k:]), len(gold) - 1)
    return 1 - k / len(gold)
