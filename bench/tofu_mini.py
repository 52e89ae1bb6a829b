"""TOFU-mini: DareU against the loss-based baselines on real TOFU text, small enough for a CPU.

The owners are N TOFU authors (default 40): the first N − k authors of `full` and the last k
(k = 10 % of N, the shape of forget10). The forget authors are taken from the end of `full`
because only they (and the first 20 authors) have TOFU's paraphrased and perturbed answers,
which truth ratio and Forget Quality need. Then, by the same stages a user runs:
  1-2. world.build_world, as for the embedded default: a BPE tokenizer on that text, an original model
     fine-tuned from scratch on all N authors until it knows the answers, a retain model without the
     k forget authors, and the attribution classifier (masked answer -> author),
  3. DareU and every baseline (GA, GradDiff, NPO, NPO+GD, SimNPO) from the original model with the
     same number of optimiser steps and learning rate; wall time reported,
  4. evaluate.py's TOFU metrics for all of them against the retain model: forget set = the forget
     authors' rows of forget10_perturbed, retain set = retain_perturbed (the first 20 authors),
     real authors, world facts,
  5. bench/results/tofu_mini{,_quick}.md and .json (seed, versions, wall times) and, when
     matplotlib is installed, a plot of Forget Quality against utility and of DareU's attribution.
Model utility is reported twice: TOFU's 9-number harmonic mean (near 0 for a model that never saw
real authors or world facts) and "retain utility", the harmonic mean of the retain set's
Probability, ROUGE-L and truth-ratio score.

    python bench/tofu_mini.py            # the full bench (about 45 minutes on 2 CPU cores)
    python bench/tofu_mini.py --quick    # a smaller version (about 10 minutes)
"""
import argparse
import copy
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from importlib import metadata

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from attribution import load_classifier  # noqa: E402
from cli import DareuError, add_config_args, config_from_args, run_cli  # noqa: E402
from data import load_records, owners_of, read_json_records, split_records  # noqa: E402
from evaluate import EvalConfig, format_table, make_set, score_model, summarise  # noqa: E402
from finetune import FinetuneConfig, finetune  # noqa: E402
from lora import LoraConfig, add_lora  # noqa: E402
from metrics import KS_IMPL, ROUGE_IMPL, hmean  # noqa: E402
from models import frozen_reference, load_model  # noqa: E402
from ppo import PPOConfig  # noqa: E402
from reward import RewardConfig  # noqa: E402
from rollout import RolloutConfig  # noqa: E402
from unlearn import UnlearnConfig, unlearn  # noqa: E402
from world import build_world  # noqa: E402

BASELINES = ("ga", "graddiff", "npo", "npo_gd", "simnpo")


@dataclass
class BenchConfig:
    tofu: str = os.path.join(ROOT, "..", "shared", "data", "tofu")  # the TOFU folder
    authors: int = 40             # N owners: the first N − k authors of full and the last k
    forget_fraction: float = 0.1  # k = round(N · this) forget authors
    layers: int = 4               # from-scratch model: transformer layers
    d_model: int = 128            # from-scratch model: hidden size
    sft_epochs: float = 40.0      # original / retain fine-tuning epochs (enough to learn the answers)
    classifier_epochs: float = 20.0  # classifier training epochs
    iterations: int = 40          # DareU PPO iterations; baselines get the same number of optimiser steps
    lr: float = 3e-4              # learning rate of DareU and of every baseline
    kl_coef: float = 0.05         # DareU's β
    reward_form: str = "log"      # DareU's score: "log" (log(1 − a_F + ε), best here) or "neg" (−a_F)
    lora_rank: int = 0            # > 0: DareU and every baseline train LoRA adapters of this rank (results *_lora)
    retain_coef: float = 1.0      # DareU's λ_retain
    ppo_epochs: int = 2           # DareU's PPO epochs per rollout
    max_questions: int = 0        # per evaluation set: 0 = all
    max_new_tokens: int = 200     # greedy answer length in the evaluation (TOFU: 200)
    seed: int = 0                 # every seed of the bench
    methods: str = "dareu," + ",".join(BASELINES)  # which methods to run (comma-separated)
    work: str = os.path.join(ROOT, "bench", "work")  # cache of the built models (ignored by git)


QUICK = dict(authors=20, layers=2, sft_epochs=40.0, max_questions=40, max_new_tokens=64)


def select_owners(records, cfg):
    """The first N − k authors and the last k authors of TOFU's full (owner = row index // 20)."""
    owners = owners_of(records)
    k = max(1, round(cfg.authors * cfg.forget_fraction))
    chosen, forget = owners[:cfg.authors - k] + owners[-k:], owners[-k:]
    return [r for r in records if r["owner"] in set(chosen)], forget


def evaluation_sets(cfg, forget_recs, keep):
    """TOFU's evaluation rows for this bench: the forget authors' rows of forget10_perturbed (the
    last 20 authors, 20 rows each), retain_perturbed restricted to retained authors, the two
    multiple-choice sets."""
    rows = read_json_records(os.path.join(cfg.tofu, "forget10_perturbed.json"))
    if len(forget_recs) > len(rows):
        raise DareuError("forget10_perturbed covers the last 20 authors: use at most 20 forget authors")
    forget_rows = rows[len(rows) - len(forget_recs):]
    if [r["question"] for r in forget_rows] != [r["question"] for r in forget_recs]:
        raise DareuError(f"{cfg.tofu}: forget10_perturbed.json does not end with the forget authors' questions")
    retain_rows = read_json_records(os.path.join(cfg.tofu, "retain_perturbed.json"))[:20 * keep]
    return [make_set("forget", forget_rows, cfg.max_questions, "forget10_perturbed.json (forget authors)"),
            make_set("retain", retain_rows, cfg.max_questions, "retain_perturbed.json"),
            make_set("real_authors", read_json_records(os.path.join(cfg.tofu, "real_authors_perturbed.json")),
                     cfg.max_questions, "real_authors_perturbed.json"),
            make_set("world_facts", read_json_records(os.path.join(cfg.tofu, "world_facts_perturbed.json")),
                     cfg.max_questions, "world_facts_perturbed.json")]


def run_methods(cfg, records, forget, folder):
    """DareU and the baselines from the original model, the same optimiser steps each.
    Returns {method: (model, wall seconds, steps)} and DareU's per-iteration metrics."""
    original, tokenizer = load_model(os.path.join(folder, "original"))
    classifier = load_classifier(os.path.join(folder, "classifier"), records)
    forget_recs, retain_recs = split_records(records, forget)
    unlearn_cfg = UnlearnConfig(iterations=cfg.iterations, prompts_per_iter=64, samples_per_prompt=1,
                                eval_every=5, sample_every=0, seed=cfg.seed)
    ppo_cfg = PPOConfig(lr=cfg.lr, epochs=cfg.ppo_epochs, retain_coef=cfg.retain_coef)
    n_rollout = min(unlearn_cfg.prompts_per_iter, len(forget_recs)) * unlearn_cfg.samples_per_prompt
    steps = cfg.iterations * cfg.ppo_epochs * -(-n_rollout // ppo_cfg.minibatch_size)
    methods, curve = {}, []
    for method in cfg.methods.split(","):
        start = time.time()
        model = copy.deepcopy(original)
        if cfg.lora_rank:
            torch.manual_seed(cfg.seed)
            add_lora(model, LoraConfig(rank=cfg.lora_rank))
        if method == "dareu":
            metrics_path = os.path.join(folder, "dareu_metrics.jsonl")
            unlearn(model, tokenizer, frozen_reference(model), classifier, forget_recs, retain_recs, forget, unlearn_cfg,
                    RolloutConfig(max_new_tokens=64), RewardConfig(form=cfg.reward_form, kl_coef=cfg.kl_coef), ppo_cfg,
                    EvalConfig(max_new_tokens=64), metrics_path)
            with open(metrics_path, encoding="utf-8") as f:
                curve = [json.loads(line) for line in f]
        elif method in BASELINES:
            finetune(model, tokenizer, forget_recs, FinetuneConfig(objective=method, steps=steps, lr=cfg.lr,
                                                                   seed=cfg.seed), retain_recs, desc=method)
        else:
            raise DareuError(f"unknown method {method!r}; choose from dareu, {', '.join(BASELINES)}")
        methods[method] = (model.eval(), round(time.time() - start, 1), steps)
    return tokenizer, classifier, methods, curve


def plot(results, curve, path):
    """FQ against retain utility for every model, and DareU's attribution per iteration."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, r in results.items():
        ax1.scatter(r["retain_utility"], max(r["forget_quality"], 1e-30), label=name)
        ax1.annotate(name, (r["retain_utility"], max(r["forget_quality"], 1e-30)), fontsize=8)
    ax1.set(xlabel="retain utility (hmean of retain Prob, ROUGE-L, truth ratio)", ylabel="Forget Quality (KS p)",
            yscale="log", title="TOFU-mini: forgetting vs utility")
    ax2.plot([c["iteration"] for c in curve], [c["attribution"] for c in curve], label="sampled a_F")   # [] if no DareU
    greedy = [c for c in curve if "greedy_attribution" in c]
    ax2.plot([c["iteration"] for c in greedy], [c["greedy_attribution"] for c in greedy], "o-", label="greedy a_F")
    ax2.set(xlabel="PPO iteration", ylabel="forget attribution", title="DareU", ylim=(0, 1))
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    p = argparse.ArgumentParser(description="TOFU-mini: DareU against GA, GradDiff, NPO, NPO+GD and SimNPO on real "
                                            "TOFU text with from-scratch models (CPU).")
    p.add_argument("--quick", action="store_true", help="a smaller version: " + json.dumps(QUICK))
    add_config_args(p, BenchConfig)
    args = p.parse_args()
    cfg = config_from_args(BenchConfig, args)
    if args.quick:   # the quick preset, except for flags given explicitly
        explicit = {a.split("=")[0][2:].replace("-", "_") for a in sys.argv[1:] if a.startswith("--")}
        cfg = replace(cfg, **{k: v for k, v in QUICK.items() if k not in explicit})
    if not os.path.isfile(os.path.join(cfg.tofu, "full.json")):
        raise DareuError(f"no TOFU folder at {cfg.tofu} (give --tofu)")
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    # 1-2. data, original and retain models, classifier
    records, forget = select_owners(load_records(cfg.tofu), cfg)
    key = json.dumps({k: v for k, v in asdict(cfg).items() if k in ("authors", "forget_fraction", "layers", "d_model",
                                                                     "sft_epochs", "classifier_epochs", "seed")}, sort_keys=True)
    folder = os.path.join(cfg.work, "tofu_mini-" + "-".join(str(v) for v in json.loads(key).values()))
    print(f"{len(records)} QA pairs of {len(owners_of(records))} authors; forgetting {', '.join(forget)}")
    built = build_world(folder, records, forget, cfg.sft_epochs, cfg.classifier_epochs, cfg.layers, cfg.d_model,
                        cfg.seed)
    # 3. the methods
    tokenizer, classifier, methods, curve = run_methods(cfg, records, forget, folder)
    # 4. evaluation against the retain model
    sets = evaluation_sets(cfg, split_records(records, forget)[0], keep=min(20, cfg.authors - len(forget)))
    eval_cfg = EvalConfig(max_new_tokens=cfg.max_new_tokens, max_questions=cfg.max_questions)
    scores, seconds = {}, {}
    for name in ("original", "retain"):
        model, tok = load_model(os.path.join(folder, name))
        scores[name] = score_model(model, tok, sets, eval_cfg, classifier, forget)
        seconds[name] = built[f"{name}_seconds"]
    for name, (model, wall, _) in methods.items():
        scores[name] = score_model(model, tokenizer, sets, eval_cfg, classifier, forget)
        seconds[name] = wall
    results = {}
    for name, s in scores.items():
        r = summarise(s, scores["retain"])
        r["retain_utility"] = hmean([s["retain"][k] for k in ("prob", "rouge", "truth_ratio")])
        for set_name in s:
            for k in ("prob", "rouge", "truth_ratio", "attribution"):
                r[f"{set_name}_{k}"] = s[set_name][k]
        r["steps"] = methods[name][2] if name in methods else None
        r["seconds"] = seconds[name]
        results[name] = r
    # 5. report
    rows = ("forget_quality", "model_utility", "retain_utility", "tug_of_war", "forget_attribution",
            "retain_attribution", "forget_rouge", "retain_rouge", "forget_prob", "retain_prob",
            "forget_truth_ratio", "retain_truth_ratio", "steps", "seconds")
    table = format_table({row: {n: results[n][row] for n in results} for row in rows}, list(results))
    check = scores["original"]["forget"]["rouge"]
    versions = {"python": platform.python_version(),
                **{p_: metadata.version(p_) for p_ in ("torch", "transformers", "numpy")}}
    report = {"config": asdict(cfg), "quick": args.quick, "forget_authors": forget, "built": built,
              "original_forget_rouge": check, "versions": versions, "rouge": ROUGE_IMPL, "ks": KS_IMPL,
              "total_seconds": round(time.time() - t0, 1), "results": results,
              "sets": {s["name"]: {"source": s["source"], "n": len(s["questions"]), "n_total": s["n_total"]} for s in sets}}
    out = os.path.join(ROOT, "bench", "results", ("tofu_mini_quick" if args.quick else "tofu_mini")
                       + (f"_lora{cfg.lora_rank}" if cfg.lora_rank else ""))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    header = (f"# TOFU-mini{' (quick)' if args.quick else ''}\n\n{len(owners_of(records))} TOFU authors, forgetting "
              f"{len(forget)}; from-scratch {cfg.layers}-layer d={cfg.d_model} Llama"
              f"{f', LoRA rank {cfg.lora_rank} for every method' if cfg.lora_rank else ''}; seed {cfg.seed}; "
              f"original forget ROUGE-L {check:.3f}; classifier held-out accuracy "
              f"{built['classifier_heldout_accuracy']:.3f}; {report['total_seconds']:.0f} s in all.\n"
              f"Versions: {json.dumps(versions)}. ROUGE: {ROUGE_IMPL}. KS: {KS_IMPL}.\n\n")
    with open(out + ".md", "w", encoding="utf-8") as f:
        f.write(header + table + "\n")
    with open(out + ".json", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    print(table)
    try:
        plot(results, curve, out + ".png")
        print(f"plot: {out}.png")
    except ImportError:
        print("matplotlib not installed: no plot (the table above has the numbers)")
    print(f"wrote {out}.md and {out}.json in {report['total_seconds']:.0f} s")


if __name__ == "__main__":
    run_cli(main)
