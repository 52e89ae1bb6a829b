"""helpers/privacy.py: the teacher-forced token statistics against one unpadded forward per record, written
out here, and the attacks' AUCs and memorisation assembled from them."""
import numpy as np
import pytest
import torch

from helpers import metrics as M
from helpers.privacy import ATTACKS, privacy, token_stats
from helpers.prompts import qa_ids


def test_token_stats_equal_one_plain_forward_per_record(tiny, world_records):
    """A left-padded batch of answers of different lengths: each record's gold log-probs (EOS last), μ_t and
    σ_t² of log p under p, and the argmax equal those of an unpadded forward of that record alone."""
    model, tok = tiny
    recs = world_records[:5]
    stats = token_stats(model, tok, [r["question"] for r in recs], [r["answer"] for r in recs], batch_size=4)
    for r, s in zip(recs, stats):
        ids, n_prompt = qa_ids(tok, r["question"], r["answer"])
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0].float()
        logp = torch.log_softmax(logits[n_prompt - 1:-1], -1)          # position t predicts token t + 1
        gold = torch.tensor(ids[n_prompt:])
        p = logp.exp()
        assert s["gold"] == ids[n_prompt:] and gold[-1] == tok.eos_token_id
        assert np.allclose(s["logprobs"], logp.gather(-1, gold[:, None]).squeeze(-1).numpy(), atol=1e-5)
        assert s["nll"] == pytest.approx(-logp.gather(-1, gold[:, None]).mean().item(), abs=1e-5)
        assert np.allclose(s["mu"], (p * logp).sum(-1).numpy(), atol=1e-5)
        assert np.allclose(s["var"], ((p * logp ** 2).sum(-1) - (p * logp).sum(-1) ** 2).numpy(), atol=1e-4)
        assert s["predicted"] == logp.argmax(-1).tolist()


def test_privacy_assembles_the_attacks_and_memorisation_from_the_stats():
    """Hand-made statistics: every attack's AUC from its scores (forget = 0), EOS left out of Min-K% and the
    memorisation scores, kept in the LOSS."""
    def record(logprobs, predicted, gold):
        lp = np.array(logprobs, dtype=float)
        return {"logprobs": lp, "nll": float(-lp.mean()), "mu": np.full(len(lp), -1.0), "var": np.ones(len(lp)),
                "predicted": predicted, "gold": gold}
    forget = [record([-0.1, -0.2, -9.0], [1, 2, 0], [1, 2, 3]), record([-0.3, -0.1, -9.0], [4, 5, 6], [4, 5, 6])]
    holdout = [record([-2.0, -3.0, -0.1], [0, 0, 0], [7, 8, 9]), record([-1.5, -2.5, -0.1], [0, 0, 0], [1, 1, 1])]
    answers = ["a b", "c d", "e f", "g h"]
    out = privacy(forget, answers[:2], holdout, answers[2:])
    # EOS (the last token) out: memorisation 2/2 and 2/2; extraction strength 1 for both
    assert out["exact_memorisation"] == 1.0 and out["extraction_strength"] == 1.0
    # every attack ranks both holdout records above both forget ones, but LOSS, which counts the EOS
    # token's −9.0 in the forget records' NLL (3.1, 3.13 against 1.7, 1.37): AUC 0
    assert out["mia"] == {"loss": 0.0, "zlib": 0.0, "min_k": 1.0, "min_k_plus_plus": 1.0}
    assert out["per_question"]["mia"]["min_k"]["forget"] == [M.min_k_score([-0.1, -0.2]), M.min_k_score([-0.3, -0.1])]
    assert set(ATTACKS) == set(out["mia"])
    assert privacy(forget, answers[:2])["mia"] is None                   # no holdout: no attack
