"""Privacy and memorisation of a model on owner-labelled answers, as open-unlearning measures them
(helpers/metrics.py holds the formulas): does a membership-inference attack still tell the forget
records from records the model never saw (holdout), and does the model still predict the forget answers
token by token? One teacher-forced forward per batch gives every number.

    per_record = token_stats(model, tokenizer, questions, answers)      # the forward
    privacy(forget_stats, holdout_stats, forget_answers, holdout_answers)
"""
import numpy as np
import torch
import torch.nn.functional as F

from helpers import metrics as M
from helpers.models import position_ids_from_mask
from helpers.prompts import encode_qa

# the attacks: name -> score(record stats, answer text); higher = less like a member (forget = 0 in the AUC)
ATTACKS = {"loss": lambda s, a: M.loss_score(s["nll"]), "zlib": lambda s, a: M.zlib_score(s["nll"], a),
           "min_k": lambda s, a: M.min_k_score(s["logprobs"][:-1]),
           "min_k_plus_plus": lambda s, a: M.min_k_plus_plus_score(s["logprobs"][:-1], s["mu"][:-1], s["var"][:-1])}
PRIVLEAK_ATTACK = "min_k"   # the attack privleak reads, as open-unlearning's TOFU evaluation


@torch.no_grad()
def token_stats(model, tokenizer, questions, answers, batch_size=16):
    """Per (question, answer), teacher-forced on the answer tokens (EOS last): the gold tokens' log-probs,
    their mean (the NLL), μ_t and σ_t² of log p under p at each position, the argmax and the gold ids."""
    stats = []
    for i in range(0, len(questions), batch_size):
        ids, mask, answer_mask = encode_qa(tokenizer, questions[i:i + batch_size], answers[i:i + batch_size])
        ids, mask = ids.to(model.device), mask.to(model.device)
        n = int(answer_mask.sum(-1).max())                     # answers are right-aligned: the last n columns
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                       logits_to_keep=n + 1).logits[:, :-1]   # column t predicts token t + 1
        for row in range(ids.shape[0]):
            k = int(answer_mask[row].sum())
            logp = F.log_softmax(logits[row, n - k:].float(), -1)                      # [k, V]
            gold = ids[row, -k:]
            token_logp = logp.gather(-1, gold[:, None]).squeeze(-1)
            mu = (logp.exp() * logp).sum(-1)
            var = (logp.exp() * logp ** 2).sum(-1) - mu ** 2
            stats.append({"logprobs": token_logp.cpu().numpy(), "nll": float(-token_logp.mean()),
                          "mu": mu.cpu().numpy(), "var": var.cpu().numpy(),
                          "predicted": logp.argmax(-1).tolist(), "gold": gold.tolist()})
    return stats


def memorisation(stats):
    """Per record: exact memorisation and extraction strength over the answer tokens, EOS left out."""
    return ([M.exact_memorisation(s["predicted"][:-1], s["gold"][:-1]) for s in stats],
            [M.extraction_strength(s["predicted"][:-1], s["gold"][:-1]) for s in stats])


def privacy(forget_stats, forget_answers, holdout_stats=None, holdout_answers=None):
    """The forget set's memorisation, and (with holdout records) each attack's scores and AUC.
    Returns {"exact_memorisation": mean, "extraction_strength": mean, "mia": {attack: AUC} or None,
    "per_question": {...}}."""
    exact, extraction = memorisation(forget_stats)
    out = {"exact_memorisation": float(np.mean([e for e in exact if e is not None])),
           "extraction_strength": float(np.mean(extraction)), "mia": None,
           "per_question": {"exact_memorisation": exact, "extraction_strength": extraction}}
    if holdout_stats:
        scores = {name: ([attack(s, a) for s, a in zip(forget_stats, forget_answers)],
                         [attack(s, a) for s, a in zip(holdout_stats, holdout_answers)])
                  for name, attack in ATTACKS.items()}
        out["mia"] = {name: M.mia_auc(f, h) for name, (f, h) in scores.items()}
        out["per_question"]["mia"] = {name: {"forget": f, "holdout": h} for name, (f, h) in scores.items()}
    return out
