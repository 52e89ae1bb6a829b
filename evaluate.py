"""Evaluation: the TOFU metrics (SPEC §8), Tug-of-War, and attribution, for several models side by side.

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
  Attribution     mean a_F of the greedy answers on the forget and on the retain questions
scipy (KS) and rouge_score (ROUGE-L) are used when installed; the built-in versions below equal them
(tests/test_evaluate.py), and the output's protocol names the implementation that produced the numbers.

With a TOFU folder and --forget forget01/05/10 the sets are TOFU's evaluation files; with any other
owner-labelled data they are the forget and retain records, and the metrics that need perturbed
answers are listed as unavailable.

    python evaluate.py --model models/original --model models/dareu --retain-model models/retain \\
        --data ../shared/data/tofu --forget forget10 --classifier models/classifier --out eval.json
"""
import argparse
import json
import math
import os
import platform
import re
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from importlib.util import find_spec

import numpy as np
import torch
from tqdm import tqdm

from data import (SPLIT_PERCENT, DareuError, PROMPT_TEMPLATES, add_config_args, check_device, check_fields, check_out_path,
                  config_from_args, load_records, prompt_ids, read_json_records, resolve_forget, run_cli, split_records,
                  synthetic_world, template_of, write_json)
from finetune import DTYPES, answer_logprobs, autocast, check_model_folder, compute_dtype, load_model
from rollout import RolloutConfig, generate

try:  # optional reference implementations
    import scipy.stats
except ImportError:
    scipy = None
try:
    from rouge_score import rouge_scorer
except ImportError:
    rouge_scorer = None
try:
    from nltk.stem.porter import PorterStemmer   # the stemmer rouge_score uses
except ImportError:
    PorterStemmer = None


@dataclass
class EvalConfig:
    max_new_tokens: int = 200  # greedy answer length limit (TOFU: 200)
    batch_size: int = 16       # sequences per forward pass / generate() call
    max_questions: int = 0     # per set: 0 = all, else an evenly spaced subset of this many questions

    def __post_init__(self):
        check_fields(self, max_new_tokens=">= 1", batch_size=">= 1", max_questions=">= 0")


# ----------------------------------------------------------------------------------------------
# 1. Metric primitives

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


# ----------------------------------------------------------------------------------------------
# 2. Evaluation sets: {name, source, n_total, questions, answers, paraphrased, perturbed}

# TOFU evaluation files ({split} = forget01/05/10); perturbed_answer is a list per question
TOFU_FILES = {"forget": "{split}_perturbed.json", "retain": "retain_perturbed.json",
              "real_authors": "real_authors_perturbed.json", "world_facts": "world_facts_perturbed.json"}
OPTION_SETS = ("real_authors", "world_facts")  # multiple choice: the answer and its perturbed options


def make_set(name, rows, max_questions, source):
    """An evaluation set from rows with question, answer (and TOFU's paraphrased/perturbed answers),
    cut to an evenly spaced subset of `max_questions` rows when 0 < max_questions < len(rows)."""
    if not rows:
        raise DareuError(f"the {name} set is empty")
    k = max_questions if 0 < max_questions < len(rows) else len(rows)
    kept = [rows[i * len(rows) // k] for i in range(k)]
    has_para, has_pert = (all(field in r for r in kept) for field in ("paraphrased_answer", "perturbed_answer"))
    return {"name": name, "source": source, "n_total": len(rows),
            "questions": [r["question"] for r in kept], "answers": [r["answer"] for r in kept],
            "paraphrased": [r["paraphrased_answer"] for r in kept] if has_para else None,
            "perturbed": [list(r["perturbed_answer"]) for r in kept] if has_pert else None}


def build_sets(data, records, forget_spec, forget_owners, max_questions):
    """TOFU's four evaluation sets when `data` is a TOFU folder and the forget spec a TOFU split,
    else the forget and retain records."""
    forget, retain = split_records(records, forget_owners)
    tofu_forget = data and os.path.isfile(os.path.join(data, f"{forget_spec}_perturbed.json"))
    if forget_spec not in SPLIT_PERCENT or not tofu_forget:
        return [make_set("forget", forget, max_questions, "forget records"),
                make_set("retain", retain, max_questions, "retain records")]
    sets = []
    for name, file in TOFU_FILES.items():
        path = os.path.join(data, file.format(split=forget_spec))
        rows = read_json_records(path)
        if name == "forget" and [r["question"] for r in rows] != [r["question"] for r in forget]:
            raise DareuError(f"{path} does not hold the questions of the {forget_spec} owners in {data}")
        sets.append(make_set(name, rows, max_questions, os.path.basename(path)))
    return sets


# ----------------------------------------------------------------------------------------------
# 3. Scoring one model

@torch.no_grad()
def answer_nll(model, tokenizer, questions, answers, batch_size=16, desc="nll"):
    """NLL(a|q) per pair, teacher-forced on left-padded batches. Returns a float64 array [N]."""
    out = []
    for i in tqdm(range(0, len(questions), batch_size), desc=desc, leave=False):
        pairs = zip(questions[i:i + batch_size], answers[i:i + batch_size])
        logp, n = answer_logprobs(model, tokenizer, [{"question": q, "answer": a} for q, a in pairs])
        out.append((-logp.double() / n).cpu())
    return torch.cat(out).numpy()


def greedy_answers(model, tokenizer, questions, cfg, desc="generate"):
    """Greedy answers (cut at the first EOS), cfg.batch_size prompts per generate() call."""
    rollout_cfg = RolloutConfig(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
    texts = []
    for i in tqdm(range(0, len(questions), cfg.batch_size), desc=desc, leave=False):
        texts += generate(model, tokenizer, questions[i:i + cfg.batch_size], rollout_cfg, greedy=True)["texts"]
    return texts


def score_set(model, tokenizer, s, cfg, classifier=None, forget_owners=None):
    """Every per-question value on one set, and its aggregates."""
    name, questions, n = s["name"], s["questions"], len(s["questions"])
    paraphrased, perturbed = s["paraphrased"] or [], s["perturbed"] or []
    # 1. NLL of the gold answer, the paraphrase and each perturbed answer: one flat batched pass
    flat_q = questions + questions[:len(paraphrased)] + [q for q, p in zip(questions, perturbed) for _ in p]
    flat_a = s["answers"] + paraphrased + [a for p in perturbed for a in p]
    nll = answer_nll(model, tokenizer, flat_q, flat_a, cfg.batch_size, desc=f"{name} nll")
    nll_answer, nll_para = nll[:n], nll[n:n + len(paraphrased)]
    if not paraphrased:
        nll_para = nll_answer   # TOFU: the answer is its own paraphrase on real authors / world facts
    ends = np.cumsum([len(p) for p in perturbed]) + n + len(paraphrased)
    nll_pert = [nll[e - len(p):e] for e, p in zip(ends, perturbed)]
    # 2. Probability and truth ratio
    prob = normalised_prob(nll_answer, nll_pert) if name in OPTION_SETS else np.exp(-nll_answer)
    ratios = truth_ratio(nll_para, nll_pert) if perturbed else None
    # 3. Greedy answers, ROUGE-L recall against the gold answer, attribution
    generated = greedy_answers(model, tokenizer, questions, cfg, desc=f"{name} generate")
    rouge = [rouge_l_recall(g, a) for g, a in zip(generated, s["answers"])]
    attribution = (classifier.forget_attribution(questions, generated, forget_owners).tolist()
                   if classifier is not None else None)
    return {"prob": float(prob.mean()), "rouge": float(np.mean(rouge)),
            "truth_ratio": truth_ratio_score(ratios, forget=name == "forget") if perturbed else None,
            "attribution": float(np.mean(attribution)) if attribution is not None else None,
            "per_question": {"generated": generated, "rouge": rouge, "prob": prob.tolist(),
                             "answer_nll": nll_answer.tolist(),
                             "paraphrased_nll": nll_para.tolist() if paraphrased else None,
                             "perturbed_nll": [p.tolist() for p in nll_pert] if perturbed else None,
                             "truth_ratio": ratios.tolist() if perturbed else None,
                             "attribution": attribution}}


def score_model(model, tokenizer, sets, cfg, classifier=None, forget_owners=None):
    """{set name: score_set(...)}; attribution on the forget and retain sets only."""
    return {s["name"]: score_set(model, tokenizer, s, cfg, classifier if s["name"] in ("forget", "retain") else None,
                                 forget_owners) for s in sets}


def evaluate_records(model, tokenizer, forget_records, retain_records, cfg, classifier=None, forget_owners=None):
    """Probability, ROUGE-L and attribution on any owner-labelled forget / retain records (the
    end-of-run report of unlearn.py); per-question lists under "per_question"."""
    sets = [make_set("forget", forget_records, cfg.max_questions, "forget records"),
            make_set("retain", retain_records, cfg.max_questions, "retain records")]
    result = score_model(model, tokenizer, sets, cfg, classifier, forget_owners)
    flat = {f"{s}_{k}": result[s][k] for s in ("forget", "retain") for k in ("prob", "rouge", "attribution")}
    return {**flat, "per_question": {s: result[s]["per_question"] for s in ("forget", "retain")}}


# ----------------------------------------------------------------------------------------------
# 4. Against the retain model: forget quality, model utility, Tug-of-War

def tow_accuracy(scores):
    """A(θ, S) = mean ROUGE-L recall on forget, retain and test (real authors + world facts, pooled)."""
    accuracy = {s: scores[s]["rouge"] for s in ("forget", "retain") if s in scores}
    test = [r for s in OPTION_SETS if s in scores for r in scores[s]["per_question"]["rouge"]]
    if test:
        accuracy["test"] = float(np.mean(test))
    return accuracy


def summarise(scores, retain_scores):
    """Forget quality, model utility and ToW of one model's set scores (None where unavailable)."""
    utility_sets = ("retain",) + OPTION_SETS
    has_tr = all(s in scores and scores[s]["truth_ratio"] is not None for s in utility_sets)
    forget_r = scores["forget"]["per_question"]["truth_ratio"]
    return {"forget_quality": ks_pvalue(forget_r, retain_scores["forget"]["per_question"]["truth_ratio"])
            if retain_scores and forget_r else None,
            "model_utility": hmean([scores[s][k] for s in utility_sets for k in ("prob", "rouge", "truth_ratio")])
            if has_tr else None,
            "tug_of_war": tug_of_war(tow_accuracy(scores), tow_accuracy(retain_scores)) if retain_scores else None}


WHY_UNAVAILABLE = {
    "truth_ratio": "needs paraphrased and perturbed answers (TOFU folder with --forget forget01/05/10)",
    "forget_quality": "needs forget-set truth ratios and a retain reference (--retain-model or --retain-json)",
    "model_utility": "needs the TOFU retain, real_authors and world_facts sets",
    "tug_of_war": "needs a retain reference (--retain-model or --retain-json)",
    "attribution": "needs --classifier",
}


def unavailable(models):
    """{metric: why} for the metrics no model has a value for."""
    first = next(iter(models.values()))
    has = {"truth_ratio": first["sets"]["forget"]["truth_ratio"] is not None,
           "attribution": first["sets"]["forget"]["attribution"] is not None,
           **{k: first[k] is not None for k in ("forget_quality", "model_utility", "tug_of_war")}}
    return {k: why for k, why in WHY_UNAVAILABLE.items() if not has[k]}


# ----------------------------------------------------------------------------------------------
# 5. Report: the markdown table, the protocol

SUMMARY_ROWS = (("forget_quality", "Forget quality (KS p)"), ("model_utility", "Model utility"),
                ("tug_of_war", "Tug-of-War"))
SET_ROWS = (("prob", "Prob"), ("rouge", "ROUGE-L"), ("truth_ratio", "Truth ratio"), ("attribution", "a_F"))


def format_table(rows, columns):
    """A markdown table from {row label: {column: value or None}}; rows without any value are left out."""
    lines = ["| metric | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join("n/a" if values.get(c) is None else f"{values[c]:.4g}" for c in columns)
              + " |" for label, values in rows.items() if any(values.get(c) is not None for c in columns)]
    return "\n".join(lines)


def markdown_table(models):
    """One column per model, one row per metric that some model has."""
    set_names = list(next(iter(models.values()))["sets"])
    rows = {label: {n: r[key] for n, r in models.items()} for key, label in SUMMARY_ROWS}
    rows.update({f"{s} {label}": {n: r["sets"][s][key] for n, r in models.items()}
                 for s in set_names for key, label in SET_ROWS})
    return format_table(rows, list(models))


def column_names(paths):
    """Folder basenames; the paths as given where two basenames coincide."""
    base = [os.path.basename(os.path.normpath(p)) for p in paths]
    return [b if base.count(b) == 1 else os.path.normpath(p) for b, p in zip(base, paths)]


def load_retain_json(path, sets, cfg):
    """(name, results) of the retain model from an earlier evaluate.py output, on the same questions."""
    if not os.path.isfile(path):
        raise DareuError(f"--retain-json {path}: no such file")
    try:
        with open(path, encoding="utf-8") as f:
            earlier = json.load(f)
        models, earlier_sets = earlier["models"], earlier["sets"]
        name = earlier.get("retain_model") or (next(iter(models)) if len(models) == 1 else None)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DareuError(f"--retain-json {path} is not an evaluate.py output ({e})") from None
    if name is None:
        raise DareuError(f"--retain-json {path} holds {len(models)} models and marks none as the retain model; "
                         "evaluate the retain model alone and pass that file")
    for s in sets:
        if earlier_sets.get(s["name"], {}).get("questions") != s["questions"]:
            raise DareuError(f"--retain-json {path} was not evaluated on the same {s['name']} questions "
                             "(check --data, --forget, --max-questions)")
    if earlier["protocol"]["config"]["max_new_tokens"] != cfg.max_new_tokens:
        raise DareuError(f"--retain-json {path} was generated with another --max-new-tokens")
    entry = models[name]
    return name, {**entry, "sets": {s["name"]: entry["sets"][s["name"]] for s in sets}}


# ----------------------------------------------------------------------------------------------
# 6. CLI

def main(argv=None):
    p = argparse.ArgumentParser(description="Evaluate models on the forget/retain split (TOFU metrics, "
                                            "Tug-of-War, attribution); prints a table, writes every value as JSON.")
    p.add_argument("--model", action="append", required=True, help="model folder to evaluate (repeat for several)")
    p.add_argument("--data", help="JSON/JSONL records or a TOFU folder (default: the synthetic world)")
    p.add_argument("--forget", required=True, help="owners to forget: names, forget01/05/10, or a file of records")
    p.add_argument("--classifier", help="attribution classifier folder (attribution.py): adds a_F rows")
    ref = p.add_mutually_exclusive_group()
    ref.add_argument("--retain-model", help="the retain model folder (evaluated too, as the reference)")
    ref.add_argument("--retain-json", help="an earlier evaluate.py output on the retain model, as the reference")
    p.add_argument("--out", required=True, help="JSON file for every per-question value, aggregate and the protocol")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--dtype", default="auto", choices=DTYPES,
                   help="load and run models in this dtype (auto: bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--template", choices=list(PROMPT_TEMPLATES),
                   help="prompt template (default: the one saved with each tokenizer, else chat); see data.py")
    p.add_argument("--owner-names", help="zero-shot classifier: a JSON object owner -> name")
    add_config_args(p, EvalConfig)
    args = p.parse_args(argv)
    cfg = config_from_args(EvalConfig, args)
    check_device(args.device)
    dtype = compute_dtype(args.dtype, args.device, train=False)
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise DareuError(f"--out {args.out}: no such folder {os.path.dirname(os.path.abspath(args.out))}")
    for model in args.model:
        check_out_path(args.out, {"--model": model}, is_file=True)
    check_out_path(args.out, {"--data": args.data, "--forget": args.forget, "--classifier": args.classifier,
                              "--retain-model": args.retain_model, "--retain-json": args.retain_json}, is_file=True)

    # 1. data and sets; every input checked before the first model is loaded
    records = load_records(args.data) if args.data else synthetic_world()
    forget_owners = resolve_forget(args.forget, records)
    sets = build_sets(args.data, records, args.forget, forget_owners, cfg.max_questions)
    paths = list(dict.fromkeys(os.path.normpath(m) for m in args.model + [args.retain_model] if m))
    for path in paths + ([args.classifier] if args.classifier else []):
        check_model_folder(path)
    names = dict(zip(paths, column_names(paths)))
    retain_name, retain_entry = load_retain_json(args.retain_json, sets, cfg) if args.retain_json else (None, None)
    classifier = None
    if args.classifier:
        from attribution import check_classifier, load_classifier, owner_names
        check_classifier(args.classifier, forget_owners)
        classifier = load_classifier(args.classifier, owner_names(records, args.owner_names), args.device, dtype)

    # 2. score each model, one at a time
    models = {}
    for path in paths:
        print(f"evaluating {path}", file=sys.stderr)
        model, tokenizer = load_model(path, args.device, dtype, template=args.template)
        with autocast(args.device, dtype):
            scores = score_model(model, tokenizer, sets, cfg, classifier, forget_owners)
        models[names[path]] = {"path": path, "dtype": str(model.dtype).replace("torch.", ""),
                               "template": template_of(tokenizer),
                               "prompt_format": "chat template" if tokenizer.chat_template else "plain",
                               "prompt_example": tokenizer.decode(prompt_ids(tokenizer, sets[0]["questions"][0])),
                               "sets": scores}
        del model
    if args.retain_model:
        retain_name = names[os.path.normpath(args.retain_model)]
    elif retain_entry is not None:
        retain_name = retain_name + " (retain-json)" if retain_name in models else retain_name
        models[retain_name] = retain_entry

    # 3. the metrics against the retain model (the retain model against itself: FQ = ToW = 1)
    retain_scores = models[retain_name]["sets"] if retain_name else None
    for entry in models.values():
        entry.update(summarise(entry["sets"], retain_scores))
    missing = unavailable(models)
    protocol = {
        "command": sys.argv, "data": args.data or "synthetic_world()", "forget": args.forget,
        "forget_owners": forget_owners, "suite": "tofu" if "real_authors" in [s["name"] for s in sets] else "records",
        "config": asdict(cfg), "question_subset": "evenly spaced rows i*n//k" if cfg.max_questions else "all",
        "decoding": "greedy, cut at the first EOS", "device": args.device,
        "rouge": ROUGE_IMPL, "ks": KS_IMPL, "tow_test_set": "real_authors + world_facts, pooled",
        "retain_reference": (f"--retain-model {args.retain_model}" if args.retain_model else
                             f"--retain-json {args.retain_json}" if args.retain_json else None),
        "classifier": args.classifier,
        "attribution_base_rate": len(forget_owners) / len(classifier.owners) if classifier else None,
        "versions": {"python": platform.python_version(), **{package: metadata.version(package) for package in
                     ("torch", "transformers", "numpy", "scipy", "rouge_score", "nltk") if find_spec(package)}}}
    write_json(args.out, {
        "protocol": protocol, "retain_model": retain_name, "unavailable": missing,
        "sets": {s["name"]: {k: s[k] for k in ("source", "n_total", "questions", "answers")} for s in sets},
        "models": models})
    print(markdown_table(models))
    print("\nsets: " + ", ".join(f"{s['name']} {len(s['questions'])}/{s['n_total']}" for s in sets)
          + f"; retain reference: {retain_name or 'none'}; ROUGE: {ROUGE_IMPL}; KS: {KS_IMPL}")
    for metric, why in missing.items():
        print(f"unavailable: {metric} ({why})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_cli(main)
