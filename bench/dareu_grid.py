"""Why DareU under-forgets: its knobs (and the baselines') varied one at a time, on authors the reported
tables never score.

Each row is one TOFU-mini run (bench/tofu_mini.py --split validation: the k forget authors before the
reported ones, with their own original, retain model and classifier) of DareU with the quick defaults
and one change (--knobs), and one row of DareU scored by the gold answers instead of the classifier
(dareu_oracle, bench/oracle.py). The rows name what a reviewer suspects:

  credit assignment   λ = 1 (every token gets the terminal score undiscounted); no value clipping
  exploration         2, 4 or 8 samples per prompt in place of 1 (20, 10 or 5 prompts: the same 40
                      responses per iteration), with GAE, RLOO or Dr. GRPO's group-mean baseline
  the KL penalty      β = 0.01 in place of 0.05
  the stop rule       no early stop (all iterations)
  the classifier      the gold-answer oracle
  the learning rate   1e-4 and 1e-3 around the bench's 3e-4, for DareU and for NPO+GD and SimNPO+GD (their
                      rows at 3e-4 come with the defaults)
and the baselines' own knobs at their best rate: NPO's β and SimNPO's β', the retain weight α, SimNPO's γ;
then 3e-3 and steps around each baseline's pick, until each method has had 12 configurations (DareU's 12
rows: the defaults, 9 changes, 2 learning rates; the oracle is not a configuration of DareU).

Settings are chosen here and reported on the test split (bench/tofu_mini.py --knobs), never tuned on it.
Writes bench/results/dareu_grid_validation.{md,json}; each run's own report goes to --work.

    python bench/dareu_grid.py [--rows NAME,...] [--seeds 0] [--size quick]
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from helpers.cli import DareuError, run_cli  # noqa: E402
from helpers.report import format_table  # noqa: E402
from tofu_report import cell, merge  # noqa: E402

SAMPLES4 = "dareu.samples_per_prompt=4,dareu.prompts_per_iter=10"
BASE = "npo_gd.lr=1e-3,simnpo_gd.lr=1e-3"
BASE3 = "npo_gd.lr=3e-3,simnpo_gd.lr=3e-3"
ROWS = {   # name: (what it changes, methods, --knobs)
    "defaults": ("the quick defaults", "dareu,npo_gd,simnpo_gd", ""),
    "lam1": ("λ = 1", "dareu", "dareu.lam=1"),
    "no_vf_clip": ("no value clipping", "dareu", "dareu.vf_clip=1000"),
    "samples2": ("2 samples, GAE", "dareu", "dareu.samples_per_prompt=2,dareu.prompts_per_iter=20"),
    "samples4": ("4 samples, GAE", "dareu", SAMPLES4),
    "samples4_rloo": ("4 samples, RLOO", "dareu", SAMPLES4 + ",dareu.advantage=rloo"),
    "samples4_group_mean": ("4 samples, group mean", "dareu", SAMPLES4 + ",dareu.advantage=group_mean"),
    "samples8_rloo": ("8 samples, RLOO", "dareu",
                      "dareu.samples_per_prompt=8,dareu.prompts_per_iter=5,dareu.advantage=rloo"),
    "beta0.01": ("β = 0.01", "dareu", "dareu.kl_coef=0.01"),
    "no_stop": ("no early stop", "dareu", "dareu.stop_on=never"),
    "oracle": ("oracle attributor", "dareu_oracle", ""),
    "lr1e-4": ("lr 1e-4", "dareu,npo_gd,simnpo_gd", "dareu.lr=1e-4,npo_gd.lr=1e-4,simnpo_gd.lr=1e-4"),
    "lr1e-3": ("lr 1e-3", "dareu,npo_gd,simnpo_gd", "dareu.lr=1e-3,npo_gd.lr=1e-3,simnpo_gd.lr=1e-3"),
    # the baselines' own knobs, at the learning rate their rows above pick (1e-3 for both)
    "base_beta_low": ("lr 1e-3, β 0.05 (NPO) / β' 1 (SimNPO)", "npo_gd,simnpo_gd",
                      BASE + ",npo_gd.npo_beta=0.05,simnpo_gd.simnpo_beta=1"),
    "base_beta_high": ("lr 1e-3, β 0.5 (NPO) / β' 4.5 (SimNPO)", "npo_gd,simnpo_gd",
                       BASE + ",npo_gd.npo_beta=0.5,simnpo_gd.simnpo_beta=4.5"),
    "base_alpha0.5": ("lr 1e-3, retain weight α 0.5", "npo_gd,simnpo_gd",
                      BASE + ",npo_gd.retain_weight=0.5,simnpo_gd.retain_weight=0.5"),
    "base_alpha2": ("lr 1e-3, retain weight α 2", "npo_gd,simnpo_gd",
                    BASE + ",npo_gd.retain_weight=2,simnpo_gd.retain_weight=2"),
    "base_gamma1": ("lr 1e-3, γ 1", "simnpo_gd", "simnpo_gd.lr=1e-3,simnpo_gd.simnpo_gamma=1"),
    # more of the same, so that each method has DareU's 12 configurations: a step up in learning rate for
    # both, then around each one's pick of the rows above (NPO+GD: β 0.05 at 1e-3; SimNPO+GD: its papers' knobs)
    "base_lr3e-3": ("lr 3e-3", "npo_gd,simnpo_gd", BASE3),
    "base_lr3e-3_alpha2": ("lr 3e-3, retain weight α 2", "npo_gd,simnpo_gd",
                           BASE3 + ",npo_gd.retain_weight=2,simnpo_gd.retain_weight=2"),
    "npo_beta0.025": ("lr 1e-3, β 0.025", "npo_gd", "npo_gd.lr=1e-3,npo_gd.npo_beta=0.025"),
    "npo_beta0.05_alpha2": ("lr 1e-3, β 0.05, α 2", "npo_gd",
                            "npo_gd.lr=1e-3,npo_gd.npo_beta=0.05,npo_gd.retain_weight=2"),
    "npo_beta0.05_lr3e-3": ("lr 3e-3, β 0.05", "npo_gd", "npo_gd.lr=3e-3,npo_gd.npo_beta=0.05"),
    "simnpo_beta3.5": ("lr 1e-3, β' 3.5", "simnpo_gd", "simnpo_gd.lr=1e-3,simnpo_gd.simnpo_beta=3.5"),
    "simnpo_gamma1_alpha2": ("lr 1e-3, γ 1, α 2", "simnpo_gd",
                             "simnpo_gd.lr=1e-3,simnpo_gd.simnpo_gamma=1,simnpo_gd.retain_weight=2"),
}
METRICS = ("tug_of_war", "forget_quality", "forget_rouge", "forget_prob", "forget_truth_ratio", "forget_attribution",
           "retain_utility", "privleak", "steps", "seconds")


def run_row(name, seeds, size, work):
    """The row's tofu_mini report over `seeds`: one run per seed (each run now unless --work already has
    it: a grid grows seed by seed), pooled as mean ± std by tofu_report.merge."""
    _, methods, knobs = ROWS[name]
    paths = []
    for seed in seeds.split(","):
        out = os.path.join(work, size, f"{name}-seed{seed}")
        if not os.path.isfile(out + ".json"):
            command = [sys.executable, os.path.join(ROOT, "bench", "tofu_mini.py"), "--split", "validation",
                       "--methods", methods, "--knobs", knobs, "--seeds", seed, "--out", out] + (
                       ["--quick"] if size == "quick" else [])
            print(" ".join(command), flush=True)
            if subprocess.run(command).returncode:
                raise DareuError(f"row {name!r}: bench/tofu_mini.py failed (its output is above)")
        paths.append(out + ".json")
    pooled = os.path.join(work, size, name)
    merge(paths, pooled)
    with open(pooled + ".json", encoding="utf-8") as f:
        return json.load(f)


def main():
    p = argparse.ArgumentParser(description="DareU's knobs one at a time on TOFU-mini's validation split.")
    p.add_argument("--rows", default=",".join(ROWS), help="rows to run (comma-separated): " + ", ".join(ROWS))
    p.add_argument("--seeds", default="0", help="seeds of every row (comma-separated)")
    p.add_argument("--size", default="quick", choices=("quick", "full"), help="TOFU-mini's size")
    p.add_argument("--work", default=os.path.join(ROOT, "bench", "work", "dareu_grid"), help="each row's report")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "dareu_grid_validation"))
    args = p.parse_args()
    names = args.rows.split(",")
    if any(n not in ROWS for n in names):
        raise DareuError(f"--rows: unknown row in {args.rows!r}; the rows are: {', '.join(ROWS)}")
    os.makedirs(args.work, exist_ok=True)
    reports = {n: run_row(n, args.seeds, args.size, args.work) for n in names}
    first = reports[names[0]]
    table = {name: first["results"][name] for name in ("original", "retain")}
    for name, report in reports.items():
        table.update({f"{m}: {ROWS[name][0]}": report["results"][m] for m in ROWS[name][1].split(",")})
    cells = {metric: {row: cell(r[metric]) for row, r in table.items()} for metric in METRICS}
    text = (f"# DareU's knobs one at a time: TOFU-mini ({args.size}), validation split\n\n"
            f"Forget authors {', '.join(first['forget_authors'])} (not those of the reported tables); seeds "
            f"{args.seeds}; DareU's target a_F {first['target']:.3f}; every other setting as bench/tofu_mini.py "
            f"--{args.size} (reports: {os.path.relpath(args.work, ROOT)}). Command: python bench/dareu_grid.py "
            f"--seeds {args.seeds} "
            f"--size {args.size}.\n\n" + format_table(cells, list(table)) + "\n")
    with open(args.out + ".md", "w", encoding="utf-8") as f:
        f.write(text)
    with open(args.out + ".json", "w", encoding="utf-8") as f:
        json.dump({"rows": {n: ROWS[n] for n in names}, "seeds": args.seeds, "size": args.size, "results": table,
                   "reports": {n: r["header"] for n, r in reports.items()}}, f, indent=2)
    print(text)


if __name__ == "__main__":
    run_cli(main)
