"""helpers/cli.py: flags built from the config dataclasses (help = the field's one-line comment, defaults
shown, grouped by stage), configs checked when built and errors naming the flag as given, and the
CI rule of conftest.py (a skip is a failure)."""
import argparse
from types import SimpleNamespace

import pytest

import attribution
import conftest
import data
import evaluate
import finetune
import ppo
import reward
import rollout
import unlearn
import world
from helpers.cli import DareuError, config_from_args, field_help

STAGES = (data, world, finetune, attribution, rollout, reward, ppo, unlearn, evaluate)
CONFIGS = (finetune.FinetuneConfig, attribution.ClassifierConfig, rollout.RolloutConfig, reward.RewardConfig,
           ppo.PPOConfig, unlearn.UnlearnConfig, evaluate.EvalConfig)


class Parsed(Exception):
    """Raised instead of parsing: carries the parser a stage's main() built."""


def parser_of(stage, monkeypatch):
    def capture(self, args=None, namespace=None):
        raise Parsed(self)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(Parsed) as caught:
        stage.main()
    return caught.value.args[0]


def test_every_config_field_documents_itself():
    for config in CONFIGS:
        helps = field_help(config)
        assert set(helps) == set(config.__dataclass_fields__), config.__name__
        assert all(len(text) > 5 for text in helps.values()), config.__name__


@pytest.mark.parametrize("stage", STAGES, ids=lambda m: m.__name__)
def test_every_flag_has_help_and_shows_its_default(stage, monkeypatch):
    parser = parser_of(stage, monkeypatch)
    text = "".join(parser.format_help().split())   # without white space: long defaults wrap mid-word
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{stage.__name__}: {action.option_strings} has no help"
        if action.default is not None and action.default is not False:
            shown = "(default:" + "".join(str(action.default).split()) + ")"
            assert shown in text, (stage.__name__, action.option_strings)


def test_unlearn_flags_are_grouped_with_the_config_comments_and_the_embedded_world_defaults(monkeypatch):
    parser = parser_of(unlearn, monkeypatch)
    groups = {g.title: [a.dest for a in g._group_actions] for g in parser._action_groups}
    assert groups["PPO (ppo.py)"] == list(ppo.PPOConfig.__dataclass_fields__)
    assert groups["reward (reward.py)"] == list(reward.RewardConfig.__dataclass_fields__)
    assert groups["report (evaluate.py)"] == [f"eval_{f}" for f in evaluate.EvalConfig.__dataclass_fields__]
    kl_coef = next(a for a in parser._actions if a.dest == "kl_coef")
    assert kl_coef.help.startswith(field_help(reward.RewardConfig)["kl_coef"]) and kl_coef.help.endswith("embedded world: 0.1")
    # the comment is the help, and both say which functions a table offers
    advantage = next(a for a in parser._actions if a.dest == "advantage")
    assert all(f'"{name}"' in advantage.help for name in ppo.ADVANTAGES)
    form = next(a for a in parser._actions if a.dest == "form")
    assert all(f'"{name}"' in form.help for name in reward.SCORES)


def test_a_prefixed_config_error_names_the_flag_as_given():
    args = SimpleNamespace(eval_max_new_tokens=0, eval_batch_size=16, eval_max_questions=None)
    with pytest.raises(DareuError, match=r"^--eval-max-new-tokens must be >= 1, not 0$"):
        config_from_args(evaluate.EvalConfig, args, evaluate.EVAL_CHECKS, prefix="eval")
    flags = SimpleNamespace(**{**vars(ppo.PPOConfig()), "advantage": "bogus"})
    with pytest.raises(DareuError, match=rf"^--advantage 'bogus': choose from {', '.join(ppo.ADVANTAGES)}$"):
        config_from_args(ppo.PPOConfig, flags, ppo.PPO_CHECKS)


@pytest.mark.parametrize("ci,outcome", [("true", "failed"), (None, "skipped")])
def test_a_skip_fails_in_ci(monkeypatch, ci, outcome):
    if ci:
        monkeypatch.setenv("CI", ci)
    else:
        monkeypatch.delenv("CI", raising=False)
    report = SimpleNamespace(skipped=True, outcome="skipped", longrepr=("test_x.py", 3, "Skipped: TOFU data absent"))
    hook = conftest.pytest_runtest_makereport(None, None)
    next(hook)
    with pytest.raises(StopIteration):
        hook.send(SimpleNamespace(get_result=lambda: report))
    assert report.outcome == outcome
    if ci:
        assert report.longrepr == "skipped in CI, where every test must run: Skipped: TOFU data absent"


def test_an_absent_optional_tokenizer_is_a_skip_in_ci_too(monkeypatch):
    monkeypatch.setenv("CI", "true")
    report = SimpleNamespace(skipped=True, outcome="skipped",
                             longrepr=("t.py", 3, f"Skipped: {conftest.OPTIONAL}: tokenizers/qwen3 absent"))
    hook = conftest.pytest_runtest_makereport(None, None)
    next(hook)
    with pytest.raises(StopIteration):
        hook.send(SimpleNamespace(get_result=lambda: report))
    assert report.outcome == "skipped"
