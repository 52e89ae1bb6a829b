"""TOFU-mini: DareU against the loss-based baselines on real TOFU text, small enough for a CPU.

The owners are N TOFU authors (default 40): the first N − k authors of `full` and the last k (k = 10 % of
N, as forget10), forgotten: only they (and the first 20) have the perturbed answers Forget Quality needs.
  1-2. world.build_world, as for the embedded default: a BPE tokenizer, an original model trained from
     scratch on all N authors, a retain model without the k forget authors, the attribution classifier,
  3. DareU and every baseline (GA, GradDiff, NPO(+GD), SimNPO(+GD)) from the original model with the same
     optimiser steps, each at its learning rate (--lrs, from the same --lr-sweep for every method), once
     per seed in --seeds (DareU's sampling, the baselines' batch order; the models they start from are
     built once, with --seed); DareU stops at the retain model's level (helpers/run.py resolve_target),
     and with --baseline-stop so do the baselines (DareU's greedy check or its oracle's, as often),
  4. evaluate.py's TOFU metrics against the retain model: the forget authors' rows of forget10_perturbed,
     retain_perturbed (the first 20 authors), real authors, world facts; privleak and the membership
     attacks against k authors of full.json no model saw,
  5. bench/results/tofu_mini{,_quick}.md and .json: mean ± std over the seeds of every metric, the
     classifier report, versions, wall times; with matplotlib, a plot of Forget Quality against utility.
--split validation forgets the k authors before the last k instead, with their own models: settings are
chosen there and reported on the test split (bench/dareu_grid.py). --knobs sets any method's settings;
the method dareu_oracle is DareU scored by the gold answers in place of the classifier (bench/oracle.py).
With --lr-sweep A,B,C it runs every method at each learning rate on the first seed instead, and writes
the table of Tug-of-War and the --lrs that picks each method's best rate (tofu_mini*_lr_sweep.md).
Model utility is reported twice: TOFU's 9-number harmonic mean (near 0 for a model that never saw
real authors or world facts) and "retain utility", the retain set's Probability, ROUGE-L and truth ratio.

    python bench/tofu_mini.py --quick --lr-sweep 1e-4,3e-4,1e-3 --seeds 3    # each method's lr (45 min, 2 cores)
    python bench/tofu_mini.py [--quick] --seeds 0,1,2 --lrs dareu=3e-4,ga=1e-4,...  # 40 [20] authors (20: ~15 min a seed)
    python bench/tofu_mini.py --smollm2 [--quick]        # the real-model variant, bf16 (24 [14] min cold, 2 cores)
    python bench/tofu_mini.py --merge a.json,b.json --out bench/results/NAME   # pool runs made in parallel
"""
import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from importlib import metadata

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "bench")]

from attribution import ClassifierConfig, load_classifier  # noqa: E402
from evaluate import (EvalConfig, classifier_report, classifier_report_line, make_set, score_model,
                      summarise)  # noqa: E402
from finetune import FinetuneConfig, finetune  # noqa: E402
from helpers.cli import DareuError, add_config_args, config_from_args, flag_type, parse_bool, run_cli  # noqa: E402
from helpers.lora import LoraConfig, add_lora  # noqa: E402
from helpers.metrics import KS_IMPL, ROUGE_IMPL, hmean  # noqa: E402
from helpers.models import autocast, compute_dtype, frozen_reference, load_model  # noqa: E402
from helpers.records import load_records, owners_of, read_json_records, split_records  # noqa: E402
from helpers.run import Run, resolve_target  # noqa: E402
from oracle import GoldAnswerOracle  # noqa: E402
from ppo import PPOConfig  # noqa: E402
from reward import RewardConfig  # noqa: E402
from rollout import RolloutConfig  # noqa: E402
from unlearn import Args, Models, Task, UnlearnConfig, greedy_attribution, unlearn  # noqa: E402
from tofu_report import merge, plot, seeds_table, sweep_table, write_report  # noqa: E402
from world import build_world  # noqa: E402

BASELINES = ("ga", "graddiff", "npo", "npo_gd", "simnpo", "simnpo_gd")

@dataclass
class BenchConfig:
    tofu: str = os.path.join(ROOT, "..", "shared", "data", "tofu")  # the TOFU folder
    authors: int = 40             # N owners: the first N − k authors of full and the last k
    forget_fraction: float = 0.1  # k = round(N · this) forget authors
    layers: int = 4               # from-scratch model: transformer layers
    d_model: int = 128            # from-scratch model: hidden size
    sft_epochs: float = 40.0      # original / retain fine-tuning epochs (enough to learn the answers)
    sft_lr: float = 2e-3          # original / retain fine-tuning learning rate
    batch_size: int = 32          # QA pairs per step: fine-tuning, classifier and baselines
    classifier_epochs: float = 40.0  # classifier training epochs
    classifier_lr: float = 2e-3   # classifier learning rate
    classifier_heldout: float = 0.1  # fraction of each author's records held out to measure the classifier
    base: str = ""                # a pretrained model to fine-tune the original, retain and classifier from ("": scratch)
    prompts: int = 64             # DareU's forget prompts per PPO iteration
    iterations: int = 40          # DareU PPO iterations; baselines get the same number of optimiser steps
    lr: float = 3e-4              # learning rate of every method not in --lrs
    lrs: str = ""                 # per-method learning rates, "method=lr,..." (the picks of --lr-sweep)
    lr_sweep: str = ""            # learning rates to sweep (comma-separated): every method at each, first seed
    seeds: str = "0"              # the methods' seeds (comma-separated): one run each, reported as mean ± std
    kl_coef: float = 0.05         # DareU's β
    reward_form: str = "log"      # DareU's score: "log" (log(1 − a_F + ε), best here) or "neg" (−a_F)
    lora_rank: int = 0            # > 0: DareU and every baseline train LoRA adapters of this rank (results *_lora)
    retain_coef: float = 1.0      # DareU's λ_retain
    ppo_epochs: int = 2           # DareU's PPO epochs per rollout
    baseline_stop: str = "never"  # the baselines' stop, checked as often as DareU's: "never" (every step), "dareu" (its rule: greedy forget a_F <= its target) or "dareu_oracle" (the oracle's: greedy forget ROUGE-L recall <= the retain model's)
    max_questions: int = 0        # per evaluation set: 0 = all
    max_new_tokens: int = 200     # greedy answer length in the evaluation (TOFU: 200)
    seed: int = 0                 # the seed of the built models (tokenizer, original, retain, classifier)
    methods: str = "dareu," + ",".join(BASELINES)  # which methods to run (comma-separated); also dareu_oracle (bench/oracle.py)
    knobs: str = ""               # per-method settings "method.field=value,...": dareu (its oracle too): UnlearnConfig, PPOConfig, RewardConfig fields; a baseline: FinetuneConfig's
    split: str = "test"           # the forget authors: "test" (the last k, reported) or "validation" (the k before them, where settings are chosen)
    work: str = os.path.join(ROOT, "bench", "work")  # cache of the built models (ignored by git)
    device: str = "cpu"           # where every model trains and runs
    dtype: str = "float32"        # float32, or bfloat16: frozen models held in it, trained ones float32 under autocast
    eval_batch_size: int = 16     # questions per generate() call in the evaluation
    out: str = ""                 # results path without extension (default: bench/results/tofu_mini[_smollm2][_quick]…)


QUICK = dict(authors=20, layers=2, sft_epochs=40.0, max_questions=40, max_new_tokens=64)
# --smollm2: SmolLM2-135M-Instruct fine-tuned on 4 authors, forgetting 2, for 2 CPU cores: forwards in bf16
# (training steps 2.2x and generation 2x faster than float32 on an AVX-512-bf16 CPU)
SMOLLM2 = dict(authors=4, forget_fraction=0.5, sft_epochs=4.0, sft_lr=2e-4, batch_size=8, classifier_epochs=6.0,
               classifier_lr=2e-4, classifier_heldout=0.25, prompts=16, iterations=8, lr=1e-4, max_questions=20,
               max_new_tokens=64, dtype="bfloat16")
SMOLLM2_QUICK = dict(SMOLLM2, prompts=8, iterations=4, max_questions=8, max_new_tokens=48)
CHECK_EVAL = EvalConfig(max_new_tokens=64)   # how DareU's greedy checks, and the baselines' stop, decode


def select_owners(records, cfg):
    """The first N − k authors of TOFU's full (owner = row index // 20) and k forget authors: the last k
    (--split test) or the k before them (validation), and, as the membership attacks' non-members, the
    k authors after the first N − k (no model here saw them)."""
    owners = owners_of(records)
    k = max(1, round(cfg.authors * cfg.forget_fraction))
    forget = owners[-k:] if cfg.split == "test" else owners[-2 * k:-k]
    chosen, holdout = owners[:cfg.authors - k] + forget, owners[cfg.authors - k:cfg.authors]
    return ([r for r in records if r["owner"] in set(chosen)], forget,
            make_set("holdout", [r for r in records if r["owner"] in set(holdout)], None, "full.json (unseen authors)"))


def evaluation_sets(cfg, forget_recs, keep):
    """TOFU's evaluation rows for this bench: the forget authors' rows of forget10_perturbed (the
    last 20 authors, 20 rows each), retain_perturbed restricted to retained authors, the two
    multiple-choice sets."""
    rows = {r["question"]: r for r in read_json_records(os.path.join(cfg.tofu, "forget10_perturbed.json"))}
    if any(r["question"] not in rows for r in forget_recs):
        raise DareuError(f"{cfg.tofu}: forget10_perturbed.json (the last 20 authors) lacks forget questions: "
                         "use at most 10 forget authors (--authors, --forget-fraction)")
    forget_rows = [rows[r["question"]] for r in forget_recs]
    retain_rows = read_json_records(os.path.join(cfg.tofu, "retain_perturbed.json"))[:20 * keep]
    return [make_set("forget", forget_rows, cfg.max_questions, "forget10_perturbed.json (forget authors)"),
            make_set("retain", retain_rows, cfg.max_questions, "retain_perturbed.json"),
            make_set("real_authors", read_json_records(os.path.join(cfg.tofu, "real_authors_perturbed.json")),
                     cfg.max_questions, "real_authors_perturbed.json"),
            make_set("world_facts", read_json_records(os.path.join(cfg.tofu, "world_facts_perturbed.json")),
                     cfg.max_questions, "world_facts_perturbed.json")]


def with_knobs(config, knobs):
    """`config` with those of `knobs` ({field: text}) that are its fields set, each parsed by its type."""
    types = {k: flag_type(f) for k, f in config.__dataclass_fields__.items() if k in knobs}
    try:
        return replace(config, **{k: (parse_bool if t is bool else t)(knobs[k]) for k, t in types.items()})
    except (ValueError, argparse.ArgumentTypeError) as e:
        raise DareuError(f"--knobs {', '.join(f'{k}={knobs[k]}' for k in types)}: {e}") from None


def parse_knobs(text):
    """{method: {field: text}} from --knobs "method.field=value,..."; an unknown field is an error."""
    knobs, configs = {}, {"dareu": (UnlearnConfig, PPOConfig, RewardConfig), **{m: (FinetuneConfig,) for m in BASELINES}}
    for item in filter(None, text.split(",")):
        (method, _, name), value = item.partition("=")[0].partition("."), item.partition("=")[2]
        if not any(name in c.__dataclass_fields__ for c in configs.get(method, ())):
            raise DareuError(f"--knobs: {method}.{name} is not a setting of {method} (dareu: a field of UnlearnConfig, "
                             "PPOConfig or RewardConfig; a baseline: of FinetuneConfig)")
        knobs.setdefault(method, {})[name] = value
    return knobs


def run_methods(cfg, records, forget, folder, classifier, seed, lrs, targets, dtype):
    """DareU and the baselines from the original model, the same optimiser steps each, method m at
    learning rate lrs[m] with its --knobs; DareU stops at greedy forget a_F <= targets[method], its
    reference held in `dtype`, dareu_oracle scoring with the gold answers in place of the classifier.
    Returns {method: (model, wall seconds, steps)}, the tokenizer and DareU's per-iteration metrics."""
    original, tokenizer = load_model(os.path.join(folder, "original"), cfg.device)
    forget_recs, retain_recs = split_records(records, forget)
    knobs = parse_knobs(cfg.knobs)
    dareu = knobs.get("dareu", {})
    unlearn_cfg = with_knobs(UnlearnConfig(iterations=cfg.iterations, prompts_per_iter=cfg.prompts,
                                           samples_per_prompt=1, eval_every=5, sample_every=0, seed=seed), dareu)
    ppo_cfg = with_knobs(PPOConfig(epochs=cfg.ppo_epochs, retain_coef=cfg.retain_coef), dareu)
    reward_cfg = with_knobs(RewardConfig(form=cfg.reward_form, kl_coef=cfg.kl_coef), dareu)
    n_rollout = min(unlearn_cfg.prompts_per_iter, len(forget_recs)) * unlearn_cfg.samples_per_prompt
    steps = unlearn_cfg.iterations * ppo_cfg.epochs * -(-n_rollout // ppo_cfg.minibatch_size)
    methods, curve = {}, []
    scorers = {"dareu": classifier, "dareu_oracle": GoldAnswerOracle(forget_recs)}   # what each stop rule judges by
    for method in filter(None, cfg.methods.split(",")):
        start = time.time()
        model = copy.deepcopy(original)
        if cfg.lora_rank:
            torch.manual_seed(seed)
            add_lora(model, LoraConfig(rank=cfg.lora_rank))
        if method in ("dareu", "dareu_oracle"):
            with tempfile.TemporaryDirectory() as tmp:   # not in the world folder: runs in parallel share it
                metrics_path = os.path.join(tmp, "dareu_metrics.jsonl")
                done, _, _ = unlearn(Models(model, tokenizer, frozen_reference(model), scorers[method]),
                                     Task(forget_recs, retain_recs, forget, targets[method]),
                                     Args(unlearn_cfg, RolloutConfig(max_new_tokens=64), reward_cfg,
                                          replace(ppo_cfg, lr=lrs[method]),
                                          CHECK_EVAL), Run(metrics_path))
                with open(metrics_path, encoding="utf-8") as f:
                    curve = curve or [json.loads(line) for line in f]
            methods[method] = (model.eval(), round(time.time() - start, 1), steps * done // unlearn_cfg.iterations)
            continue
        if method not in BASELINES:
            raise DareuError(f"unknown method {method!r}; choose from dareu, dareu_oracle, {', '.join(BASELINES)}")
        taken = {"steps": steps}
        rule = cfg.baseline_stop   # "never", or the method ("dareu", "dareu_oracle") whose scorer and target stop it
        stop = (target_stop(model, tokenizer, scorers[rule], forget_recs, forget, targets[rule],
                            steps // unlearn_cfg.iterations * unlearn_cfg.eval_every, taken)
                if rule != "never" else None)
        finetune(model, tokenizer, forget_recs, with_knobs(FinetuneConfig(
            objective=method, steps=steps, lr=lrs[method], batch_size=cfg.batch_size, seed=seed), knobs.get(method, {})),
                 retain_recs, desc=method, stop=stop)
        methods[method] = (model.eval(), round(time.time() - start, 1), taken["steps"])
    return tokenizer, methods, curve


def target_stop(model, tokenizer, scorer, forget_recs, forget, target, every, taken):
    """finetune's `stop` for a baseline under DareU's rule (scorer: the classifier) or its oracle's (the
    gold answers): every `every` steps (DareU's eval_every iterations), True once the mean score of the
    greedy answers to every forget question is at most `target`, judged as DareU's check judges it
    (unlearn.greedy_attribution). taken["steps"]: the steps run."""
    questions = [r["question"] for r in forget_recs]

    def stop(step):
        taken["steps"] = step
        return step % every == 0 and greedy_attribution(model, tokenizer, scorer, questions, forget,
                                                        CHECK_EVAL) <= target
    return stop


def parse_lrs(cfg):
    """{method: learning rate it runs at}: its --knobs lr, else --lrs, else --lr (the oracle takes dareu's knobs)."""
    lrs = {m: cfg.lr for m in filter(None, cfg.methods.split(","))}   # --methods "": build and score the models only
    for item in filter(None, cfg.lrs.split(",")):
        method, _, value = item.partition("=")
        if method not in lrs:
            raise DareuError(f"--lrs: {method!r} is not one of the methods ({cfg.methods})")
        lrs[method] = float(value)
    knobs = parse_knobs(cfg.knobs)
    for method in lrs:
        knob = knobs.get("dareu" if method == "dareu_oracle" else method, {}).get("lr")
        if knob is not None and cfg.lr_sweep:
            raise DareuError(f"--knobs sets {method}'s lr ({knob}) and --lr-sweep sweeps it: give one of them")
        lrs[method] = float(knob) if knob is not None else lrs[method]
    return lrs


def result_row(s, retain_scores, steps, seconds):
    """The bench's numbers for one model: summarise() plus every set's metrics, steps and wall time."""
    r = summarise(s, retain_scores)
    r["retain_utility"] = hmean([s["retain"][k] for k in ("prob", "rouge", "truth_ratio")])
    for set_name in s:
        for k in ("prob", "rouge", "truth_ratio", "attribution"):
            r[f"{set_name}_{k}"] = s[set_name][k]
    mia = s["forget"]["mia"] or {}
    r.update(forget_memorisation=s["forget"]["exact_memorisation"], forget_extraction=s["forget"]["extraction_strength"],
             mia_auc_max=max(mia.values()) if mia else None)   # the strongest attack's AUC
    return {**r, "steps": steps, "seconds": seconds}


def main():
    p = argparse.ArgumentParser(description="TOFU-mini: DareU against GA, GradDiff, NPO, NPO+GD, SimNPO and SimNPO+GD "
                                            "on real TOFU text with from-scratch models (CPU).")
    p.add_argument("--quick", action="store_true", help="a smaller version: " + json.dumps(QUICK))
    p.add_argument("--smollm2", action="store_true", help="the real-model variant, on SmolLM2-135M-Instruct "
                                                          "(bench/smollm2.py): " + json.dumps(SMOLLM2)
                                                          + "; with --quick: " + json.dumps(SMOLLM2_QUICK))
    p.add_argument("--merge", help="reports (.json, comma-separated) of runs with different --seeds: write their "
                                   "pooled table to --out")
    add_config_args(p, BenchConfig)
    args = p.parse_args()
    cfg = config_from_args(BenchConfig, args, {"split": ("test", "validation"),
                                               "baseline_stop": ("never", "dareu", "dareu_oracle")})
    if args.merge:
        if not cfg.out:
            raise DareuError("--merge needs --out")
        return merge(args.merge.split(","), cfg.out)
    preset = ((SMOLLM2_QUICK if args.quick else SMOLLM2) if args.smollm2 else QUICK if args.quick else {})
    explicit = {a.split("=")[0][2:].replace("-", "_") for a in sys.argv[1:] if a.startswith("--")}
    cfg = replace(cfg, **{k: v for k, v in preset.items() if k not in explicit})   # flags given explicitly win
    if args.smollm2 and not cfg.base:
        from smollm2 import prepare
        cfg = replace(cfg, base=prepare())
    dtype = compute_dtype(cfg.dtype, cfg.device, train=True)
    with autocast(cfg.device, dtype):
        bench(cfg, dtype, args.quick, args.smollm2)


def bench(cfg, dtype, quick, smollm2):
    """Steps 1-5 for one configuration (main: its flags and preset): forwards in `dtype`, frozen models
    (the classifier, the models scored, DareU's reference) held in it, trained ones in float32."""
    if not os.path.isfile(os.path.join(cfg.tofu, "full.json")):
        raise DareuError(f"no TOFU folder at {cfg.tofu} (give --tofu)")
    seeds, lrs = [int(x) for x in cfg.seeds.split(",")], parse_lrs(cfg)
    sweep = [float(x) for x in filter(None, cfg.lr_sweep.split(","))]
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    # 1-2. data, original and retain models, classifier
    records, forget, holdout = select_owners(load_records(cfg.tofu), cfg)
    key = {k: v for k, v in sorted(asdict(cfg).items()) if k in (
        "authors", "forget_fraction", "layers", "d_model", "sft_epochs", "sft_lr", "batch_size", "classifier_epochs",
        "classifier_lr", "classifier_heldout", "seed", "dtype")}
    folder = os.path.join(cfg.work, "tofu_mini-" + (os.path.basename(cfg.base.rstrip("/")) + "-" if cfg.base else "")
                          + "-".join(str(v) for v in key.values()) + ("-validation" if cfg.split == "validation" else ""))
    print(f"{len(records)} QA pairs of {len(owners_of(records))} authors; forgetting {', '.join(forget)}")
    built = build_world(folder, records, forget,
                        FinetuneConfig(epochs=cfg.sft_epochs, lr=cfg.sft_lr, batch_size=cfg.batch_size, seed=cfg.seed),
                        ClassifierConfig(epochs=cfg.classifier_epochs, lr=cfg.classifier_lr, batch_size=cfg.batch_size,
                                         seed=cfg.seed, heldout=cfg.classifier_heldout),
                        cfg.layers, cfg.d_model, cfg.device, cfg.base or None)
    sets = evaluation_sets(cfg, split_records(records, forget)[0], keep=min(20, cfg.authors - len(forget)))
    eval_cfg = EvalConfig(max_new_tokens=cfg.max_new_tokens, max_questions=cfg.max_questions or None,
                          batch_size=cfg.eval_batch_size)
    classifier = load_classifier(os.path.join(folder, "classifier"), records, device=cfg.device, dtype=dtype)
    # 3. the original and retain models, which set DareU's target
    scores = {}
    for name in ("original", "retain"):
        model, tok = load_model(os.path.join(folder, name), cfg.device, dtype)
        scores[name] = score_model(model, tok, sets, eval_cfg, classifier, forget, holdout)
    target, level, _ = resolve_target(UnlearnConfig(), {"retain": {"forget_attribution":
                                                                    scores["retain"]["forget"]["attribution"]}}, {})
    print(f"DareU's target: greedy forget a_F <= {target:.3f} (the retain model's {level:.3f})")
    targets = {"dareu": target, "dareu_oracle": scores["retain"]["forget"]["rouge"]}   # the oracle: the retain level
    fixed = {n: result_row(scores[n], scores["retain"], None, built[f"{n}_seconds"]) for n in scores}
    # 4. the methods, per seed (or per swept learning rate), scored against the retain model
    runs, probe_answers, curve = [], [], []   # the fact probe: every method's forget answers (first run)
    for lr_or_seed in (sweep or seeds):
        seed, run_lrs = (seeds[0], {m: lr_or_seed for m in lrs}) if sweep else (lr_or_seed, lrs)
        tokenizer, methods, seed_curve = run_methods(cfg, records, forget, folder, classifier, seed, run_lrs, targets,
                                                     dtype)
        curve = curve or seed_curve
        results = dict(fixed)
        for name, (model, wall, steps) in methods.items():
            s = score_model(model.to(dtype), tokenizer, sets, eval_cfg, classifier, forget, holdout)
            results[name] = result_row(s, scores["retain"], steps, wall)
            if len(runs) == 0:
                probe_answers.append(s["forget"]["per_question"])
        runs.append(results)
    # 5. report
    check = scores["original"]["forget"]["rouge"]
    versions = {"python": platform.python_version(),
                **{p_: metadata.version(p_) for p_ in ("torch", "transformers", "numpy")}}
    clf_report = classifier_report(os.path.join(folder, "classifier"), classifier, forget, probe_answers)
    report = {"config": asdict(cfg), "quick": quick, "forget_authors": forget, "built": built, "lrs": lrs,
              "target": target, "original_forget_rouge": check, "versions": versions, "rouge": ROUGE_IMPL,
              "ks": KS_IMPL, "classifier_report": clf_report, "total_seconds": round(time.time() - t0, 1)}
    out = cfg.out or os.path.join(ROOT, "bench", "results", "tofu_mini" + ("_smollm2" if smollm2 else "")
                                  + ("_quick" if quick else "") + (f"_lora{cfg.lora_rank}" if cfg.lora_rank else "")
                                  + ("_lr_sweep" if sweep else ""))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    model_text = (f"{os.path.basename(cfg.base.rstrip('/'))} fine-tuned" if cfg.base else
                  f"from-scratch {cfg.layers}-layer d={cfg.d_model} Llama")
    header = (f"# TOFU-mini{' SmolLM2' if smollm2 else ''}{' (quick)' if quick else ''}"
              f"{': learning-rate sweep' if sweep else ''}\n\n"
              f"{len(owners_of(records))} TOFU authors, forgetting {len(forget)} ({cfg.split} split); {model_text}"
              f"{f', LoRA rank {cfg.lora_rank} for every method' if cfg.lora_rank else ''}; "
              f"models built with seed {cfg.seed} on {cfg.device}, forwards in {cfg.dtype}; original forget ROUGE-L "
              f"{check:.3f}; DareU's target a_F {target:.3f}; {report['total_seconds']:.0f} s in all.\n"
              f"Classifier: {classifier_report_line(clf_report)} (fact probe: the methods' answers, first run).\n"
              f"Settings beyond the defaults (--knobs): {cfg.knobs or 'none'}; DareU's oracle stops at the retain "
              f"model's forget ROUGE-L {targets['dareu_oracle']:.3f}; the baselines "
              + (f"stop by {cfg.baseline_stop}'s rule" if cfg.baseline_stop != "never" else "run every step") + ".\n"
              f"Versions: {json.dumps(versions)}. ROUGE: {ROUGE_IMPL}. KS: {KS_IMPL}.\n\n")
    if sweep:
        report.update(sweep=sweep, seed=seeds[0], runs=runs)
        table = sweep_table(report)
    else:
        report.update(seeds=seeds, runs=runs)
        table = seeds_table(report)
    write_report(out, header, table, report)
    if not sweep:
        try:
            plot(runs[0], curve, out + ".png")
            print(f"plot: {out}.png")
        except ImportError:
            print("matplotlib not installed: no plot (the table above has the numbers)")
    print(f"wrote {out}.md and {out}.json in {report['total_seconds']:.0f} s")


if __name__ == "__main__":
    run_cli(main)
