"""Worlds: the models a DareU run needs, built from owner-labelled records by the same stages a user
runs, and cached. Used by the embedded default of unlearn.py and by bench/tofu_mini.py.

A world is a folder holding
    records.jsonl       the owner-labelled records (helpers/records.py)
    original/           a tiny Llama trained from scratch on every owner (finetune.py, sft)
    retain/             the same, trained without the forget owners: the reference DareU aims for
                        (the synthetic world's two also train on renamed copies of their records,
                        so that, as a pretrained model does, they repeat a name they never saw)
    classifier/         the attribution classifier, masked answer -> owner (attribution.py)
    world.json          the forget owners, losses, held-out accuracy and wall times
built in a staging folder and moved into place when complete, so a cached world is always whole.

    python world.py                      # build (or find) the embedded default world; prints its folder
"""
import argparse
import json
import os
import random
import shutil
import time

import torch

from attribution import ClassifierConfig, train_classifier
from finetune import FinetuneConfig, finetune
from helpers.cli import HelpFormatter, publish, run_cli, staging_dir, write_json, write_jsonl
from helpers.models import save_model, tiny_model, train_tokenizer, trainable_model
from helpers.records import FIRST, LAST, owners_of, split_records, synthetic_world

WORLD_VERSION = "v4"   # bump when what build_world makes changes, so old caches are not reused


def cache_dir():
    """Where built worlds (and the SmolLM2 folder) are cached: $DAREU_CACHE, else ~/.cache/dareu."""
    return os.environ.get("DAREU_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "dareu")


def renamed_copies(records, seed):
    """One copy of each synthetic-world record (owner = name) with the owner's name, in question and
    answer, swapped for an invented one (a FIRST and a LAST name no owner has); the copy keeps its
    owner, so split_records puts it with its source. A from-scratch model cannot repeat a name it
    never saw: trained on the world alone, the retain model answers "Where was Nestor Tallis
    born?" with a retained owner's name, unlike a retrained LLM (METHOD.md §1: the retain model is what unlearning aims for). With these copies it
    learns to repeat the question's name, so its answers differ from the gold ones by the facts."""
    rng = random.Random(seed)
    owners = set(owners_of(records))
    invented = sorted(f"{a} {b}" for a in FIRST for b in LAST if f"{a} {b}" not in owners)
    copies = []
    for r in records:
        name = rng.choice(invented)
        copies.append({**r, "question": r["question"].replace(r["owner"], name),
                       "answer": r["answer"].replace(r["owner"], name)})
    return copies


def build_world(folder, records, forget, sft, classifier, layers=2, d_model=128, device="cpu", base=None,
                sft_records=None):
    """Build (once) the world of `records` with the owners `forget` to forget in `folder`; returns
    its world.json. Order: a BPE tokenizer on the fine-tuning text, the original model (all owners),
    the retain model (all but `forget`), each a tiny Llama from scratch (`layers`, `d_model`) or
    the pretrained `base` fine-tuned, by finetune.py with `sft` (a FinetuneConfig) on `sft_records`
    (default: `records`); the classifier, from scratch or from `base`, by attribution.py with
    `classifier` (a ClassifierConfig: held-out accuracy, then all records)."""
    meta_path = os.path.join(folder, "world.json")
    if os.path.isfile(meta_path):
        with open(meta_path, encoding="utf-8") as f:
            return json.load(f)
    start = time.time()
    stage = staging_dir(folder)
    try:
        meta = {"forget": list(forget), "owners": owners_of(records), "seed": sft.seed, "base": base}
        write_jsonl(os.path.join(stage, "records.jsonl"), records)
        sft_records = sft_records or records
        if not base:
            tokenizer = train_tokenizer([r["question"] + " " + r["answer"] for r in sft_records])
        for name, train in (("original", sft_records), ("retain", split_records(sft_records, forget)[1])):
            t0 = time.time()
            if base:
                model, tokenizer = trainable_model(base, device, torch.float32)
            else:
                model = tiny_model(tokenizer, layers, d_model, seed=sft.seed).to(device)
            meta[f"{name}_loss"] = finetune(model, tokenizer, train, sft, desc=f"world: {name} model")
            meta[f"{name}_seconds"] = round(time.time() - t0, 1)
            save_model(model, tokenizer, os.path.join(stage, name))
        t0 = time.time()
        _, scores = train_classifier(records, os.path.join(stage, "classifier"), classifier, base, device)
        meta["classifier_heldout_accuracy"], meta["classifier_heldout_ece"] = (scores["heldout_accuracy"],
                                                                               scores["heldout_ece"])
        meta["classifier_seconds"] = round(time.time() - t0, 1)
        meta["seconds"] = round(time.time() - start, 1)
        write_json(os.path.join(stage, "world.json"), meta)
        publish(stage, folder)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    print(f"built the world in {time.time() - start:.0f} s: {folder}")
    return meta


def default_world(seed=0, cache=None):
    """The embedded default: 8 fictitious authors of the synthetic world, the last one forgotten,
    in `cache` (default: cache_dir()), and holdout.jsonl: 8 more authors no model of it saw (the
    membership attacks' non-members). Returns (folder, world.json)."""
    folder = os.path.join(cache or cache_dir(), f"world-{WORLD_VERSION}-seed{seed}")
    records = synthetic_world(n_owners=8, seed=seed)
    meta = build_world(folder, records, owners_of(records)[-1:], FinetuneConfig(epochs=60.0, seed=seed),
                       ClassifierConfig(epochs=100.0, seed=seed), sft_records=records + renamed_copies(records, seed))
    if not os.path.isfile(os.path.join(folder, "holdout.jsonl")):
        owners = set(owners_of(records))
        write_jsonl(os.path.join(folder, "holdout.jsonl"),
                    [r for r in synthetic_world(n_owners=8, seed=seed + 1000) if r["owner"] not in owners])
    return folder, meta


def main():
    p = argparse.ArgumentParser(description="Build (or find) the embedded default world and print its folder.",
                                formatter_class=HelpFormatter)
    p.add_argument("--seed", type=int, default=0, help="the world's seed")
    folder, _ = default_world(p.parse_args().seed)
    print(folder)


if __name__ == "__main__":
    run_cli(main)
