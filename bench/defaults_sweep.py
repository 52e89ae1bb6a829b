"""The sweep behind unlearn.py's defaults: does a first run, with every default but the knobs swept, forget?

A folder built by the stages a new user runs (data.py, finetune.py for the original and the retain
model, attribution.py for the classifier), holding original/, retain/, a classifier and the records; then one `python unlearn.py` per setting, each a fresh
process with only the swept flags changed (plus --common, the same for every setting). Per setting:
iterations run, whether the greedy forget a_F reached the target (the retain level), the stall
warning's iteration, forget a_F / ROUGE-L, retain ROUGE-L against the original's, and wall time.
Writes bench/results/defaults_sweep_NAME.md and .json.

    python bench/defaults_sweep.py --folder bench/work/first_run --data tofu20.jsonl --forget tofu_068,tofu_069 \\
        --name scratch20 --setting lr=1e-5 --setting lr=1e-4 --setting lr=1e-4,kl_coef=0.1
"""
import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from helpers.cli import DareuError, run_cli, write_json  # noqa: E402


def flags(setting):
    """"lr=1e-4,kl_coef=0.1" -> ["--lr", "1e-4", "--kl-coef", "0.1"] ("" -> [], every default)."""
    pairs = [kv.split("=", 1) for kv in setting.split(",") if kv]
    if any(len(kv) != 2 for kv in pairs):
        raise DareuError(f"--setting {setting!r}: give name=value pairs separated by commas")
    return [x for k, v in pairs for x in ("--" + k.strip().replace("_", "-"), v.strip())]


def run_setting(args, setting):
    """One unlearn.py run; returns its row of the table."""
    out = os.path.join(args.folder, "sweep", args.name, setting.replace(",", "_").replace("=", "") or "defaults")
    model, data, classifier, retain = (os.path.join(args.folder, name)
                                       for name in ("original", args.data, args.classifier, "retain"))
    command = [sys.executable, os.path.join(ROOT, "unlearn.py"), "--model", model, "--data", data, "--forget",
               args.forget, "--classifier", classifier, "--retain-model", retain, "--out", out, "--sample-every", "0",
               *shlex.split(args.common), *flags(setting)]
    start = time.time()
    proc = subprocess.run(command, capture_output=True, text=True)
    row = {"setting": setting or "defaults", "seconds": round(time.time() - start, 1), "returncode": proc.returncode}
    if proc.returncode:
        return {**row, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    with open(os.path.join(out, "summary.json"), encoding="utf-8") as f:
        s = json.load(f)
    with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as f:
        greedy = [(m["iteration"], round(m["greedy_attribution"], 4)) for m in map(json.loads, f)
                  if "greedy_attribution" in m]
    return {**row, "iterations": s["iterations"], "reached": s["target"]["reached"],
            "stalled_at": s["target"]["stalled_at"], "target": round(s["target"]["attribution"], 4),
            **{f"{m}_{c}": round(s[m][c], 4) for m in ("forget_attribution", "forget_rouge", "retain_rouge")
               for c in ("original", "retain", "unlearned")},
            "retain_rouge_vs_original": round(s["retain_rouge"]["unlearned"] / s["retain_rouge"]["original"], 3),
            "greedy_curve": greedy, "config": {k: s["config"][k] for k in ("lr", "kl_coef", "epochs", "iterations")}}


COLUMNS = ("setting", "iterations", "reached", "stalled_at", "forget_attribution_unlearned", "forget_rouge_unlearned",
           "retain_rouge_vs_original", "seconds")


def table(rows):
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, r.get("error", "")) if c != "setting" else r[c])
                                       for c in COLUMNS) + " |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--folder", required=True, help="holds original/, retain/, classifier/ and the data file")
    p.add_argument("--data", required=True, help="the records file, relative to --folder")
    p.add_argument("--forget", required=True, help="the owners to forget")
    p.add_argument("--classifier", default="classifier", help="the classifier folder, relative to --folder")
    p.add_argument("--name", required=True, help="names the results: bench/results/defaults_sweep_NAME.md/.json")
    p.add_argument("--setting", action="append", default=[], help="flag=value,... (repeatable; '' = all defaults)")
    p.add_argument("--common", default="", help="flags given to every run (e.g. '--eval-max-questions 40')")
    args = p.parse_args()
    rows = []
    for setting in args.setting or [""]:
        rows.append(run_setting(args, setting))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))
    base = os.path.join(ROOT, "bench", "results", f"defaults_sweep_{args.name}")
    with open(os.path.join(args.folder, args.classifier, "classifier.json"), encoding="utf-8") as f:
        accuracy = json.load(f).get("heldout_accuracy")
    header = (f"# unlearn.py defaults sweep: {args.name}\n\n{args.folder} ({args.data}), forgetting {args.forget}; "
              f"classifier held-out accuracy {accuracy}; common flags `{args.common}`; machine "
              f"{platform.machine()} {os.cpu_count()} CPUs.\n\n")
    with open(base + ".md", "w", encoding="utf-8") as f:
        f.write(header + table(rows) + "\n")
    write_json(base + ".json", {"folder": args.folder, "data": args.data, "forget": args.forget,
                                "common": args.common, "classifier_heldout_accuracy": accuracy, "rows": rows})


if __name__ == "__main__":
    run_cli(main)
