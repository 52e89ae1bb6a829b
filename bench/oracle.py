"""An attributor that knows the answers, for the bench only: DareU with a perfect classifier.

In place of the classifier LLM's a_F, `dareu_oracle` (bench/tofu_mini.py) scores a response by the
words of its question's gold forget answer that it still says, as TOFU measures them:

    a_F(y) = ROUGE-L recall(y, gold answer of y's question)

so PPO optimises the very number the bench reports for forgetting. If DareU with this score beats
the baselines, the classifier is what holds DareU back; if not, the optimisation is.
"""
import torch

from helpers.metrics import rouge_l_recall


class GoldAnswerOracle:
    """The classifier's interface (forget_attribution) over the forget records' gold answers."""

    def __init__(self, forget_records):
        self.gold = {r["question"]: r["answer"] for r in forget_records}

    def forget_attribution(self, prompts, responses, forget_owners):
        """ROUGE-L recall of each response against its question's gold answer, [B]."""
        return torch.tensor([rouge_l_recall(text, self.gold[question]) for question, text in zip(prompts, responses)])
