"""Reports: markdown tables, what a report cannot say and why, and what an output folder says about itself:
a model card (README.md with Hugging Face front matter) and a picture of the run (curves.png), so that a
checkpoint shared on a hub carries what was forgotten, how, with what result, and how to reproduce it.

  model_card(...)     the card's text, written by unlearn.py and finetune.py into every output folder,
  plot_curves(...)    a_F (sampled and greedy, with the target), score, KL to the reference and retain
                      KL per iteration, from metrics.jsonl; needs matplotlib, else says so in one line.
"""
import json
import os
import shlex


def model_card(base, forget_owners, method, tags, settings, command, table=None, classifier_line=None, notes=()):
    """A README.md for an output folder. `base`: the model it started from (None: from scratch); `method`: one line; `tags`: the
    hub tags; `settings`: {name: value}; `command`: the argv that made it; `table`: a markdown before/after
    table (or None); `classifier_line`: the classifier report in words; `notes`: lines for the result."""
    front = ["---", *([f"base_model: {base}"] if base else []), "library_name: transformers", "tags:", *[f"- {t}" for t in tags],
             "# license: the base model's and the data's terms apply; add yours here", "---", ""]
    lines = [f"# {base or 'A model trained from scratch'}"
             + (f" with {len(forget_owners)} data owner(s) unlearned" if forget_owners else ", fine-tuned"),
             "", f"**Method.** {method}", ""]
    if forget_owners:
        lines += [f"**Forgotten owners** ({len(forget_owners)}): " + ", ".join(f"`{o}`" for o in forget_owners), ""]
    lines += ["**Settings.**", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in settings.items()]
    if table or notes:
        lines += ["", "## Result", ""] + ([table, ""] if table else []) + list(notes)
    if classifier_line:
        lines += ["", f"**The classifier behind a_F.** {classifier_line}"]
    lines += ["", "## How to reproduce", "", "```bash", shlex.join(command), "```",
              "", "Written by dareu, a minimal reference implementation of DareU (its METHOD.md states the method)."]
    return "\n".join(front + lines) + "\n"


def format_table(rows, columns):
    """A markdown table from {row label: {column: number, text or None}}; rows without any value are left out."""
    def text(v):
        return "n/a" if v is None else v if isinstance(v, str) else f"{v:.4g}"
    lines = ["| metric | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(text(values.get(c)) for c in columns)
              + " |" for label, values in rows.items() if any(values.get(c) is not None for c in columns)]
    return "\n".join(lines)


def column_names(paths):
    """Folder basenames; the paths as given where two basenames coincide."""
    base = [os.path.basename(os.path.normpath(p)) for p in paths]
    return [b if base.count(b) == 1 else os.path.normpath(p) for b, p in zip(base, paths)]


WHY_UNAVAILABLE = {
    "truth_ratio": "needs paraphrased and perturbed answers (TOFU folder with --forget forget01/05/10)",
    "forget_quality": "needs forget-set truth ratios and a retain reference (--retain-model, --retain-json or --retain-logs)",
    "model_utility": "needs the TOFU retain, real_authors and world_facts sets",
    "tug_of_war": "needs a retain reference (--retain-model, --retain-json or --retain-logs)",
    "privleak": "needs --holdout and a retain reference",
    "attribution": "needs --classifier",
}


def unavailable(models):
    """{metric: why} for the metrics no model has a value for."""
    first = next(iter(models.values()))
    has = {"truth_ratio": first["sets"]["forget"]["truth_ratio"] is not None,
           "attribution": first["sets"]["forget"]["attribution"] is not None,
           **{k: first[k] is not None for k in ("forget_quality", "model_utility", "tug_of_war", "privleak")}}
    return {k: why for k, why in WHY_UNAVAILABLE.items() if not has[k]}


def print_outcome(summary, out, classifier_line, knobs):
    """The end of an unlearn.py run, in words: the before/after table, the classifier, the target, the
    stall warning, where the time went, where the outputs are."""
    target, phases = summary["target"], summary["phase_seconds"]
    print(format_table({m: summary[m] for m in REPORT_ROWS}, list(summary[REPORT_ROWS[0]])))
    print(f"classifier report: {classifier_line} (summary.json: classifier_report)")
    print(f"target greedy forget a_F <= {target['attribution']:.3f}: "
          + ("reached" if target["reached"] else f"NOT reached ({target['final']:.3f}). {knobs}"))
    if target["stalled_at"]:
        print(f"warning: the greedy forget a_F had barely moved at iteration {target['stalled_at']} (the stall warning)")
    total = sum(phases.values()) or 1.0
    print("where the PPO time went: " + ", ".join(f"{k} {v:.0f} s ({v / total:.0%})" for k, v in phases.items()))
    print(f"saved the unlearned model, metrics.jsonl and summary.json to {out} ({summary['seconds']:.0f} s)")


def describe_run(folder, summary, command, classifier_line):
    """Write README.md (the model card) and curves.png into a finished unlearn.py output `folder`, from its
    `summary` (summary.json), the `command` that made it and the classifier report in words."""
    config, target = summary["config"], summary["target"]
    settings = {"method": "DareU: PPO against the classifier's attribution, KL to the original, retain distillation",
                "classifier": summary["classifier"], "retain model": summary["retain_model"], "data": summary["data"],
                "iterations": f"{summary['iterations']} of {config['iterations']}"
                              + (" (early stop: target reached)" if summary["early_stopped"] else ""),
                "learning rate": summary["lr"], "β (KL coefficient)": config["kl_coef"],
                "advantage": config["advantage"], "samples per question": config["samples_per_prompt"],
                "PPO epochs": config["epochs"], "LoRA": f"rank {config['lora_rank']}" if config["lora"] else "no",
                "precision": summary["dtype"],
                "prompt template": summary["template"] + (f", date {summary['template_date']}" if summary["template_date"] else "")}
    table = format_table({m: summary[m] for m in REPORT_ROWS}, list(summary[REPORT_ROWS[0]]))
    notes = [f"Target: greedy forget a_F ≤ {target['attribution']:.3f} (the retain level {target['retain_level']:.3f}, "
             f"from {target['level_from']}), judged on {len(target['questions'])} forget questions: "
             + ("reached" if target["reached"] else "not reached") + f" ({target['final']:.3f}).",
             "", "`a_F` is the classifier's attribution of the model's greedy answers to the forgotten owners; "
             "`facts` the share of the gold answer's owner-specific words an answer says; `prob` the gold "
             "answer's length-normalised probability; `memorisation` and `extraction` open-unlearning's exact "
             "memorisation and extraction strength; `mia_auc` the Min-K% membership attack's AUC of the forget "
             "answers against records no model saw, and `privleak` its gap to the retain model's (0: the same). "
             "See summary.json for every answer."]
    card = model_card(summary["model"], summary["forget_owners"], settings.pop("method"),
                      ["unlearning", "dareu", "ppo"], settings, command, table, classifier_line, notes)
    with open(f"{folder}/README.md", "w", encoding="utf-8") as f:
        f.write(card)
    plot_curves(f"{folder}/metrics.jsonl", f"{folder}/curves.png", target["attribution"])


REPORT_ROWS = ("forget_attribution", "retain_attribution", "forget_rouge", "retain_rouge", "forget_facts",
               "retain_facts", "forget_prob", "retain_prob", "forget_memorisation", "forget_extraction", "mia_auc",
               "privleak")
CURVES = (("attribution", "a_F: sampled (mean) and greedy"), ("score", "score s"), ("kl", "KL to the reference, per response"),
          ("retain_kl", "retain KL (distillation)"))


def curve_data(metrics_path):
    """{series: [(iteration, value), ...]} read from metrics.jsonl: the panels' data."""
    with open(metrics_path, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f]
    keys = [k for k, _ in CURVES] + ["greedy_attribution"]
    return {k: [(line["iteration"], line[k]) for line in lines if k in line] for k in keys}


def plot_curves(metrics_path, out_path, target=None):
    """Draw the run's curves into `out_path` (PNG). Returns the data plotted, or None (and one printed
    line) when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("curves.png not drawn: matplotlib is not installed (pip install matplotlib)")
        return None
    data = curve_data(metrics_path)
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.2))
    for ax, (key, title) in zip(axes, CURVES):
        if data[key]:
            ax.plot(*zip(*data[key]), label="sampled" if key == "attribution" else key)
        if key == "attribution":
            if data["greedy_attribution"]:
                ax.plot(*zip(*data["greedy_attribution"]), "o-", label="greedy")
            if target is not None:
                ax.axhline(target, color="gray", linestyle="--", label=f"target {target:.3f}")
            ax.legend(fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("iteration")
    fig.tight_layout()
    fig.savefig(out_path, dpi=90)
    plt.close(fig)
    return data
