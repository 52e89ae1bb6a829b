"""Evaluation: the TOFU metrics (helpers/metrics.py, METHOD.md §8), Tug-of-War, and attribution, for several models
side by side. Per set: NLL of the gold, paraphrased and perturbed answers (teacher-forced), greedy
answers, ROUGE-L, and the classifier's a_F of the greedy answers; then, against the retain model,
Forget Quality, Model Utility and Tug-of-War.
  Attribution     mean a_F of the greedy answers on the forget and on the retain questions
With a TOFU folder and --forget forget01/05/10 the sets are TOFU's evaluation files; with any other
owner-labelled data they are the forget and retain records, and the metrics that need perturbed
answers are listed as unavailable.

    python evaluate.py --model models/original --model models/dareu --retain-model models/retain \\
        --data ../shared/data/tofu --forget forget10 --classifier models/classifier --out eval.json
"""
import argparse
import math
import os
import platform
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from importlib.util import find_spec

import numpy as np
import torch
from tqdm import tqdm

from attribution import add_classifier_args, check_classifier, classifier_from_args, classifier_meta, probe_attribution
from helpers.cli import (DareuError, HelpFormatter, add_config_args, check_device, check_out_path, config_from_args,
                         run_cli, write_json)
from helpers.metrics import (KS_IMPL, MIN_K, ROUGE_IMPL, hmean, ks_pvalue, normalised_prob, privleak, rouge_l_recall,
                             spearman, truth_ratio, truth_ratio_score, tug_of_war)
from helpers.models import add_model_args, answer_logprobs, autocast, check_model_folder, compute_dtype, load_model
from helpers.owner_text import fact_recall, specific_words
from helpers.privacy import ATTACKS, PRIVLEAK_ATTACK, privacy, token_stats
from helpers.prompts import prompt_ids, template_date, template_of
from helpers.records import SPLIT_PERCENT, add_data_args, read_data, read_json_records, resolve_forget, split_records
from helpers.report import column_names, format_table, unavailable
from helpers.retain_logs import load_retain_json, ou_logs, read_ou_logs
from rollout import RolloutConfig, generate


@dataclass
class EvalConfig:
    max_new_tokens: int = 200  # greedy answer length limit (TOFU: 200)
    batch_size: int = 16       # sequences per forward pass / generate() call
    max_questions: int | None = None  # per set: an evenly spaced subset of this many questions (None: all)


# what each flag accepts, checked where the flags are parsed (helpers/cli.py)
EVAL_CHECKS = dict(max_new_tokens=">= 1", batch_size=">= 1", max_questions=">= 1")


# ----------------------------------------------------------------------------------------------
# 2. Evaluation sets: {name, source, n_total, questions, answers, paraphrased, perturbed}

# TOFU evaluation files ({split} = forget01/05/10); perturbed_answer is a list per question
TOFU_FILES = {"forget": "{split}_perturbed.json", "retain": "retain_perturbed.json",
              "real_authors": "real_authors_perturbed.json", "world_facts": "world_facts_perturbed.json"}
OPTION_SETS = ("real_authors", "world_facts")  # multiple choice: the answer and its perturbed options


def make_set(name, rows, max_questions, source):
    """An evaluation set from rows with question, answer (and TOFU's paraphrased/perturbed answers),
    cut to an evenly spaced subset of `max_questions` rows when that is fewer (None or 0: all)."""
    if not rows:
        raise DareuError(f"the {name} set is empty")
    k = max_questions if max_questions and max_questions < len(rows) else len(rows)
    kept = [rows[i * len(rows) // k] for i in range(k)]
    has_para, has_pert = (all(field in r for r in kept) for field in ("paraphrased_answer", "perturbed_answer"))
    return {"name": name, "source": source, "n_total": len(rows), "indices": [i * len(rows) // k for i in range(k)],
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


def score_model(model, tokenizer, sets, cfg, classifier=None, forget_owners=None, holdout=None):
    """{set name: score_set(...)}; attribution on the forget and retain sets only. The forget set also gets
    its memorisation and, given `holdout` (a set of records the model never saw), the membership attacks'
    AUCs (helpers/privacy.py)."""
    scores = {s["name"]: score_set(model, tokenizer, s, cfg, classifier if s["name"] in ("forget", "retain") else None,
                                   forget_owners) for s in sets}
    forget = next(s for s in sets if s["name"] == "forget")
    stats = {s["name"]: token_stats(model, tokenizer, s["questions"], s["answers"], cfg.batch_size)
             for s in (forget, holdout) if s}
    found = privacy(stats["forget"], forget["answers"], stats.get("holdout"), holdout and holdout["answers"])
    scores["forget"].update({k: found[k] for k in ("exact_memorisation", "extraction_strength", "mia")})
    scores["forget"]["per_question"].update(found["per_question"])
    return scores


def evaluate_records(model, tokenizer, forget_records, retain_records, cfg, classifier=None, forget_owners=None,
                     holdout_records=None):
    """Probability, ROUGE-L, attribution and fact recall (helpers/owner_text.fact_recall: the share of the
    gold answer's owner-specific words the greedy answer says) on any owner-labelled forget / retain
    records, and the forget set's memorisation and membership AUCs against `holdout_records` (the
    end-of-run report of unlearn.py); per-question lists under "per_question"."""
    sets = [make_set("forget", forget_records, cfg.max_questions, "forget records")]
    if retain_records:   # none in a run without --data
        sets.append(make_set("retain", retain_records, cfg.max_questions, "retain records"))
    holdout = make_set("holdout", holdout_records, cfg.max_questions, "holdout records") if holdout_records else None
    result = score_model(model, tokenizer, sets, cfg, classifier, forget_owners, holdout)
    specific = specific_words(forget_records + retain_records)
    for s in sets:
        q = result[s["name"]]["per_question"]
        q["facts"] = [fact_recall(*args, specific) for args in zip(s["questions"], q["generated"], s["answers"])]
        known = [f for f in q["facts"] if f is not None]
        result[s["name"]]["facts"] = float(np.mean(known)) if known else None
    flat = {f"{s}_{k}": result[s][k] if s in result else None for s in ("forget", "retain")
            for k in ("prob", "rouge", "attribution", "facts")}
    flat.update(forget_memorisation=result["forget"]["exact_memorisation"],
                forget_extraction=result["forget"]["extraction_strength"], mia=result["forget"]["mia"])
    return {**flat, "per_question": {s: result[s]["per_question"] for s in result}}


def report_rows(results, rows):
    """{row: {column: value}} of the report's `rows` for the models of `results` (evaluate_records outputs):
    privleak of each against the retain model's membership AUC; `mia_auc` the attack privleak reads."""
    def auc(name):
        return (results[name]["mia"] or {}).get(PRIVLEAK_ATTACK) if name in results else None
    extra = {"mia_auc": {n: auc(n) for n in results},
             "privleak": {n: privleak(auc(n), auc("retain")) if None not in (auc(n), auc("retain")) else None
                          for n in results}}
    return {row: extra[row] if row in extra else {n: r[row] for n, r in results.items()} for row in rows}


# ----------------------------------------------------------------------------------------------
# 4. Against the retain model: forget quality, model utility, Tug-of-War

def fact_probe(per_question):
    """The classifier's fact probe: Spearman's ρ between a_F and ROUGE-L against the gold answer over
    the greedy forget answers of several models (their score_set "per_question" dicts, pooled). Near +1: the classifier
    attributes an answer as much as it keeps the owner's facts. JSON-safe: None where ρ is undefined."""
    a_f = [a for q in per_question for a in q["attribution"]]
    rouge = [r for q in per_question for r in q["rouge"]]
    rho = spearman(a_f, rouge)
    return {"spearman": None if math.isnan(rho) else rho, "answers": len(a_f)}   # None: a constant sample


def classifier_report(path, classifier, forget_owners, answers, unlearned=None):
    """What the classifier at `path` is worth (METHOD.md §2): held-out accuracy and calibration error
    (from classifier.json; None for zero-shot), a_F on the fixed off-distribution probes, the fact
    probe over `answers` (per_question dicts of forget sets, pooled) and, when given, over the
    unlearned model's forget answers `unlearned` alone."""
    meta = classifier_meta(path) or {}
    report = {"heldout_accuracy": meta.get("heldout_accuracy"), "heldout_ece": meta.get("heldout_ece"),
              "probes": probe_attribution(classifier, forget_owners), "fact_probe": fact_probe(answers)}
    if unlearned is not None:
        report["fact_probe_unlearned"] = fact_probe([unlearned])
    return report


def classifier_report_line(report):
    """classifier_report in one line (printed by unlearn.py, in the bench headers)."""
    def text(v):
        return "n/a" if v is None else f"{v:.3f}"
    probe, own = report["fact_probe"], report.get("fact_probe_unlearned")
    return (f"a_F at most {max(report['probes'].values()):.3f} on {len(report['probes'])} refusal / empty / generic "
            f"texts; fact probe ρ(a_F, forget ROUGE-L) {text(probe['spearman'])} over {probe['answers']} answers"
            + (f", {text(own['spearman'])} over the unlearned model's {own['answers']}" if own else "")
            + f"; held-out accuracy {text(report['heldout_accuracy'])}, "
            f"calibration error {text(report['heldout_ece'])}")


def tow_accuracy(scores):
    """A(θ, S) = mean ROUGE-L recall on forget, retain and test (real authors + world facts, pooled)."""
    accuracy = {s: scores[s]["rouge"] for s in ("forget", "retain") if s in scores and scores[s]["rouge"] is not None}
    test = [r for s in OPTION_SETS if s in scores for r in scores[s]["per_question"]["rouge"]]
    if test:
        accuracy["test"] = float(np.mean(test))
    return accuracy


def summarise(scores, retain_scores):
    """Forget quality, model utility, privleak and ToW of one model's set scores (None where unavailable)."""
    utility_sets = ("retain",) + OPTION_SETS
    has_tr = all(s in scores and scores[s]["truth_ratio"] is not None for s in utility_sets)
    forget_r = scores["forget"]["per_question"]["truth_ratio"]
    aucs = [(s["forget"].get("mia") or {}).get(PRIVLEAK_ATTACK) for s in (scores, retain_scores or {"forget": {}})]
    return {"forget_quality": ks_pvalue(forget_r, retain_scores["forget"]["per_question"]["truth_ratio"])
            if retain_scores and forget_r else None,
            "privleak": privleak(*aucs) if None not in aucs else None,
            "model_utility": hmean([scores[s][k] for s in utility_sets for k in ("prob", "rouge", "truth_ratio")])
            if has_tr else None,
            "tug_of_war": tug_of_war(tow_accuracy(scores), tow_accuracy(retain_scores)) if retain_scores else None}


# ----------------------------------------------------------------------------------------------
# 5. Report: the markdown table, the protocol

SUMMARY_ROWS = (("forget_quality", "Forget quality (KS p)"), ("model_utility", "Model utility"),
                ("tug_of_war", "Tug-of-War"), ("privleak", "privleak (Min-K% AUC vs the retain model's)"))
SET_ROWS = (("prob", "Prob"), ("rouge", "ROUGE-L"), ("truth_ratio", "Truth ratio"), ("attribution", "a_F"),
            ("exact_memorisation", "exact memorisation"), ("extraction_strength", "extraction strength"))


def markdown_table(models):
    """One column per model, one row per metric that some model has."""
    set_names = list(next(iter(models.values()))["sets"])
    rows = {label: {n: r[key] for n, r in models.items()} for key, label in SUMMARY_ROWS}
    rows.update({f"{s} {label}": {n: r["sets"][s].get(key) for n, r in models.items()}
                 for s in set_names for key, label in SET_ROWS})
    rows.update({f"forget MIA AUC ({attack})": {n: (r["sets"]["forget"]["mia"] or {}).get(attack) for n, r in models.items()}
                 for attack in ATTACKS})
    return format_table(rows, list(models))


# ----------------------------------------------------------------------------------------------
# 6. CLI

def main(argv=None):
    p = argparse.ArgumentParser(description="Evaluate models on the forget/retain split (TOFU metrics, "
                                            "Tug-of-War, attribution); prints a table, writes every value as JSON.",
                                formatter_class=HelpFormatter)
    p.add_argument("--model", action="append", required=True, help="model folder to evaluate (repeat for several)")
    ref = p.add_mutually_exclusive_group()
    ref.add_argument("--retain-model", help="the retain model folder (evaluated too, as the reference)")
    ref.add_argument("--retain-json", help="an earlier evaluate.py output on the retain model, as the reference")
    ref.add_argument("--retain-logs", help="open-unlearning's evaluation log of the retain model (TOFU_EVAL.json)")
    p.add_argument("--holdout", help="owner-labelled records the models never saw (non-members): the membership "
                                     "attacks' AUC and privleak")
    p.add_argument("--out", required=True, help="JSON file for every per-question value, aggregate and the protocol")
    p.add_argument("--ou-logs", help="also write each model's results as open-unlearning's TOFU_EVAL.json, in "
                                     "this folder (one subfolder per model)")
    add_data_args(p, forget_required=True)
    add_classifier_args(p)
    add_model_args(p)
    add_config_args(p, EvalConfig, title="evaluation")
    args = p.parse_args(argv)
    cfg = config_from_args(EvalConfig, args, EVAL_CHECKS)
    check_device(args.device)
    dtype = compute_dtype(args.dtype, args.device, train=False)
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise DareuError(f"--out {args.out}: no such folder {os.path.dirname(os.path.abspath(args.out))}")
    for model in args.model:
        check_out_path(args.out, {"--model": model}, is_file=True)
    inputs = {"--data": args.data, "--forget": args.forget, "--classifier": args.classifier, "--holdout": args.holdout,
              "--retain-model": args.retain_model, "--retain-json": args.retain_json, "--retain-logs": args.retain_logs}
    check_out_path(args.out, inputs, is_file=True)
    if args.ou_logs:
        check_out_path(args.ou_logs, {**inputs, **{"--model": m for m in args.model}})

    # 1. data and sets; every input checked before the first model is loaded
    records = read_data(args.data)
    forget_owners = resolve_forget(args.forget, records)
    sets = build_sets(args.data, records, args.forget, forget_owners, cfg.max_questions)
    holdout = make_set("holdout", read_json_records(args.holdout), cfg.max_questions, args.holdout) if args.holdout else None
    paths = list(dict.fromkeys(os.path.normpath(m) for m in args.model + [args.retain_model] if m))
    for path in paths + ([args.classifier] if args.classifier else []):
        check_model_folder(path)
    names = dict(zip(paths, column_names(paths)))
    retain_name, retain_entry = (load_retain_json(args.retain_json, sets, cfg) if args.retain_json else
                                 read_ou_logs(args.retain_logs, sets) if args.retain_logs else (None, None))
    classifier = None
    if args.classifier:
        check_classifier(args.classifier, forget_owners)   # before any model is loaded
        classifier = classifier_from_args(args, records, forget_owners)

    # 2. score each model, one at a time
    models = {}
    for path in paths:
        print(f"evaluating {path}", file=sys.stderr)
        model, tokenizer = load_model(path, args.device, dtype, template=args.template)
        with autocast(args.device, dtype):
            scores = score_model(model, tokenizer, sets, cfg, classifier, forget_owners, holdout)
        models[names[path]] = {"path": path, "dtype": str(model.dtype).replace("torch.", ""),
                               "template": template_of(tokenizer), "template_date": template_date(tokenizer),
                               "prompt_format": "chat template" if tokenizer.chat_template else "plain",
                               "prompt_example": tokenizer.decode(prompt_ids(tokenizer, sets[0]["questions"][0])),
                               "sets": scores}
        del model
    if args.retain_model:
        retain_name = names[os.path.normpath(args.retain_model)]
    elif retain_entry is not None:
        retain_name = retain_name + " (retain reference)" if retain_name in models else retain_name
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
        "retain_reference": next((f"{flag} {path}" for flag, path in (("--retain-model", args.retain_model), (
            "--retain-json", args.retain_json), ("--retain-logs", args.retain_logs)) if path), None),
        "holdout": args.holdout, "mia_k": MIN_K, "privleak_attack": PRIVLEAK_ATTACK,
        "classifier": args.classifier,
        "attribution_base_rate": len(forget_owners) / len(classifier.owners) if classifier else None,
        "versions": {"python": platform.python_version(), **{package: metadata.version(package) for package in
                     ("torch", "transformers", "numpy", "scipy", "rouge_score", "nltk") if find_spec(package)}}}
    write_json(args.out, {
        "protocol": protocol, "retain_model": retain_name, "unavailable": missing,
        "sets": {s["name"]: {k: s[k] for k in ("source", "n_total", "questions", "answers")} for s in sets},
        "models": models})
    if args.ou_logs:   # open-unlearning's format, one folder per model
        for name, entry in models.items():
            os.makedirs(os.path.join(args.ou_logs, name), exist_ok=True)
            write_json(os.path.join(args.ou_logs, name, "TOFU_EVAL.json"), ou_logs(entry, sets))
    print(markdown_table(models))
    print("\nsets: " + ", ".join(f"{s['name']} {len(s['questions'])}/{s['n_total']}" for s in sets)
          + f"; retain reference: {retain_name or 'none'}; ROUGE: {ROUGE_IMPL}; KS: {KS_IMPL}")
    for metric, why in missing.items():
        print(f"unavailable: {metric} ({why})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_cli(main)
