"""The retain model's reference, read from a file instead of evaluating the retain model again: an earlier
evaluate.py output, or open-unlearning's evaluation log (TOFU_EVAL.json, the file its `retain_logs_path`
points to); and our own results written in open-unlearning's format, so that either side reads the other.

open-unlearning's log holds, per metric, {"agg_value": x, "value_by_index": {"<row>": {...}}}, the rows
being the dataset's: forget_truth_ratio's per-row "score" is the truth ratio R = P̄_pert / P̃_para (what
Forget Quality's KS test reads), mia_min_k's "agg_value" the Min-K% AUC of forget against holdout
(what privleak reads), *_Q_A_ROUGE's per-row "rougeL_recall" the ROUGE-L recall.
"""
import json
import os

from helpers.cli import DareuError

# our set names -> open-unlearning's metric prefixes (its TOFU evaluation)
OU_PREFIX = {"forget": "forget", "retain": "retain", "real_authors": "ra", "world_facts": "wf"}


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


def read_ou_logs(path, sets):
    """(name, entry) of the retain model from open-unlearning's TOFU_EVAL.json, on our sets' rows: the
    per-question forget truth ratios, each set's ROUGE-L where the log has it, and the Min-K% AUC."""
    try:
        with open(path, encoding="utf-8") as f:
            logs = json.load(f)
        ratios = logs["forget_truth_ratio"]["value_by_index"]
        forget = next(s for s in sets if s["name"] == "forget")
        scores = {s["name"]: {"prob": None, "truth_ratio": None, "attribution": None, "rouge": None,
                              "per_question": {"truth_ratio": None, "rouge": None}} for s in sets}
        scores["forget"]["per_question"]["truth_ratio"] = [float(ratios[str(i)]["score"]) for i in forget["indices"]]
        for s in sets:
            rouge = logs.get(f"{OU_PREFIX.get(s['name'], s['name'])}_Q_A_ROUGE", {}).get("value_by_index")
            if rouge:
                per = [float(rouge[str(i)]["rougeL_recall"]) for i in s["indices"]]
                scores[s["name"]].update(rouge=sum(per) / len(per))
                scores[s["name"]]["per_question"]["rouge"] = per
        mia = logs.get("mia_min_k", {}).get("agg_value")
        scores["forget"]["mia"] = {"min_k": float(mia)} if mia is not None else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DareuError(f"--retain-logs {path} is not an open-unlearning evaluation log covering our "
                         f"forget rows ({type(e).__name__}: {e})") from None
    return os.path.basename(os.path.dirname(os.path.abspath(path))) or "retain", {"path": path, "sets": scores}


def ou_logs(entry, sets):
    """One model's evaluate.py entry in open-unlearning's TOFU_EVAL.json format (the metrics both compute)."""
    def by_index(s, values, key):
        return {str(i): {key: v} for i, v in zip(s["indices"], values)}
    logs = {k: {"agg_value": entry[k]} for k in ("forget_quality", "model_utility", "privleak") if entry.get(k) is not None}
    for s in sets:
        got, prefix = entry["sets"][s["name"]], OU_PREFIX.get(s["name"], s["name"])
        q = got["per_question"]
        logs[f"{prefix}_Q_A_ROUGE"] = {"agg_value": got["rouge"], "value_by_index": by_index(s, q["rouge"], "rougeL_recall")}
        logs[f"{prefix}_Q_A_Prob"] = {"agg_value": got["prob"], "value_by_index": by_index(s, q["prob"], "prob")}
        if q.get("truth_ratio") is not None:
            logs[f"{prefix}_truth_ratio"] = {"agg_value": got["truth_ratio"],
                                             "value_by_index": by_index(s, q["truth_ratio"], "score")}
    forget = entry["sets"]["forget"]
    fs = next(s for s in sets if s["name"] == "forget")
    for key, name in (("exact_memorisation", "exact_memorization"), ("extraction_strength", "extraction_strength")):
        logs[name] = {"agg_value": forget[key], "value_by_index": by_index(fs, forget["per_question"][key], "score")}
    for attack, auc in (forget.get("mia") or {}).items():
        scores = forget["per_question"]["mia"][attack]
        logs[f"mia_{attack}"] = {"forget": {"agg_value": sum(scores["forget"]) / len(scores["forget"]),
                                            "value_by_index": by_index(fs, scores["forget"], "score")},
                                 "holdout": {"agg_value": sum(scores["holdout"]) / len(scores["holdout"]),
                                             "value_by_index": {str(i): {"score": v}
                                                                for i, v in enumerate(scores["holdout"])}},
                                 "auc": auc, "agg_value": auc}
    return dict(sorted(logs.items()))
