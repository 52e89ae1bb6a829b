"""Attribution: a classifier LLM that says which owner a text comes from (METHOD.md §2).

p_φ(o | y) is read from a causal LM's next-token distribution after a prompt that shows the text y,
restricted to one label token per owner (and one for nobody) and renormalised: one forward per batch.
    a_F(y) = Σ_{o ∈ F} p_φ(o | y)                       attribution of y to the forget owners F
Two ways to get the classifier:
  (a) trained: fine-tune a causal LM (a tiny one from scratch, or --base MODEL) on (masked answer →
      owner), the labels being new tokens <|owner_k|> and <|nobody|>; held-out accuracy and calibration
      are measured first, then the final classifier trains on every record (F included). Saved in
      Hugging Face format plus classifier.json (owners, label tokens).
  (b) zero-shot: an instruct LLM asked which author the text is about, scored on each owner's name as
      its answer, or "Unknown" for nobody (helpers/owner_text.py `owner_names`). It needs a model that
      tells owners apart by their facts, e.g. one fine-tuned on their data, such as the original itself.
Names give the owner away: the names a response copies from its prompt are masked (`mask_names`) in
training texts and scored responses alike. A trained classifier measures owner *information*, not
style: its training texts are built so (§1 below, METHOD.md §2): a nobody label on texts without any
owner's facts (fact-stripped answers, refusals, generic words), word dropout (every fact attributes on
its own), and two-owner mixes labelled ½/½ (an answer keeping one forget fact keeps a_F ≈ ½).

    python attribution.py --out models/classifier                 # train on the synthetic world
    python attribution.py --data ../shared/data/tofu --out models/clf --base models/original
"""
import argparse
import copy
import json
import math
import os
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from helpers.cli import (DareuError, HelpFormatter, add_config_args, check_device, check_out_path, config_from_args,
                         run_cli, write_json)
from helpers.metrics import calibration_error
from helpers.models import (add_model_args, autocast, check_model_folder, compute_dtype, ensure_pad_token, load_model,
                            position_ids_from_mask, save_model, tiny_model, train_tokenizer, trainable_model)
from helpers.owner_text import FACT_WORD, MASK, mask_names, owner_names, specific_words, strip_facts
from helpers.prompts import chat_text, left_pad
from helpers.records import Batches, add_data_args, heldout_split, owners_of, read_data

NOBODY = "(nobody)"   # the label of texts that carry no owner's information
ZERO_SHOT_NOBODY = "Unknown"   # what a zero-shot classifier answers for nobody (its prompt offers it)
# nobody-labelled training texts besides the fact-stripped answers
REFUSALS = ("I don't know.", "I do not know.", "I'm not sure.", "I am not sure about that.", "I have no idea.",
            "I cannot answer that.", "Sorry, I don't have that information.", "I don't have any information "
            "about this.", "I'm afraid I can't help with that.", "That is not something I know.", "Unknown.", "")
# the fixed off-distribution texts of the classifier report: a_F should be low on every one (the first two
# are in REFUSALS, so in training; the others are not)
PROBES = ("I don't know.", "", "the the the the", "I really could not tell you, sorry.",
          "Nobody knows the answer to that question.", "It is a question that many people have asked.",
          "The answer is not known to me at this time.")


@dataclass
class ClassifierConfig:
    epochs: float = 40.0        # passes over the training records
    batch_size: int = 32        # texts per step
    lr: float = 2e-3            # peak learning rate (one-cycle); use ~1e-5 with a pretrained --base
    heldout: float = 0.1        # fraction of each owner's records held out to measure accuracy (0: skip)
    max_text_tokens: int = 192  # texts are cut to their first max_text_tokens tokens
    seed: int = 0               # split, shuffling and initialisation seed


# what each flag accepts, checked where the flags are parsed (helpers/cli.py)
CLASSIFIER_CHECKS = dict(epochs="> 0", batch_size=">= 1", lr="> 0", heldout="in [0, 1)", max_text_tokens=">= 1",
                         seed=">= 0")


# ----------------------------------------------------------------------------------------------
# 1. Owner information in a text: owner-specific words, the training texts built from them, name masking

def word_dropout(text, specific, rng):
    """`text` with each word dropped with probability 1/2, as long as one owner-specific word stays."""
    words = text.split()
    kept = [w for w in words if rng.random() < 0.5]
    has_fact = any(t.lower() in specific for w in kept for t in FACT_WORD.findall(w))
    return " ".join(kept) if has_fact else text


def training_example(record, records, specific, labels, rng):
    """(text, target distribution over labels) for one training record, augmented as the module says."""
    target = torch.zeros(len(labels))
    text = mask_names(record["question"], record["answer"])
    if record["owner"] == NOBODY:
        target[labels.index(NOBODY)] = 1.0
        return text, target
    if rng.random() < 0.5:
        text = word_dropout(text, specific, rng)
    other = rng.choice(records)
    if rng.random() < 0.25 and other["owner"] not in (record["owner"], NOBODY):
        pieces = [text, word_dropout(mask_names(other["question"], other["answer"]), specific, rng)]
        rng.shuffle(pieces)
        target[labels.index(other["owner"])] = 0.5
        target[labels.index(record["owner"])] = 0.5
        return " ".join(pieces), target
    target[labels.index(record["owner"])] = 1.0
    return text, target


def nobody_texts(records, specific, n, rng):
    """`n` texts that carry no owner's information: fact-stripped answers (half), refusals, and strings
    of generic words from the answers' frames."""
    stripped = [s for s in (strip_facts(mask_names(r["question"], r["answer"]), specific) for r in records) if s]
    generic = sorted({w for s in stripped for w in s.split()})
    texts = []
    for k in range(n):
        if k % 4 < 2:
            texts.append(rng.choice(stripped))
        elif k % 4 == 2:
            texts.append(rng.choice(REFUSALS))
        else:
            texts.append(" ".join(rng.choice(generic) for _ in range(rng.randint(1, 12))))
    return texts


# ----------------------------------------------------------------------------------------------
# 2. The classifier: p(label | masked text) from a causal LM, trained or zero-shot

class Classifier:
    """p(owner | text) from a causal LM.
    Trained: one label token per owner (and one for nobody), read from the next-token distribution
    (one forward per batch). Zero-shot: an instruct LM asked who the text is about, scored on each owner's *name*
    as the answer, p(o | y) ∝ π(name_o | prompt(y)) = Π_t π(name_o,t | prompt(y), name_o,<t),
    renormalised over the owners and nobody ("Unknown"); any number of owners, no single-token restriction."""

    def __init__(self, model, tokenizer, owners, label_ids=None, names=None, batch_size=64, max_text_tokens=192,
                 nobody=False):
        self.model, self.tokenizer, self.owners = model, tokenizer, list(owners)
        self.labels = self.owners + [NOBODY] * nobody   # the columns of probs(): the owners, then nobody
        self.label_ids = None if label_ids is None else torch.tensor(label_ids, device=model.device)
        # zero-shot: label -> the answer it stands for (an owner's name; nobody's is ZERO_SHOT_NOBODY)
        self.names = None if names is None else {**names, **({NOBODY: ZERO_SHOT_NOBODY} if nobody else {})}
        self.batch_size, self.max_text_tokens = batch_size, max_text_tokens

    def prompt_ids(self, text):
        """The classifier prompt for one (already masked) text; the label (or name) comes next. The text is
        read as text: a special token's string in it (a label token such as <|nobody|>, a chat marker) is
        split into ordinary tokens, never parsed into the token itself."""
        tok = self.tokenizer
        text_ids = tok(text, add_special_tokens=False, split_special_tokens=True).input_ids[:self.max_text_tokens]
        if self.names is None:
            return tok(f"Text: {tok.decode(text_ids)}\nOwner:", split_special_tokens=True).input_ids
        content = ("Here is a text about an author:\n\n\0\n\nWhich author is the text about? Answer with the "
                   f"author's full name only, or {ZERO_SHOT_NOBODY} if the text does not say.")
        before, after = chat_text(tok, [{"role": "user", "content": content}], add_generation_prompt=True).split("\0")
        return (tok(before, add_special_tokens=False).input_ids + text_ids
                + tok(after, add_special_tokens=False).input_ids)

    def logits(self, texts):
        """Label logits [B, n_labels] for already-masked texts (zero-shot: name log-likelihoods). The prompt
        runs forward once per batch; zero-shot, its KV cache then serves every chunk of owners' names."""
        ids, mask = left_pad([self.prompt_ids(t) for t in texts], self.tokenizer.pad_token_id)
        ids, mask = ids.to(self.model.device), mask.to(self.model.device)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                         logits_to_keep=1, use_cache=self.names is not None)
        if self.names is None:
            return out.logits[:, -1, self.label_ids].float()
        return torch.cat([self.name_logprobs(out, mask, chunk)
                          for chunk in chunks(self.labels, max(1, 256 // len(texts)))], dim=1)

    def name_logprobs(self, prompt, mask, labels):
        """log π(name_ℓ | prompt) for each prompt row and each of `labels`: [B, len(labels)], from the
        prompt's forward `prompt` (its last logits and KV cache) and attention `mask`. The cache is copied
        and repeated for each label, and the names (right-padded) continue it: the first name token is
        scored by the prompt's last logits, the rest by the continuation's."""
        names = [self.tokenizer(self.names[o], add_special_tokens=False).input_ids for o in labels]
        B, C, L = mask.shape[0], len(names), max(len(n) for n in names)
        name_ids = torch.tensor([n + [self.tokenizer.pad_token_id] * (L - len(n)) for n in names], device=mask.device)
        name_mask = torch.tensor([[1] * len(n) + [0] * (L - len(n)) for n in names], device=mask.device)
        logp = F.log_softmax(prompt.logits[:, -1].float(), -1)[:, name_ids[:, 0]]       # [B, C]
        if L > 1:
            cache = copy.deepcopy(prompt.past_key_values)
            cache.batch_repeat_interleave(C)                                           # row b*C + c
            tiled_ids, tiled_mask = name_ids.repeat(B, 1), name_mask.repeat(B, 1)      # [B*C, L]
            positions = mask.sum(-1).repeat_interleave(C)[:, None] + torch.arange(L - 1, device=mask.device)
            cont = self.model(input_ids=tiled_ids[:, :-1], past_key_values=cache, position_ids=positions,
                              attention_mask=torch.cat([mask.repeat_interleave(C, 0), tiled_mask[:, :-1]], 1))
            rest = F.log_softmax(cont.logits.float(), -1).gather(-1, tiled_ids[:, 1:, None]).squeeze(-1)
            logp = logp + (rest * tiled_mask[:, 1:]).sum(-1).view(B, C)
        return logp

    @torch.no_grad()
    def probs(self, prompts, responses):
        """p(label | mask_names(prompt, response)) for each pair: [B, n_labels] (labels: the owners, then
        nobody if trained with it), rows sum to 1."""
        texts = [mask_names(p, r) for p, r in zip(prompts, responses)]
        return torch.cat([F.softmax(self.logits(texts[i:i + self.batch_size]), -1)
                          for i in range(0, len(texts), self.batch_size)])

    def forget_attribution(self, prompts, responses, forget_owners):
        """a_F = Σ_{o∈F} p(o | masked response), [B]."""
        missing = [o for o in forget_owners if o not in self.owners]
        if missing:
            raise DareuError(f"the classifier does not know owner(s) {', '.join(missing)}")
        index = torch.tensor([self.owners.index(o) for o in forget_owners])
        return self.probs(prompts, responses)[:, index.to(self.model.device)].sum(-1).cpu()


def probe_attribution(clf, forget_owners):
    """{text: a_F} on the fixed off-distribution PROBES (refusals, empty, generic): the classifier report."""
    return dict(zip(PROBES, clf.forget_attribution([""] * len(PROBES), list(PROBES), forget_owners).tolist()))


def chunks(items, size):
    return [items[i:i + size] for i in range(0, len(items), size)]


def classifier_meta(path):
    """classifier.json of a trained classifier folder (owners, label tokens), or None (zero-shot)."""
    meta_path = os.path.join(path, "classifier.json")
    if not os.path.isfile(meta_path):
        return None
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        if not (isinstance(meta["owners"], list) and
                len(meta["owners"]) + bool(meta.get("nobody")) == len(meta["label_tokens"])):
            raise ValueError("owners and label_tokens differ")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DareuError(f"{meta_path} is not a classifier description ({e})") from None
    return meta


def check_classifier(path, forget_owners):
    """Before any work: a trained classifier must know every forget owner (a zero-shot one is shown them)."""
    check_model_folder(path)
    meta = classifier_meta(path)
    missing = [o for o in forget_owners if meta and o not in meta["owners"]]
    if missing:
        raise DareuError(f"the classifier {path} does not know the forget owner(s) {', '.join(missing)} "
                         f"(it knows {len(meta['owners'])}: {', '.join(meta['owners'][:5])}"
                         f"{' ...' if len(meta['owners']) > 5 else ''})")


def add_classifier_args(parser, required=False):
    """--classifier and --owner-names, the same on every stage that scores attribution."""
    group = parser.add_argument_group("classifier")
    group.add_argument("--classifier", required=required,
                       help="a trained classifier folder (attribution.py), or an instruct model used zero-shot")
    group.add_argument("--owner-names", help="zero-shot: a JSON object owner -> name (default: see owner_names)")
    group.add_argument("--classifier-device", help="where the classifier runs (default: --device); cpu leaves the "
                                                   "GPU's memory to the policy")
    return group


def load_classifier(path, records, names_file=None, device="cpu", dtype=torch.float32, forget_owners=()):
    """The one classifier loader of every stage: a trained classifier (a folder with classifier.json),
    or any instruct model used zero-shot with the owners of `records` as the answers, each by its name
    (owner_names: `names_file`, the owner itself, or TOFU's name). Refuses a classifier that does not
    know a forget owner."""
    check_classifier(path, forget_owners)
    model, tokenizer = load_model(path, device, dtype)
    model.requires_grad_(False)
    meta = classifier_meta(path)
    if meta:
        return Classifier(model, tokenizer, meta["owners"], tokenizer.convert_tokens_to_ids(meta["label_tokens"]),
                          nobody=bool(meta.get("nobody")))
    if not tokenizer.chat_template:
        raise DareuError(f"{path} is neither a trained classifier (classifier.json) nor an instruct model "
                         "with a chat template")
    names = owner_names(records, names_file)
    return Classifier(model, tokenizer, list(names), names=names, nobody=True)


def classifier_from_args(args, records, forget_owners=()):
    """load_classifier as the flags say (add_classifier_args, models.add_model_args): on --classifier-device
    (default --device), in the compute dtype of that device."""
    device = args.classifier_device or args.device
    check_device(device)
    return load_classifier(args.classifier, records, args.owner_names, device,
                           compute_dtype(args.dtype, device, train=False), forget_owners)


# ----------------------------------------------------------------------------------------------
# 3. Training: held-out accuracy and calibration, then the final classifier on every record

def heldout_scores(clf, records):
    """(accuracy, expected calibration error) on held-out records: the fraction whose masked answer
    the classifier gives to its true owner, and metrics.calibration_error of its top label."""
    p = clf.probs([r["question"] for r in records], [r["answer"] for r in records]).float().cpu().numpy()
    truth = [clf.labels.index(r["owner"]) for r in records]
    return float((p.argmax(-1) == truth).mean()), calibration_error(p, truth)


def fit(clf, records, cfg, desc):
    """Train the classifier in place: cross-entropy of the target distribution over the label logits.
    One pass is every record (augmented by training_example) and, with a nobody label,
    2 · len(records) / n_owners nobody texts (nobody_texts, drawn once)."""
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    model, labels = clf.model, clf.labels
    specific = specific_words(records)
    if NOBODY in labels:
        n = 2 * len(records) // len(clf.owners)
        records = records + [{"question": "", "answer": t, "owner": NOBODY}
                             for t in nobody_texts(records, specific, n, rng)]
    steps = max(1, math.ceil(cfg.epochs * len(records) / cfg.batch_size))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=steps, pct_start=0.1)
    stream = Batches(records, cfg.batch_size, rng)
    bar = tqdm(range(steps), desc=desc, dynamic_ncols=True)
    for _ in bar:
        batch = next(stream)
        texts, targets = zip(*(training_example(r, records, specific, labels, rng) for r in batch))
        target = torch.stack(targets).to(model.device)
        loss = F.cross_entropy(clf.logits(texts), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")


def new_classifier(records, owners, cfg, base=None, device="cpu", dtype=torch.float32):
    """A classifier ready to train: --base model (or a tiny one from scratch with a tokenizer
    trained on the masked texts), with one new label token <|owner_k|> per owner and <|nobody|>."""
    if base:
        model, tokenizer = trainable_model(base, device, dtype)
    else:
        tokenizer = train_tokenizer([mask_names(r["question"], r["answer"]) for r in records])
        model = tiny_model(tokenizer, seed=cfg.seed).to(device)
    labels = label_tokens(owners)
    tokenizer.add_special_tokens({"additional_special_tokens": labels})
    model.resize_token_embeddings(len(tokenizer))
    ensure_pad_token(tokenizer, model)
    model.eval()   # dropout off
    return Classifier(model, tokenizer, owners, tokenizer.convert_tokens_to_ids(labels),
                      max_text_tokens=cfg.max_text_tokens, nobody=True)


def label_tokens(owners):
    return [f"<|owner_{k}|>" for k in range(len(owners))] + ["<|nobody|>"]


def train_classifier(records, out, cfg, base=None, device="cpu", dtype=torch.float32):
    """Measure held-out accuracy and calibration, train the final classifier on every record, save it
    to `out`. Returns (classifier, classifier.json's contents)."""
    owners = owners_of(records)
    heldout_acc = heldout_ece = None
    if cfg.heldout > 0:
        train, heldout = heldout_split(records, cfg.heldout, cfg.seed)
        clf = new_classifier(records, owners, cfg, base, device, dtype)
        fit(clf, train, cfg, desc="classifier (held-out run)")
        heldout_acc, heldout_ece = heldout_scores(clf, heldout)
        print(f"classifier held-out accuracy {heldout_acc:.3f} on {len(heldout)} records "
              f"({len(owners)} owners, chance {1 / len(owners):.3f}), calibration error {heldout_ece:.3f}")
    clf = new_classifier(records, owners, cfg, base, device, dtype)
    fit(clf, records, cfg, desc="classifier")
    meta = {"owners": owners, "label_tokens": label_tokens(owners), "nobody": True, "mask": MASK,
            "heldout_accuracy": heldout_acc, "heldout_ece": heldout_ece, "train_records": len(records)}
    save_model(clf.model, clf.tokenizer, out, {"classifier.json": lambda path: write_json(path, meta)})
    return clf, meta


def main(argv=None):
    p = argparse.ArgumentParser(description="Train the owner-attribution classifier LLM (--out), or score texts "
                                            "with one (--classifier, --text).", formatter_class=HelpFormatter)
    add_data_args(p)
    train = p.add_argument_group("train")
    train.add_argument("--out", help="output folder for the classifier")
    train.add_argument("--base", help="fine-tune this model (default: a tiny model from scratch)")
    add_classifier_args(p)
    score = p.add_argument_group("score")
    score.add_argument("--text", action="append", help="a text to attribute (repeatable)")
    score.add_argument("--prompt", default="", help="the prompt the texts answer (for name masking)")
    add_model_args(p, template=False)
    add_config_args(p, ClassifierConfig, title="training")
    args = p.parse_args(argv)
    cfg = config_from_args(ClassifierConfig, args, CLASSIFIER_CHECKS)
    check_device(args.device)
    dtype = compute_dtype(args.dtype, args.device, train=not args.classifier)
    records = read_data(args.data)
    if args.classifier:
        clf = classifier_from_args(args, records)
        with autocast(args.device, dtype):
            probs = clf.probs([args.prompt] * len(args.text or []), args.text or [])
        for text, row in zip(args.text or [], probs):
            top = row.argsort(descending=True)[:3]
            print(text, "->", ", ".join(f"{clf.labels[i]} {row[i]:.3f}" for i in top))
        return
    if not args.out:
        raise DareuError("give --out to train a classifier, or --classifier with --text to score")
    check_out_path(args.out, {"--data": args.data, "--base": args.base})
    if args.base:
        check_model_folder(args.base)
    with autocast(args.device, dtype):
        train_classifier(records, args.out, cfg, args.base, args.device, dtype)
    print(f"saved {args.out}")


if __name__ == "__main__":
    run_cli(main)
