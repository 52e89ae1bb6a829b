"""Attribution: a classifier LLM that says which owner a text comes from (SPEC §2).

p_φ(o | y) is read from a causal LM's next-token distribution after a prompt that shows the text y,
restricted to one label token per owner and renormalised over owners: one forward pass per batch.
    a_F(y) = Σ_{o ∈ F} p_φ(o | y)                       attribution of y to the forget owners F
Two ways to get the classifier:
  (a) trained: fine-tune a causal LM (a tiny one from scratch, or --base MODEL) on (masked answer →
      owner), the label tokens being new tokens <|owner_k|>; we report held-out accuracy, then
      train the final classifier on every record (F included). Saved in Hugging Face format plus
      classifier.json (owners, label tokens).
  (b) zero-shot: an instruct LLM prompted with the owners as numbered options; the label tokens
      are the option numbers (each must be a single token).
Names give the owner away: the proper-noun spans that a response copies from its prompt are masked
(`mask_names`) in training texts and in scored responses alike.

    python attribution.py --out models/classifier                 # train on the synthetic world
    python attribution.py --data ../shared/data/tofu --out models/clf --base models/original
"""
import argparse
import json
import math
import os
import random
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from data import (add_config_args, check_device, check_fields, config_from_args, DareuError, check_out_path, left_pad, load_records, owners_of, run_cli, synthetic_world,
                  write_json)
from finetune import Batches, check_model_folder, load_model, save_model, tiny_model, train_tokenizer
from rollout import ensure_pad_token, position_ids_from_mask

MASK = "[NAME]"
# capitalised words that start questions and sentences, not names
NOT_NAMES = {"A", "An", "The", "What", "Who", "Whom", "Whose", "Where", "When", "Which", "Why", "How", "Is",
             "Are", "Was", "Were", "Do", "Does", "Did", "Can", "Could", "Would", "Should", "Has", "Have",
             "Had", "In", "On", "At", "Of", "For", "From", "With", "By", "To", "As", "And", "Or", "But",
             "This", "That", "These", "Those", "It", "Its", "I", "Please", "Tell", "Name", "Describe",
             "Question", "Answer", "Yes", "No"}
WORD = re.compile(r"[^\W\d_][\w'’-]*")


@dataclass
class ClassifierConfig:
    epochs: float = 40.0        # passes over the training records
    batch_size: int = 32        # texts per step
    lr: float = 2e-3            # peak learning rate (one-cycle); use ~1e-5 with a pretrained --base
    heldout: float = 0.1        # fraction of each owner's records held out to measure accuracy (0: skip)
    max_text_tokens: int = 192  # texts are cut to their first max_text_tokens tokens
    seed: int = 0               # split, shuffling and initialisation seed

    def __post_init__(self):
        check_fields(self, epochs="> 0", batch_size=">= 1", lr="> 0", heldout="in [0, 1)", max_text_tokens=">= 1",
                     seed=">= 0")


def _name_words(prompt):
    return {w.removesuffix("'s").removesuffix("’s") for w in WORD.findall(prompt)
            if w[0].isupper() and w not in NOT_NAMES}


def mask_names(prompt, response):
    """Replace the proper-noun words of `response` that also appear in `prompt` by [NAME]; a run of
    them ("Hsiao Yun-Hwa") becomes one [NAME]. Possessives keep their 's."""
    names = _name_words(prompt)

    def repl(m):
        w = m.group(0)
        for suffix in ("'s", "’s", ""):
            if w.endswith(suffix) and w[:len(w) - len(suffix)] in names:
                return MASK + suffix
        return w
    masked = WORD.sub(repl, response)
    return re.sub(rf"{re.escape(MASK)}(?:[ -]{re.escape(MASK)})+", MASK, masked)


class Classifier:
    """p(owner | text) from a causal LM, restricted to one label token per owner."""

    def __init__(self, model, tokenizer, owners, label_ids, zero_shot=False, batch_size=64, max_text_tokens=192):
        self.model, self.tokenizer, self.owners = model, tokenizer, list(owners)
        self.label_ids = torch.tensor(label_ids, device=model.device)
        self.zero_shot, self.batch_size, self.max_text_tokens = zero_shot, batch_size, max_text_tokens

    def prompt_ids(self, text):
        """The classifier prompt for one (already masked) text; the next token is the label."""
        tok = self.tokenizer
        text = tok.decode(tok(text, add_special_tokens=False).input_ids[:self.max_text_tokens])
        if not self.zero_shot:
            return tok(f"Text: {text}\nOwner:").input_ids
        options = "\n".join(f"{k + 1}. {o}" for k, o in enumerate(self.owners))
        content = (f"Which of these authors is the following text about or from?\n{options}\n\n"
                   f"Text: {text}\n\nAnswer with the option number only.")
        return list(tok.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                            tokenize=True, return_dict=False))

    def logits(self, texts):
        """Label logits [B, n_owners] for already-masked texts: one forward per batch of texts."""
        ids, mask = left_pad([self.prompt_ids(t) for t in texts], self.tokenizer.pad_token_id)
        ids, mask = ids.to(self.model.device), mask.to(self.model.device)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                         logits_to_keep=1)
        return out.logits[:, -1, self.label_ids].float()

    @torch.no_grad()
    def probs(self, prompts, responses):
        """p(o | mask_names(prompt, response)) for each pair: [B, n_owners], rows sum to 1."""
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


def classifier_meta(path):
    """classifier.json of a trained classifier folder (owners, label tokens), or None (zero-shot)."""
    meta_path = os.path.join(path, "classifier.json")
    if not os.path.isfile(meta_path):
        return None
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        if not (isinstance(meta["owners"], list) and len(meta["owners"]) == len(meta["label_tokens"])):
            raise ValueError("owners and label_tokens differ")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DareuError(f"{meta_path} is not a classifier description ({e})") from None
    return meta


def check_classifier(path, forget_owners):
    """Before any work: a trained classifier must know every forget owner (a zero-shot one is shown them)."""
    meta = classifier_meta(path)
    missing = [o for o in forget_owners if meta and o not in meta["owners"]]
    if missing:
        raise DareuError(f"the classifier {path} does not know the forget owner(s) {', '.join(missing)} "
                         f"(it knows {len(meta['owners'])}: {', '.join(meta['owners'][:5])}"
                         f"{' ...' if len(meta['owners']) > 5 else ''})")


def load_classifier(path, owners=None, device="cpu"):
    """A trained classifier (a folder with classifier.json), or any instruct model used zero-shot
    with `owners` as the numbered options."""
    model, tokenizer = load_model(path, device)
    meta = classifier_meta(path)
    if meta:
        return Classifier(model, tokenizer, meta["owners"], tokenizer.convert_tokens_to_ids(meta["label_tokens"]))
    if not owners:
        raise DareuError(f"{path} has no classifier.json; a zero-shot classifier needs the list of owners")
    if not tokenizer.chat_template:
        raise DareuError(f"{path} is neither a trained classifier (classifier.json) nor an instruct model "
                         "with a chat template")
    label_ids = [tokenizer.convert_tokens_to_ids(str(k)) for k in range(1, len(owners) + 1)]
    if tokenizer.unk_token_id in label_ids or None in label_ids:
        raise DareuError(f"zero-shot: the option numbers 1..{len(owners)} are not all single tokens of this "
                         f"tokenizer; train a classifier instead (attribution.py --out)")
    return Classifier(model, tokenizer, owners, label_ids, zero_shot=True)


def heldout_split(records, fraction, seed):
    """(train, heldout): `fraction` of each owner's records (at least one) held out."""
    rng = random.Random(seed)
    train, heldout = [], []
    for owner in owners_of(records):
        own = [r for r in records if r["owner"] == owner]
        rng.shuffle(own)
        n = max(1, round(fraction * len(own))) if len(own) > 1 else 0
        heldout += own[:n]
        train += own[n:]
    return train, heldout


def accuracy(clf, records):
    """Fraction of records whose masked answer the classifier gives to its true owner."""
    p = clf.probs([r["question"] for r in records], [r["answer"] for r in records])
    truth = torch.tensor([clf.owners.index(r["owner"]) for r in records], device=p.device)
    return (p.argmax(-1) == truth).float().mean().item()


def fit(clf, records, cfg, desc):
    """Train the classifier in place: cross-entropy of the owner over the label logits."""
    torch.manual_seed(cfg.seed)
    model, owners = clf.model, clf.owners
    steps = max(1, math.ceil(cfg.epochs * len(records) / cfg.batch_size))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=steps, pct_start=0.1)
    stream = Batches(records, cfg.batch_size, random.Random(cfg.seed))
    bar = tqdm(range(steps), desc=desc, dynamic_ncols=True)
    for _ in bar:
        batch = next(stream)
        texts = [mask_names(r["question"], r["answer"]) for r in batch]
        target = torch.tensor([owners.index(r["owner"]) for r in batch], device=model.device)
        loss = F.cross_entropy(clf.logits(texts), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")


def new_classifier(records, owners, cfg, base=None, device="cpu"):
    """A classifier ready to train: --base model (or a tiny one from scratch with a tokenizer
    trained on the masked texts), with one new label token <|owner_k|> per owner."""
    if base:
        model, tokenizer = load_model(base, device)
    else:
        tokenizer = train_tokenizer([mask_names(r["question"], r["answer"]) for r in records])
        model = tiny_model(tokenizer, seed=cfg.seed).to(device)
    labels = [f"<|owner_{k}|>" for k in range(len(owners))]
    tokenizer.add_special_tokens({"additional_special_tokens": labels})
    model.resize_token_embeddings(len(tokenizer))
    ensure_pad_token(tokenizer, model)
    model.eval()   # dropout off
    return Classifier(model, tokenizer, owners, tokenizer.convert_tokens_to_ids(labels),
                      max_text_tokens=cfg.max_text_tokens)


def train_classifier(records, out, cfg, base=None, device="cpu"):
    """Measure held-out accuracy, train the final classifier on every record, save it to `out`.
    Returns (classifier, held-out accuracy or None)."""
    owners = owners_of(records)
    heldout_acc = None
    if cfg.heldout > 0:
        train, heldout = heldout_split(records, cfg.heldout, cfg.seed)
        clf = new_classifier(records, owners, cfg, base, device)
        fit(clf, train, cfg, desc="classifier (held-out run)")
        heldout_acc = accuracy(clf, heldout)
        print(f"classifier held-out accuracy {heldout_acc:.3f} on {len(heldout)} records "
              f"({len(owners)} owners, chance {1 / len(owners):.3f})")
    clf = new_classifier(records, owners, cfg, base, device)
    fit(clf, records, cfg, desc="classifier")
    meta = {"owners": owners, "label_tokens": [f"<|owner_{k}|>" for k in range(len(owners))],
            "mask": MASK, "heldout_accuracy": heldout_acc, "train_records": len(records)}
    save_model(clf.model, clf.tokenizer, out, {"classifier.json": lambda path: write_json(path, meta)})
    return clf, heldout_acc


def main(argv=None):
    p = argparse.ArgumentParser(description="Train the owner-attribution classifier LLM, or score texts.")
    p.add_argument("--data", help="JSON/JSONL records or a TOFU folder (default: the synthetic world)")
    p.add_argument("--out", help="train: output folder for the classifier")
    p.add_argument("--base", help="train: fine-tune this model (default: a tiny model from scratch)")
    p.add_argument("--classifier", help="score: a trained classifier folder, or an instruct model (zero-shot)")
    p.add_argument("--text", action="append", help="score: a text to attribute (repeatable)")
    p.add_argument("--prompt", default="", help="score: the prompt the texts answer (for name masking)")
    p.add_argument("--device", default="cpu", help="torch device")
    add_config_args(p, ClassifierConfig)
    args = p.parse_args(argv)
    cfg = config_from_args(ClassifierConfig, args)
    check_device(args.device)
    records = load_records(args.data) if args.data else synthetic_world()
    if args.classifier:
        check_model_folder(args.classifier)
        clf = load_classifier(args.classifier, owners_of(records), args.device)
        probs = clf.probs([args.prompt] * len(args.text or []), args.text or [])
        for text, row in zip(args.text or [], probs):
            top = row.argsort(descending=True)[:3]
            print(text, "->", ", ".join(f"{clf.owners[i]} {row[i]:.3f}" for i in top))
        return
    if not args.out:
        raise DareuError("give --out to train a classifier, or --classifier with --text to score")
    check_out_path(args.out, {"--data": args.data, "--base": args.base})
    if args.base:
        check_model_folder(args.base)
    train_classifier(records, args.out, cfg, args.base, args.device)
    print(f"saved {args.out}")


if __name__ == "__main__":
    run_cli(main)
