"""The TOFU-mini bench's tables, plot and report files (bench/tofu_mini.py, bench/dareu_grid.py):
mean ± std over seeds, the learning-rate sweep's picks, the pooled report of runs made in parallel."""
import json

import numpy as np

from helpers.cli import DareuError
from helpers.report import format_table

ROWS = ("forget_quality", "model_utility", "retain_utility", "tug_of_war", "forget_attribution", "retain_attribution",
        "forget_rouge", "retain_rouge", "forget_prob", "retain_prob", "forget_truth_ratio", "retain_truth_ratio",
        "privleak", "mia_auc_max", "forget_memorisation", "forget_extraction", "steps", "seconds")


def mean_std(runs):
    """{name: {metric: [mean, std]}} over a list of {name: {metric: value}} (std: population, 0 for one run)."""
    return {name: {k: [float(np.mean([r[name][k] for r in runs])), float(np.std([r[name][k] for r in runs]))]
                   if runs[0][name][k] is not None else None for k in runs[0][name]} for name in runs[0]}


def cell(value):
    return None if value is None else f"{value[0]:.3g} ± {value[1]:.2g}"


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


def sweep_table(report):
    """Tug-of-War per method (rows) and swept learning rate (columns), and each method's pick: the
    rate with the highest (the first of equals); sets report["picked"] and report["lrs_flag"]."""
    sweep, runs = report["sweep"], report["runs"]
    methods = [m for m in runs[0] if m not in ("original", "retain")]
    picked = report["picked"] = {m: sweep[max(range(len(sweep)), key=lambda i: runs[i][m]["tug_of_war"])]
                                 for m in methods}
    report["lrs_flag"] = ",".join(f"{m}={lr:g}" for m, lr in picked.items())
    table = format_table({m: {**{f"lr {lr:g}": run[m]["tug_of_war"] for lr, run in zip(sweep, runs)},
                              "picked": f"{picked[m]:g}"} for m in methods}, [f"lr {lr:g}" for lr in sweep] + ["picked"])
    return (f"Tug-of-War per method (rows) and learning rate, seed {report['seed']}:\n\n{table}\n\n"
            f"Next: --lrs {report['lrs_flag']}")


def seeds_table(report):
    """The mean ± std table of a report's runs (one per seed); sets report["results"]."""
    results = report["results"] = mean_std(report["runs"])
    table = format_table({row: {n: cell(results[n][row]) for n in results} for row in ROWS}, list(results))
    return f"Mean ± std over seeds {report['seeds']}; learning rates {json.dumps(report['lrs'])}.\n\n" + table


def write_report(out, header, table, report):
    report["header"] = header
    with open(out + ".md", "w", encoding="utf-8") as f:
        f.write(header + table + "\n")
    with open(out + ".json", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    print(table)


def merge(paths, out):
    """One report from reports of the same bench run (e.g. run in parallel) that differ only in their
    --seeds (the runs pooled: mean ± std) or only in their --lr (a learning-rate sweep on one seed);
    the first one's header (built models, classifier report)."""
    reports = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            reports.append(json.load(f))
    first, varies = reports[0], "lr" if len({r["config"]["lr"] for r in reports}) > 1 else "seeds"
    same = {varies: "", "out": "", "lrs": ""}
    if any(r["config"] | same != first["config"] | same for r in reports):
        raise DareuError("--merge: the reports differ in more than their seeds, or more than their --lr")
    report = {**first, "runs": [x for r in reports for x in r["runs"]], "merged_from": paths,
              "total_seconds": [r["total_seconds"] for r in reports]}
    if varies == "lr":
        report.update(sweep=[r["config"]["lr"] for r in reports], seed=first["seeds"][0])
    else:
        report["seeds"] = [s for r in reports for s in r["seeds"]]
    write_report(out, first["header"] + f"Merged from {len(paths)} runs: {', '.join(paths)}.\n\n",
                 sweep_table(report) if varies == "lr" else seeds_table(report), report)
