"""The bench's own pieces that decide what a table says: the oracle attributor scores a response as TOFU's
ROUGE-L recall against its question's gold answer (worked by hand), --knobs reaches the fields it names
with their types and refuses the ones it does not know, and --split validation forgets other authors
than the reported (test) split, never the membership attacks' non-members; the validation grid gives every
method the same number of configurations, each row's knobs for methods it runs; TRL's reward in the speed bench is
our score (−a_F of the masked answer, the floor without a stop token or with too few words)."""
import os
import sys
from dataclasses import replace

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

from dareu_grid import ROWS  # noqa: E402
from finetune import FinetuneConfig  # noqa: E402
from helpers.cli import DareuError  # noqa: E402
from oracle import GoldAnswerOracle  # noqa: E402
from ppo import PPOConfig  # noqa: E402
import tofu_mini  # noqa: E402
from tofu_mini import (BenchConfig, parse_knobs, parse_lrs, select_owners, target_stop,  # noqa: E402
                       with_knobs)
from reward import RewardConfig  # noqa: E402
from unlearn import UnlearnConfig  # noqa: E402
from vs_trl import trl_reward  # noqa: E402


def test_the_oracle_scores_the_gold_answers_words_still_said():
    oracle = GoldAnswerOracle([{"question": "Where does Ana live?", "answer": "Ana lives in a red house"},
                               {"question": "What is her job?", "answer": "She is a baker"}])
    scores = oracle.forget_attribution(
        ["Where does Ana live?", "Where does Ana live?", "What is her job?", "What is her job?"],
        ["In a red house, says Ana", "I cannot say", "She is a baker", "baker"], ["Ana"])
    # gold 1: ana lives in a red house (6 words); "in a red house" is its longest common subsequence: 4/6.
    # Nothing in common: 0. The whole gold answer: 1. One word of "she is a baker": 1/4.
    assert scores.tolist() == pytest.approx([4 / 6, 0.0, 1.0, 0.25])


def test_knobs_set_the_fields_they_name_with_their_types():
    knobs = parse_knobs("dareu.lam=1,dareu.samples_per_prompt=4,dareu.advantage=rloo,npo_gd.lr=2e-4")
    assert knobs == {"dareu": {"lam": "1", "samples_per_prompt": "4", "advantage": "rloo"}, "npo_gd": {"lr": "2e-4"}}
    ppo = with_knobs(PPOConfig(lam=0.95), knobs["dareu"])
    assert (ppo.lam, ppo.advantage, type(ppo.lam)) == (1.0, "rloo", float)
    assert with_knobs(UnlearnConfig(), knobs["dareu"]).samples_per_prompt == 4
    assert with_knobs(PPOConfig(), {}) == PPOConfig()


def test_the_reported_learning_rates_are_those_the_methods_run_at():
    cfg = BenchConfig(methods="dareu,dareu_oracle,npo_gd,ga", lr=3e-4, lrs="ga=1e-4,npo_gd=2e-4",
                      knobs="npo_gd.lr=1e-3,dareu.lr=5e-5")
    assert parse_lrs(cfg) == {"dareu": 5e-5, "dareu_oracle": 5e-5, "npo_gd": 1e-3, "ga": 1e-4}
    with pytest.raises(DareuError, match="lr-sweep"):
        parse_lrs(replace(cfg, lr_sweep="1e-4,3e-4"))


def test_the_baselines_stop_is_dareus_check_on_its_cadence(monkeypatch):
    scores, judged = iter([0.5, 0.31, 0.3, 0.1]), []

    def greedy_attribution(model, tokenizer, classifier, questions, forget, eval_cfg):
        judged.append((questions, forget, eval_cfg.max_new_tokens))
        return next(scores)

    monkeypatch.setattr(tofu_mini, "greedy_attribution", greedy_attribution)
    taken = {"steps": 40}
    stop = target_stop(None, None, None, [{"question": "q1"}, {"question": "q2"}], ["Ana"], 0.3, 4, taken)
    for step in range(1, 41):   # as finetune asks it
        if stop(step):
            break
    # checked at steps 4, 8, 12 (a_F 0.5, 0.31, 0.3): 0.3 <= 0.3 ends the run after step 12
    assert (taken["steps"], len(judged)) == (12, 3)
    assert judged[0] == (["q1", "q2"], ["Ana"], 64)   # every forget question, decoded as DareU's check


@pytest.mark.parametrize("text", ["dareu.lambda=1", "ga.lam=1", "nobody.lr=1", "dareu.lam=high"])
def test_knobs_refuse_what_they_do_not_know(text):
    with pytest.raises(DareuError):
        with_knobs(PPOConfig(), parse_knobs(text)["dareu"])


def test_the_validation_split_forgets_other_authors_than_the_test_split():
    records = [{"owner": f"author {i:02d}", "question": f"q{i} {j}", "answer": "a"} for i in range(30) for j in range(2)]
    (kept_test, test, holdout_test), (kept_val, val, holdout_val) = (
        select_owners(records, BenchConfig(authors=10, forget_fraction=0.2, split=s)) for s in ("test", "validation"))
    assert (test, val) == (["author 28", "author 29"], ["author 26", "author 27"])
    assert holdout_test["questions"] == holdout_val["questions"] == ["q8 0", "q8 1", "q9 0", "q9 1"]
    assert {r["owner"] for r in kept_val} == {f"author {i:02d}" for i in range(8)} | set(val)
    assert {r["owner"] for r in kept_test} == {f"author {i:02d}" for i in range(8)} | set(test)


def test_the_validation_grid_gives_every_method_the_same_number_of_configurations():
    counts = {}
    for name, (_, methods, knobs) in ROWS.items():
        parsed = parse_knobs(knobs)   # an unknown field is refused here, not an hour into the grid
        assert set(parsed) <= {m.replace("_oracle", "") for m in methods.split(",")}, name   # none set for nothing
        for method, fields in parsed.items():
            configs = (UnlearnConfig(), PPOConfig(), RewardConfig()) if method == "dareu" else (FinetuneConfig(),)
            assert sum(len(set(fields) & set(c.__dataclass_fields__)) for c in configs) == len(fields), name
            for config in configs:
                with_knobs(config, fields)
        for method in methods.split(","):
            counts[method] = counts.get(method, 0) + 1
    assert counts == {"dareu": 12, "npo_gd": 12, "simnpo_gd": 12, "dareu_oracle": 1}


def test_trls_reward_is_our_score_of_each_completion():
    class Attributor:   # a_F by hand, and what it was asked
        def forget_attribution(self, prompts, responses, forget_owners):
            self.asked = (list(prompts), list(responses), list(forget_owners))
            return torch.tensor([0.25, 0.5, 0.75, 0.1])
    attributor, stop = Attributor(), 7
    reward = trl_reward(attributor, ["Ana"], [stop], RewardConfig(missing_eos_penalty=-1.0, min_words=2))
    completions = ["Ana lives in a red house", "She bakes bread", "and so on and so", "Baker"]
    ids = [[4, 5, 6, stop], [4, 5, stop], [4, 5, 6, 4, 5], [4, stop]]   # TRL's: up to the first stop token, if any
    out = reward(prompts=["<chat>Where?"] * 4, completions=completions, completion_ids=ids,
                 question=["Where does Ana live?"] * 4, trainer_state=None)
    # ended and two words or more: −a_F; no stop token (cut at the length limit), or one word: the floor −1
    assert out == pytest.approx([-0.25, -0.5, -1.0, -1.0])
    # the classifier reads the question (for name masking), not TRL's templated prompt
    assert attributor.asked == (["Where does Ana live?"] * 4, completions, ["Ana"])
