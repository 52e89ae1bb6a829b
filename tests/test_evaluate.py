"""evaluate.py: metric primitives against reference libraries and hand-worked cases, answer_nll against
the Hugging Face loss, and end-to-end runs of the CLI on tiny random models."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import evaluate as E  # noqa: E402
from data import DareuError, encode_qa, read_json_records, synthetic_world  # noqa: E402
from rollout import ensure_pad_token  # noqa: E402

TOFU = os.path.join(ROOT, "..", "shared", "data", "tofu")
needs_tofu = pytest.mark.skipif(not os.path.isfile(os.path.join(TOFU, "forget10_perturbed.json")),
                                reason="no TOFU folder at ../shared/data/tofu")


# ----------------------------------------------------------------------------------------------
# 1. Metric primitives

def test_rouge_l_recall_hand():
    # reference: the cat is on the mat (6 words); prediction: the cat sat on the mat
    # LCS = "the cat on the mat" = 5 words, recall = 5/6
    assert E.rouge_l_recall("The cat sat on the mat.", "the cat is on the mat") == pytest.approx(5 / 6, abs=1e-12)
    assert E.rouge_l_recall_builtin("The cat sat on the mat.", "the cat is on the mat") == pytest.approx(5 / 6, abs=1e-12)
    assert E.rouge_l_recall("", "anything") == 0.0
    assert E.rouge_l_recall("anything", "!!") == 0.0
    # stemming: "runs" -> "run" and "running" -> "run" ("dogs" has 4 letters -> "dog"); LCS of
    # [the, dog, run] and [run, dog] is 1 word -> 1/3
    stem = lambda w: {"runs": "run", "running": "run", "dogs": "dog"}.get(w, w)  # noqa: E731
    assert E.rouge_l_recall_builtin("running dogs", "the dog runs", stem) == pytest.approx(1 / 3, abs=1e-12)


def test_rouge_l_recall_matches_rouge_score():
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    from nltk.stem.porter import PorterStemmer
    scorer, stem = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True), PorterStemmer().stem
    pairs = []
    if os.path.isfile(os.path.join(TOFU, "forget10_perturbed.json")):
        rows = read_json_records(os.path.join(TOFU, "forget10_perturbed.json"))[::4]
        pairs += [(p, r["answer"]) for r in rows for p in [r["paraphrased_answer"]] + r["perturbed_answer"][:2]]
    rng = np.random.default_rng(0)
    words = ["the", "writer", "writes", "writing", "novels", "novel", "born", "in", "1991", "Taipei,", "she's",
             "awards", "awarded", "x", ""]
    pairs += [(" ".join(rng.choice(words, rng.integers(0, 30))), " ".join(rng.choice(words, rng.integers(0, 30))))
              for _ in range(300)]
    for pred, ref in pairs:
        expected = scorer.score(ref, pred)["rougeL"].recall
        assert abs(E.rouge_l_recall_builtin(pred, ref, stem) - expected) < 1e-9, (pred, ref)
        assert abs(E.rouge_l_recall(pred, ref) - expected) < 1e-9


def test_ks_pvalue_hand():
    # x = [1, 2], y = [3, 4]: the ECDF gap reaches d = 1. Of the C(4, 2) = 6 equally likely orders
    # of the pooled sample only xxyy and yyxx reach it, so p = 2/6.
    assert E.ks_pvalue_exact([1, 2], [3, 4]) == pytest.approx(1 / 3, abs=1e-12)
    # x = [1, 3], y = [2, 4]: d = 1/2, reached by every order except... none stays below 1/2
    # (the first value alone gives a gap of 1/2), so p = 1.
    assert E.ks_pvalue_exact([1, 3], [2, 4]) == pytest.approx(1.0, abs=1e-12)
    # identical samples: d = 0, p = 1 (the retain model against itself)
    assert E.ks_pvalue_exact([0.5, 0.2, 0.9], [0.9, 0.5, 0.2]) == 1.0
    assert E.ks_pvalue([0.5, 0.2, 0.9], [0.9, 0.5, 0.2]) == 1.0


@pytest.mark.parametrize("m,n", [(3, 5), (7, 13), (40, 40), (40, 200), (200, 400), (400, 400), (13, 7)])
def test_ks_pvalue_matches_scipy(m, n):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(m * 1000 + n)
    for shift, decimals in [(0.0, None), (0.3, None), (0.5, 1), (2.0, None)]:   # rounding makes ties
        x, y = rng.normal(size=m), rng.normal(shift, size=n)
        if decimals is not None:
            x, y = np.round(x, decimals), np.round(y, decimals)
        expected = stats.ks_2samp(x, y).pvalue
        assert abs(E.ks_pvalue_exact(x, y) - expected) < 1e-9
        assert abs(E.ks_pvalue(x, y) - expected) < 1e-9


def test_hmean():
    assert E.hmean([1.0, 0.5]) == pytest.approx(2 / 3, abs=1e-12)   # 2 / (1 + 2)
    assert E.hmean([0.3, 0.0, 0.9]) == 0.0
    stats = pytest.importorskip("scipy.stats")
    values = np.random.default_rng(1).uniform(0.01, 1, 9)
    assert abs(E.hmean(values) - stats.hmean(values)) < 1e-12


def test_truth_ratio_hand():
    # q1: NLL_para = 1, perturbed NLLs 2 and 3 (mean 2.5): R = exp(1 − 2.5) = e^−1.5
    # q2: NLL_para = 2, perturbed NLLs 1 and 1:               R = exp(2 − 1)   = e^1
    r = E.truth_ratio([1.0, 2.0], [[2.0, 3.0], [1.0, 1.0]])
    assert np.allclose(r, [math.exp(-1.5), math.e], atol=1e-12)
    # forget: mean min(R, 1/R) = (e^−1.5 + e^−1) / 2; elsewhere mean max(0, 1 − R) = (1 − e^−1.5 + 0) / 2
    assert E.truth_ratio_score(r, forget=True) == pytest.approx((math.exp(-1.5) + math.exp(-1)) / 2, abs=1e-12)
    assert E.truth_ratio_score(r, forget=False) == pytest.approx((1 - math.exp(-1.5)) / 2, abs=1e-12)
    # KS p-value between two 2-question forget sets of R: [e^−1.5, e] vs [e^2, e^3] are fully separated,
    # d = 1, p = 2 / C(4, 2) = 1/3 (as in test_ks_pvalue_hand)
    assert E.ks_pvalue(r, [math.exp(2), math.exp(3)]) == pytest.approx(1 / 3, abs=1e-9)


def test_normalised_prob_hand():
    # P̃(a) = 1/2, two options with P̃ = 1/4 each: 0.5 / (0.5 + 0.25 + 0.25) = 0.5
    # P̃(a) = 1/2, one option with P̃ = 1/2:       0.5 / 1.0                   = 0.5 ... and 1/8 vs 1/2: 1/5
    p = E.normalised_prob([math.log(2), math.log(2), math.log(8)], [[math.log(4)] * 2, [math.log(2)], [math.log(2)]])
    assert np.allclose(p, [0.5, 0.5, 0.2], atol=1e-12)


def test_tug_of_war_hand():
    # (1 − |0.3 − 0.4|)(1 − |0.9 − 0.95|)(1 − 0) = 0.9 · 0.95 · 1 = 0.855
    tow = E.tug_of_war({"forget": 0.3, "retain": 0.9, "test": 0.8}, {"forget": 0.4, "retain": 0.95, "test": 0.8})
    assert tow == pytest.approx(0.855, abs=1e-12)
    assert E.tug_of_war({"forget": 0.3, "retain": 0.9}, {"forget": 0.3, "retain": 0.9}) == 1.0


def test_make_set_subset():
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(10)]
    s = E.make_set("retain", rows, 4, "test")
    assert s["questions"] == ["q0", "q2", "q5", "q7"] and s["n_total"] == 10   # rows i*10//4
    assert s["paraphrased"] is None and s["perturbed"] is None
    with pytest.raises(DareuError):
        E.make_set("forget", [], 0, "test")


# ----------------------------------------------------------------------------------------------
# 2. Tiny models

def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    texts = [r["question"] + " " + r["answer"] for r in synthetic_world()]
    if os.path.isdir(TOFU):
        texts += [r["question"] + " " + r["answer"] for r in read_json_records(os.path.join(TOFU, "full.json"))[::10]]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|pad|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>")


def tiny_model(tokenizer, seed):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config).eval()
    ensure_pad_token(tokenizer, model)
    return model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Two random tiny models saved as folders: "original" and "retain"."""
    tokenizer = tiny_tokenizer()
    root = tmp_path_factory.mktemp("models")
    paths = {}
    for seed, name in enumerate(["original", "retain"]):
        model = tiny_model(tokenizer, seed)
        paths[name] = str(root / name)
        model.save_pretrained(paths[name])
        tokenizer.save_pretrained(paths[name])
    return tokenizer, tiny_model(tokenizer, 0), paths


def test_answer_nll_equals_hf_loss(tiny):
    tokenizer, model, _ = tiny
    records = synthetic_world()[:5]
    questions, answers = [r["question"] for r in records], [r["answer"] for r in records]
    answers[1] = "Yes."   # rows of very different lengths, so the batch is left-padded
    nll = E.answer_nll(model, tokenizer, questions, answers, batch_size=5)
    ids, mask, answer_mask = encode_qa(tokenizer, questions, answers)
    assert (mask == 0).any()
    for i in range(len(records)):
        row = ids[i][mask[i].bool()][None]
        labels = row.masked_fill(answer_mask[i][mask[i].bool()][None] == 0, -100)
        with torch.no_grad():
            loss = model(input_ids=row, labels=labels).loss.item()
        assert abs(nll[i] - loss) < 1e-5


class FakeClassifier:
    def forget_attribution(self, questions, responses, forget_owners):
        return torch.full((len(questions),), 0.25)


def test_evaluate_records(tiny):
    tokenizer, model, _ = tiny
    records = synthetic_world()
    forget, retain = records[:12], records[12:]
    cfg = E.EvalConfig(max_new_tokens=4, batch_size=4, max_questions=3)
    out = E.evaluate_records(model, tokenizer, forget, retain, cfg, FakeClassifier(), [records[0]["owner"]])
    assert out["forget_attribution"] == pytest.approx(0.25) and out["retain_attribution"] == pytest.approx(0.25)
    assert 0 < out["forget_prob"] < 1 and 0 <= out["retain_rouge"] <= 1
    assert len(out["per_question"]["forget"]["generated"]) == 3
    assert set(out["per_question"]["retain"]) >= {"generated", "rouge", "prob", "attribution"}
    no_clf = E.evaluate_records(model, tokenizer, forget, retain, cfg)
    assert no_clf["forget_attribution"] is None and no_clf["forget_prob"] == pytest.approx(out["forget_prob"])


def run_cli(*args):
    # one OpenMP thread: tiny models gain nothing from two, and lose much when the cores are busy
    return subprocess.run([sys.executable, os.path.join(ROOT, "evaluate.py"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_help():
    proc = run_cli("--help")
    assert proc.returncode == 0 and "--retain-json" in proc.stdout


@needs_tofu
def test_cli_tofu(tiny, tmp_path):
    _, _, paths = tiny
    common = ["--data", TOFU, "--forget", "forget10", "--max-questions", "3", "--max-new-tokens", "4",
              "--batch-size", "8"]
    # the retain model and the original, side by side
    out = tmp_path / "eval.json"
    proc = run_cli("--model", paths["original"], "--retain-model", paths["retain"], *common, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "| metric | original | retain |" in proc.stdout and "Forget quality" in proc.stdout
    result = json.loads(out.read_text())
    assert result["retain_model"] == "retain" and list(result["sets"]) == list(E.TOFU_FILES)
    assert all(len(s["questions"]) == 3 for s in result["sets"].values())
    assert result["unavailable"] == {"attribution": E.WHY_UNAVAILABLE["attribution"]}
    retain, original = result["models"]["retain"], result["models"]["original"]
    assert retain["forget_quality"] == 1.0 and retain["tug_of_war"] == 1.0
    assert 0 <= original["forget_quality"] <= 1 and 0 <= original["model_utility"] <= 1
    per_q = original["sets"]["forget"]["per_question"]
    assert len(per_q["truth_ratio"]) == 3 and len(per_q["perturbed_nll"][0]) == 5
    assert len(original["sets"]["real_authors"]["per_question"]["perturbed_nll"][0]) == 3
    protocol = result["protocol"]
    assert protocol["config"] == {"max_new_tokens": 4, "batch_size": 8, "max_questions": 3}
    assert protocol["rouge"] == E.ROUGE_IMPL and protocol["ks"] == E.KS_IMPL and "torch" in protocol["versions"]
    assert original["prompt_format"] == "plain" and original["dtype"] == "float32"
    # the retain model's saved results as the reference for a later run
    out2 = tmp_path / "eval2.json"
    proc = run_cli("--model", paths["original"], "--retain-json", str(out), *common, "--out", str(out2))
    assert proc.returncode == 0, proc.stderr
    again = json.loads(out2.read_text())["models"]
    assert again["original"]["forget_quality"] == pytest.approx(original["forget_quality"], abs=1e-12)
    assert again["original"]["tug_of_war"] == pytest.approx(original["tug_of_war"], abs=1e-12)
    assert again["retain"]["forget_quality"] == 1.0
    # a reference evaluated on other questions is refused in one line
    other_questions = [a if a != "3" else "2" for a in common]   # --max-questions 2
    proc = run_cli("--model", paths["original"], "--retain-json", str(out), *other_questions,
                   "--out", str(tmp_path / "x.json"))
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1


def test_cli_generic_records(tiny, tmp_path):
    _, _, paths = tiny
    records = synthetic_world()
    data = tmp_path / "records.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "eval.json"
    # the retain model named twice (--model and --retain-model) is evaluated once
    proc = run_cli("--model", paths["original"], "--model", paths["retain"], "--retain-model", paths["retain"],
                   "--data", str(data), "--forget", records[0]["owner"], "--max-questions", "4",
                   "--max-new-tokens", "4", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert list(result["sets"]) == ["forget", "retain"] and result["protocol"]["suite"] == "records"
    assert list(result["models"]) == ["original", "retain"] and result["models"]["retain"]["tug_of_war"] == 1.0
    assert set(result["unavailable"]) == {"truth_ratio", "forget_quality", "model_utility", "attribution"}
    assert "unavailable: truth_ratio" in proc.stdout and "forget ROUGE-L" in proc.stdout
    assert result["models"]["original"]["sets"]["forget"]["truth_ratio"] is None
    # user errors: one line on stderr, exit status 2
    (tmp_path / "not-a-model").mkdir()
    proc = run_cli("--model", str(tmp_path / "not-a-model"), "--data", str(data), "--forget", records[0]["owner"],
                   "--out", str(out))
    assert proc.returncode == 2 and "not a Hugging Face model folder" in proc.stderr
