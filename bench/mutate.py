"""Mutation check: plant realistic one-line bugs, one at a time, and count how many the tests catch.

Each mutation below is (stage file, exact original text, replacement, what the bug is). For each:
  1. the original text must occur exactly once in the file, else the mutation is "stale" (the code
     has moved on): it is listed, not counted, and the run goes on;
  2. the mutated file is written into a temporary copy of the repository (the tracked and untracked,
     non-ignored files; ../shared is linked beside it), so the working tree is never touched;
  3. the tests that cover the file (TESTS[file]) and the cross-stage loop tests (CROSS) run with -x;
     a failing or erroring run (or one past --timeout) "kills" the mutant, a passing one (or an empty
     selection) lets it survive;
  4. the file is restored (try/finally, Ctrl-C included) before the next mutation.
Score = killed / (killed + survived). Prints a table and writes JSON (bench/results/mutation.json).

Which tests run: each stage file maps to the test files that exercise it, plus tests/test_unlearn.py
and tests/test_run.py (the loop on tiny models and the run on the embedded world, which cross every
stage), with -x: a full-suite run per mutant would take hours on 2 cores, and the mapped files hold
every test that imports the stage. Three tests of tests/test_run.py are left out (DESELECT): the
default run and the bad-input runs smoke-test what the mapped tests check in detail, and the `--help`
check starts 9 interpreters for argparse, which no mutation touches. Before the mutants,
the same selection runs once unmutated and must pass.

    python bench/mutate.py                                  # 33 min measured on 2 busy CPU cores
    python bench/mutate.py --tests-from d148bea --out bench/results/mutation_before.json
                                                            # the same mutants against an older suite
    python bench/mutate.py --list                           # check which mutations still apply
    python bench/mutate.py --only ppo.py,reward.py,27       # some stages' (or numbers') mutations only
    python bench/mutate.py --set blind --out bench/results/mutation_blind.json
                                                            # the second list, written blind (mutations_blind.py)
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import mutations_blind as blind  # noqa: E402

# (file, original text, replacement, the bug); every original must occur exactly once in its file
MUTATIONS = [
    # ppo.py: the clipped losses, their statistics, GAE, whitening, retain distillation
    ("ppo.py", "torch.max(-advantages * ratio, -advantages * ratio.clamp(",
     "torch.max(advantages * ratio, advantages * ratio.clamp(", "policy loss with the wrong sign (descends A)"),
    ("ppo.py", "pg_loss = masked_mean(torch.max(", "pg_loss = masked_mean(torch.min(",
     "policy loss: min instead of max (optimistic clip)"),
    ("ppo.py", "ratio.clamp(1 - cfg.clip, 1 + cfg.clip)", "ratio.clamp(1 - cfg.clip, 1 + 2 * cfg.clip)",
     "policy clip range asymmetric (1 + 2ε above)"),
    ("ppo.py", "log_ratio = (logprobs - old_logprobs) * mask", "log_ratio = (old_logprobs - logprobs) * mask",
     "ratio inverted: π_old / π_θ"),
    ("ppo.py", "log_ratio = (logprobs - old_logprobs) * mask", "log_ratio = (logprobs - logprobs.detach()) * mask",
     "ratio against the current logprobs instead of the rollout's"),
    ("ppo.py", "vf_loss = 0.5 * masked_mean(torch.max(", "vf_loss = 0.5 * masked_mean(torch.min(",
     "value loss: min instead of max of clipped / unclipped"),
    ("ppo.py", "v_clipped = old_values + (values - old_values)", "v_clipped = values + (values - old_values)",
     "value clip centred on the new values"),
    ("ppo.py", "(values - old_values).clamp(-cfg.vf_clip, cfg.vf_clip)", "(values - old_values).clamp(-cfg.clip, cfg.clip)",
     "value clip uses the policy's ε instead of ε_v"),
    ("ppo.py", "torch.max((values - returns) ** 2,", "torch.max((old_values - returns) ** 2,",
     "unclipped value loss on the rollout's values"),
    ("ppo.py", "masked_mean((ratio - 1) - log_ratio, mask)", "masked_mean((1 / ratio - 1) + log_ratio, mask)",
     "approx-KL in the other direction (k3 of KL(π_θ ‖ π_old))"),
    ("ppo.py", "((ratio - 1).abs() > cfg.clip)", "((ratio - 1) > cfg.clip)", "clipfrac counts only ρ > 1 + ε"),
    ("ppo.py", "return (x * mask).sum() / mask.sum().clamp(min=1)", "return (x * mask).mean()",
     "masked mean divides by padding too"),
    ("ppo.py", "next_advantage = (delta + gamma * lam * next_advantage)", "next_advantage = (delta + gamma * next_advantage)",
     "GAE without λ"),
    ("ppo.py", "return advantages, (advantages + values) * mask", "return advantages, advantages * mask",
     "returns without the values"),
    ("ppo.py", "return (ref_logp.exp() * (ref_logp - logp)).sum(-1)", "return (logp.exp() * (logp - ref_logp)).sum(-1)",
     "retain distillation KL(π_θ ‖ π_ref) instead of KL(π_ref ‖ π_θ)"),
    ("ppo.py", "where = answer_mask[:, -keep + 1:].bool()", "where = answer_mask[:, -keep:-1].bool()",
     "retain distillation mask off by one"),
    ("ppo.py", "loss = loss + cfg.retain_coef * retain_kl", "loss = loss - cfg.retain_coef * retain_kl",
     "retain distillation pushes away from the reference"),
    ("ppo.py", "retain_distillation(policy.lm, ref_lm,", "retain_distillation(ref_lm, policy.lm,",
     "retain distillation with policy and reference swapped (no gradient)"),
    ("ppo.py", "loss = pg_loss + cfg.vf_coef * vf_loss", "loss = pg_loss",
     "value loss left out of the loss"),
    # reward.py: score, missing-EOS penalty, per-token KL, adaptive β
    ("reward.py", "kl = (logprobs - ref_logprobs) * mask", "kl = (ref_logprobs - logprobs) * mask",
     "per-token KL in the other direction"),
    ("reward.py", "rewards = -kl_coef * kl", "rewards = kl_coef * kl", "KL penalty rewarded"),
    ("reward.py", "last = (mask.sum(-1).long() - 1).clamp(min=0)", "last = (mask.sum(-1).long() - 2).clamp(min=0)",
     "score placed one token before the last"),
    ("reward.py", "torch.where(roll[\"has_eos\"].to(score.device), score,",
     "torch.where(~roll[\"has_eos\"].to(score.device), score,",
     "missing-EOS penalty on the responses that stopped"),
    ("reward.py", "torch.log1p(-a_forget + cfg.eps)", "torch.log1p(-a_forget)", "log form without ε"),
    ("reward.py", "min(0.2, mean_kl / self.target - 1)", "min(0.2, 1 - mean_kl / self.target)",
     "adaptive β moves away from the target"),
    # unlearn.py: the loop's wiring
    ("ppo.py", "return whiten(advantages, mask), returns", "return advantages, returns", "advantages not whitened"),
    ("unlearn.py", "kl_ctl.update(kl.sum(-1).mean().item(), len(prompts))", "pass", "adaptive-KL controller never updated"),
    ("unlearn.py", "logprobs=old[\"logprobs\"]", "logprobs=ref[\"logprobs\"]", "reference logprobs handed to the update"),
    ("unlearn.py", "old = forward_logprobs(policy, roll[\"input_ids\"], roll[\"attention_mask\"], R, rollout_cfg.temperature,",
     "old = forward_logprobs(policy, roll[\"input_ids\"], roll[\"attention_mask\"], R, 1.0,",
     "rollout logprobs without the temperature"),
    ("unlearn.py", "ref = forward_logprobs(ref_model,", "ref = forward_logprobs(model,",
     "KL penalty against the policy itself"),
    ("unlearn.py", "ref[\"logprobs\"], mask, kl_ctl.value)", "ref[\"logprobs\"], mask, reward_cfg.kl_coef)",
     "rewards use the initial β, not the controller's"),
    ("ppo.py", "gae(rewards, values, mask, cfg.gamma", "gae(rewards, torch.zeros_like(rewards), mask, cfg.gamma",
     "GAE without the value baseline"),
    ("unlearn.py", "torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad],",
     "torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],",
     "value head left out of the optimiser"),
    ("unlearn.py", "kl_ctl.update(kl.sum(-1).mean().item(),", "kl_ctl.update(kl.mean().item(),",
     "controller fed the per-token KL, not the per-sequence one"),
    ("unlearn.py", "retain_stream = Batches(retain,", "retain_stream = Batches(forget,",
     "distillation on the forget answers"),
    ("unlearn.py", "target > 0 and greedy_a <= target:", "target > 0 and greedy_a >= target:",
     "early stop on the wrong side"),
    ("unlearn.py", "start - now < STALL_PROGRESS * (start - target)", "start - now < STALL_PROGRESS * start",
     "stall measured against 0, not the target"),
    ("unlearn.py", "if original - level < cfg.min_signal:", "if original < cfg.min_signal:",
     "signal check ignores the retain level"),
    ("unlearn.py", "reached = final_a <= target if", "reached = final_a < 0 if", "target never reached"),
    ("unlearn.py", "(results[\"retain\"][\"forget_attribution\"], \"the retain model's forget answers\")",
     "(results[\"original\"][\"forget_attribution\"], \"the retain model's forget answers\")",
     "retain level read from the original"),
    # evaluate.py: the metrics and their inputs
    ("evaluate.py", "ks_pvalue(forget_r, retain_scores[\"forget\"][\"per_question\"][\"truth_ratio\"])",
     "ks_pvalue(scores[\"forget\"][\"per_question\"][\"prob\"], retain_scores[\"forget\"][\"per_question\"][\"prob\"])",
     "Forget Quality on Probability (both models)"),
    ("evaluate.py", "ratios = truth_ratio(nll_para, nll_pert)", "ratios = truth_ratio(nll_answer, nll_pert)",
     "truth ratio against the gold answer, not the paraphrase"),
    ("evaluate.py", "utility_sets = (\"retain\",) + OPTION_SETS", "utility_sets = (\"forget\",) + OPTION_SETS",
     "Model Utility on the forget set"),
    ("evaluate.py", "accuracy = {s: scores[s][\"rouge\"]", "accuracy = {s: scores[s][\"prob\"]",
     "Tug-of-War on Probability, not ROUGE-L"),
    ("evaluate.py", "test = [r for s in OPTION_SETS if s in scores for r in scores[s][\"per_question\"][\"rouge\"]]",
     "test = [scores[s][\"rouge\"] for s in OPTION_SETS if s in scores]",
     "Tug-of-War test accuracy as a mean of set means"),
    ("evaluate.py", "if name in OPTION_SETS else np.exp(-nll_answer)", "if name not in OPTION_SETS else np.exp(-nll_answer)",
     "normalised Probability on the wrong sets"),
    ("evaluate.py", "out.append((-logp.double() / n).cpu())", "out.append((-logp.double()).cpu())",
     "NLL summed, not length-normalised"),
    ("helpers/metrics.py", "return lcs[-1] / len(ref)", "return lcs[-1] / len(pred)", "ROUGE-L precision instead of recall"),
    ("helpers/metrics.py", "np.minimum(ratios, 1 / ratios) if forget", "np.maximum(0, 1 - ratios) if forget",
     "forget-set truth-ratio score as on the other sets"),
    # finetune.py: the baselines' loss helper and objectives
    ("helpers/models.py", "answer_mask[:, 1:].to(model.device)", "answer_mask[:, :-1].to(model.device)",
     "teacher-forced answer mask off by one"),
    ("finetune.py", "F.logsigmoid(-cfg.npo_beta * (logp - ref_logp))", "F.logsigmoid(-cfg.npo_beta * logp)",
     "NPO without its reference term"),
    ("finetune.py", "loss = loss + nll(model, tokenizer, retain_batch)", "loss = loss - nll(model, tokenizer, retain_batch)",
     "retain term ascended"),
    # data.py: owners, forget splits, answer tokens
    ("helpers/records.py", "return f\"tofu_{index // 20:03d}\"", "return f\"tofu_{index // 10:03d}\"", "TOFU owner = row // 10"),
    ("helpers/records.py", "forget = owners[len(owners) - n:]", "forget = owners[:n]", "forget split = the first owners"),
    ("helpers/prompts.py", "answer_mask[i, ids.shape[1] - n:] = 1", "answer_mask[i, ids.shape[1] - n - 1:] = 1",
     "answer mask includes the last prompt token"),
    # rollout.py: logprob alignment, temperature, EOS, value positions
    ("helpers/models.py", "    z = logits.float() / temperature\n    return z.gather(", "    z = logits.float()\n    return z.gather(",
     "logprobs without the temperature"),
    ("helpers/models.py", "return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)",
     "return attention_mask.long().cumsum(-1).clamp(min=0)", "position ids start at 1"),
    ("rollout.py", "eos_before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()",
     "eos_before = torch.cumsum(is_eos.long(), dim=1)", "first EOS left out of the response mask"),
    ("helpers/models.py", "values = out[\"values\"][:, :-1] if", "values = out[\"values\"][:, 1:] if",
     "values read one position late (after the action)"),
    # attribution.py: the classifier
    ("attribution.py", "[:, index.to(self.model.device)].sum(-1)", "[:, index.to(self.model.device)].mean(-1)",
     "a_F as the mean, not the sum, over forget owners"),
    # equivalent on the tests' Llama models (RoPE sees only relative positions, so a constant shift per
    # row changes nothing): it survives; an absolute-position model (GPT-2) would tell
    ("attribution.py", "position_ids=position_ids_from_mask(mask),\n                             logits_to_keep=1)",
     "logits_to_keep=1)", "classifier forward without position ids (left padding shifts them)"),
    ("attribution.py", "positions = mask.sum(-1).repeat_interleave(C)[:, None]",
     "positions = mask.shape[1] + 0 * mask.sum(-1).repeat_interleave(C)[:, None]",
     "zero-shot: owner names continue at the padded width, not after the real prompt tokens"),
    ("attribution.py", "logp = logp + (rest * tiled_mask[:, 1:]).sum(-1).view(B, C)",
     "logp = logp + rest.sum(-1).view(B, C)", "zero-shot: the padding after short names is scored too"),
    # the real-checkpoint path: templates, stop ids, sampling config, precision
    ("helpers/prompts.py", "return (full if full[-1] == eos else full + [eos]), len(prompt)", "return full, len(prompt)",
     "open-unlearning formats: EOS not appended to the answer"),
    ("rollout.py", "return sorted({tokenizer.eos_token_id, *declared} - {None, tokenizer.pad_token_id})",
     "return [tokenizer.eos_token_id]", "only the tokenizer's EOS stops a response"),
    ("rollout.py", "checkpoint_cfg, model.generation_config = model.generation_config, GenerationConfig()",
     "checkpoint_cfg = model.generation_config", "the checkpoint's generation config reaches the sampler"),
    ("helpers/models.py", "dtype=torch.float32 if train else dtype)", "dtype=dtype)",
     "a model to train is loaded in the low-precision compute dtype"),
    ("attribution.py", "if w[0].isupper() and w not in NOT_NAMES", "if w[0].isupper()",
     "name masking masks question words"),
    # the seams and the command-line plumbing of the restructure
    ("helpers/cli.py", "if name not in may_change and saved.get(name) != value:", "if name in may_change and saved.get(name) != value:",
     "--resume accepts changed arguments"),
    ("helpers/cli.py", "getattr(args, f\"{prefix}_{name}\" if prefix else name)", "getattr(args, name)",
     "a prefixed config reads the unprefixed flags (the report would use the rollout's lengths)"),
    ("helpers/cli.py", "helps.get(name, \"\").replace(\"%\", \"%%\")", "helps.get(name, \"\")",
     "a % in a field's comment breaks --help"),
    ("ppo.py", "/ (count - 1).clamp(min=1)", "/ count", "group std without Bessel's correction"),
    ("ppo.py", "mean = torch.zeros_like(count).index_add_(0, index, returns) / count",
     "mean = torch.full_like(count, returns.mean().item())", "group advantages centred on the batch mean, not the group's"),
    ("ppo.py", "if returns is not None:", "if values is not None and returns is not None and False:",
     "no value loss even with GAE returns"),
    ("rollout.py", "prompt_index=torch.arange(len(questions)).repeat(samples_per_prompt)",
     "prompt_index=torch.arange(len(questions)).repeat_interleave(samples_per_prompt)",
     "prompt_index in the wrong order (samples grouped with other prompts)"),
    ("reward.py", "score = SCORES[cfg.form](a_forget, roll, cfg)", "score = SCORES[\"neg\"](a_forget, roll, cfg)",
     "the score form is ignored"),
    ("unlearn.py", "ADVANTAGES[ppo_cfg.advantage](", "ADVANTAGES[\"gae\"](", "--advantage is ignored"),
    ("helpers/lora.py", "    for layer in layers:\n        layer.enabled = False", "    for layer in layers:\n        layer.enabled = True",
     "adapters_disabled leaves the adapters on (the reference moves with the policy)"),
    ("helpers/lora.py", "weight.float() + module.scale * (module.lora_B @ module.lora_A)", "weight.float() + (module.lora_B @ module.lora_A)",
     "merge without the α/r scale"),
    ("helpers/models.py", "if getattr(m, \"gradient_checkpointing\", False) is True:\n            m.training = True",
     "if getattr(m, \"gradient_checkpointing\", False) is True:\n            pass",
     "gradient checkpointing silently off in the PPO loop"),
]

STAGE_TESTS = {   # stage file -> the test files that import it (and the tests of the stages it serves)
    "helpers/cli.py": ["tests/test_cli.py", "tests/test_checkpoints.py", "tests/test_bad_inputs.py"],
    "helpers/models.py": ["tests/test_models.py", "tests/test_rollout.py", "tests/test_finetune.py",
                          "tests/test_evaluate.py", "tests/test_ppo.py", "tests/test_real_model.py"],
    "helpers/prompts.py": ["tests/test_models.py", "tests/test_rollout.py"],
    "helpers/lora.py": ["tests/test_lora.py", "tests/test_models.py"],
    "finetune.py": ["tests/test_finetune.py", "tests/test_evaluate.py", "tests/test_checkpoints.py"],
    "attribution.py": ["tests/test_attribution.py"],
    "rollout.py": ["tests/test_rollout.py", "tests/test_ppo.py", "tests/test_real_model.py"],
    "reward.py": ["tests/test_reward.py", "tests/test_ppo.py"],
    "ppo.py": ["tests/test_ppo.py"],
    "unlearn.py": ["tests/test_checkpoints.py"],
    "evaluate.py": ["tests/test_evaluate.py"],
    "helpers/metrics.py": ["tests/test_metrics.py", "tests/test_evaluate.py"],
    "helpers/memory.py": ["tests/test_memory.py"],
    "helpers/run.py": ["tests/test_checkpoints.py"],
    "helpers/privacy.py": ["tests/test_privacy.py", "tests/test_evaluate.py"],
    "helpers/retain_logs.py": ["tests/test_retain_logs.py", "tests/test_evaluate.py"],
    "helpers/report.py": ["tests/test_report.py", "tests/test_evaluate.py"],
    "helpers/owner_text.py": ["tests/test_owner_text.py", "tests/test_attribution.py", "tests/test_evaluate.py"],
    "helpers/records.py": ["tests/test_data.py", "tests/test_checkpoints.py"],
    "world.py": ["tests/test_data.py"],
    "data.py": ["tests/test_data.py"],
}
CROSS = ["tests/test_unlearn.py", "tests/test_run.py"]   # the DareU loop and the run: every stage at once
DESELECT = ["tests/test_run.py::test_default_run_end_to_end",
            "tests/test_run.py::test_bad_inputs_exit_with_one_line_and_write_nothing",
            "tests/test_run.py::test_every_stage_has_help"]


def copy_repo(dest, tests_from=None):
    """Copy the working tree's tracked and untracked non-ignored files to dest/repo; link ../shared.
    With tests_from, tests/ comes from that git revision instead. Returns the copy's root."""
    repo = os.path.join(dest, "repo")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.split("\0")
    for f in filter(None, files):
        if os.path.isfile(os.path.join(ROOT, f)) and not (tests_from and f.startswith("tests/")):
            os.makedirs(os.path.dirname(os.path.join(repo, f)), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, f), os.path.join(repo, f))
    if tests_from:
        names = subprocess.run(["git", "ls-tree", "-r", "--name-only", tests_from, "tests/"], cwd=ROOT, check=True,
                               capture_output=True, text=True).stdout.split()
        for f in names:
            os.makedirs(os.path.dirname(os.path.join(repo, f)), exist_ok=True)
            with open(os.path.join(repo, f), "wb") as out:
                out.write(subprocess.run(["git", "show", f"{tests_from}:{f}"], cwd=ROOT, check=True,
                                         capture_output=True).stdout)
    shared = os.path.realpath(os.path.join(ROOT, "..", "shared"))
    if os.path.isdir(shared):
        os.symlink(shared, os.path.join(dest, "shared"))
    return repo


def run_tests(repo, files, timeout):
    """pytest -x on `files` (those present) in the copy. Returns (status, seconds, first failure)."""
    files = [f for f in files if os.path.isfile(os.path.join(repo, f))]
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *files,
           *[a for d in DESELECT for a in ("--deselect", d)]]
    start = time.time()
    try:
        proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "DAREU_CACHE": os.path.join(repo, ".cache")})
    except subprocess.TimeoutExpired:
        return "timeout", time.time() - start, f"no result after {timeout} s: {' '.join(cmd[3:])}"
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, re.M)
    # pytest exit 0: all passed; 5: no test selected (none covers the file): the mutant survives either way
    status = {0: "survived", 5: "survived", 1: "killed", 2: "killed"}.get(proc.returncode,
                                                                      f"error (pytest exit {proc.returncode})")
    detail = failed[0] if failed else (proc.stdout + proc.stderr).strip().splitlines()[-1:]
    return status, time.time() - start, detail if isinstance(detail, str) else " ".join(detail)


def main():
    p = argparse.ArgumentParser(description="Plant one-line bugs one at a time and report which the tests catch.")
    p.add_argument("--set", choices=("authors", "blind"), default="authors",
                   help="which list: the authors' (MUTATIONS below) or the one written blind (mutations_blind.py)")
    p.add_argument("--tests-from", help="take tests/ from this git revision (e.g. an older suite)")
    p.add_argument("--only", help="comma-separated stage files and/or mutation numbers to run")
    p.add_argument("--timeout", type=int, default=900, help="seconds per test run; past it the mutant counts as killed")
    p.add_argument("--list", action="store_true", help="only check which mutations apply, run nothing")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "mutation.json"), help="JSON output")
    args = p.parse_args()
    only = set(args.only.split(",")) if args.only else set(STAGE_TESTS)
    signal.signal(signal.SIGTERM, signal.default_int_handler)   # `kill` cleans up as Ctrl-C does
    mutations = MUTATIONS if args.set == "authors" else blind.MUTATIONS
    start = time.time()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip())
    results = []
    with tempfile.TemporaryDirectory(prefix="dareu-mutate-") as tmp:
        repo = copy_repo(tmp, args.tests_from)
        if not args.list:
            selection = sorted({f for files in STAGE_TESTS.values() for f in files} | set(CROSS))
            status, seconds, detail = run_tests(repo, selection, args.timeout)
            print(f"unmutated: {status} in {seconds:.0f} s", flush=True)
            if status != "survived":
                sys.exit(f"the unmutated tests do not pass ({detail}); fix them before counting mutants")
        for i, (file, original, replacement, what) in enumerate(mutations, 1):
            if file not in only and str(i) not in only:
                continue
            path = os.path.join(repo, file)
            with open(path, encoding="utf-8") as f:
                source = f.read()
            row = {"id": i, "file": file, "bug": what, "original": original, "replacement": replacement}
            count = source.count(original)
            if count != 1:
                row.update(status="stale", detail=f"original text found {count} times")
            elif args.list:
                row.update(status="applies", detail="")
            else:
                try:
                    with open(path, "w", encoding="utf-8") as f:
                        f.write(source.replace(original, replacement))
                    status, seconds, detail = run_tests(repo, STAGE_TESTS[file] + CROSS, args.timeout)
                finally:
                    with open(path, "w", encoding="utf-8") as f:
                        f.write(source)
                row.update(status=status, seconds=round(seconds, 1), detail=detail)
            results.append(row)
            print(f"{i:3d} {file:15s} {row['status']:9s} {row.get('seconds', 0):6.0f} s  {what}  [{row['detail']}]",
                  flush=True)
    if args.list:
        return
    killed = sum(r["status"] in ("killed", "timeout") for r in results)
    survived = [r for r in results if r["status"] == "survived"]
    stale = [r for r in results if r["status"] == "stale"]
    errors = [r for r in results if r["status"].startswith("error")]
    counted = killed + len(survived)
    score = killed / counted if counted else 0.0
    print("\n| # | file | bug | result | caught by |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['id']} | {r['file']} | {r['bug']} | {r['status']} | {r['detail'] if r['status'] != 'survived' else ''} |")
    print(f"\nmutation score: {killed}/{counted} killed = {score:.1%}; stale (not counted): {len(stale)}"
          + (f"; errors (not counted): {len(errors)}" if errors else ""))
    for r in survived:
        print(f"survived: #{r['id']} {r['file']}: {r['bug']}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"set": args.set, "commit": commit, "dirty": dirty, "tests_from": args.tests_from or "working tree",
                   "selection": {"stage_tests": STAGE_TESTS, "cross": CROSS, "deselected": DESELECT},
                   "killed": killed, "survived": len(survived), "stale": len(stale), "errors": len(errors),
                   "score": score, "seconds": round(time.time() - start, 1), "mutations": results}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
