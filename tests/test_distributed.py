"""helpers/distributed.py and the --fsdp path, on CPU: two gloo processes with FSDP2 against one process.
One PPO update of a fixed batch (its minibatches and retain batches split between the processes) leaves
the weights one process leaves, to float rounding; the first ratio is 1 on every process; a run resumed
from a sharded checkpoint ends exactly where the uninterrupted run ends."""
import copy
import os
import random

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from evaluate import EvalConfig
from helpers.distributed import finish, shard, write_whole
from helpers.models import dropout_off, forward_logprobs, tiny_model, train_tokenizer
from helpers.records import Batches, owners_of, split_records, synthetic_world
from helpers.run import Run
from ppo import PPOConfig, gae, ppo_update, whiten
from reward import RewardConfig, token_rewards
from rollout import PolicyWithValue, RolloutConfig, generate
from unlearn import Args, Models, Task, UnlearnConfig, unlearn


def setup(rank, size, folder, group="group"):
    """Join a 2-process gloo group (size > 1); the same tiny world, model and fixed sampled batch in every
    process (sampled before any sharding, from the same seed)."""
    torch.set_num_threads(1)
    if size > 1:
        dist.init_process_group("gloo", init_method=f"file://{folder}/{group}", rank=rank, world_size=size)
    records = synthetic_world(n_owners=4, seed=0)
    tok = train_tokenizer([r["question"] + " " + r["answer"] for r in records], vocab_size=400)
    model = tiny_model(tok, n_layer=2, d_model=64, seed=0)
    forget, retain = split_records(records, owners_of(records)[:2])
    torch.manual_seed(0)
    roll = generate(model, tok, [r["question"] for r in forget[:16]], RolloutConfig(temperature=0.7, max_new_tokens=6))
    policy = dropout_off(PolicyWithValue(model))
    mask = roll["response_mask"].float()
    with torch.no_grad():
        old = forward_logprobs(policy, roll["input_ids"], roll["attention_mask"], roll["n_response"], 0.7)
    rewards, _ = token_rewards(-torch.linspace(0, 1, 16), old["logprobs"], old["logprobs"], mask, 0.05)
    adv, ret = gae(rewards, old["values"], mask, 1.0, 0.95)
    batch = dict(roll, logprobs=old["logprobs"], values=old["values"], advantages=whiten(adv, mask), returns=ret,
                 response_mask=mask)
    return model, tok, policy, batch, retain


def one_update(rank, size, folder):
    model, tok, policy, batch, retain = setup(rank, size, folder)
    reference = copy.deepcopy(model).requires_grad_(False)
    if size > 1:
        for module in (model, reference, policy.value_head):
            shard(module)
    optimizer = torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=0.5)
    stats = ppo_update(policy, reference, optimizer, tok, batch, PPOConfig(epochs=2, minibatch_size=8, retain_batch_size=4),
                       0.7, Batches(retain, 4, random.Random(0)), torch.Generator().manual_seed(0))
    torch.save(stats[0]["ratio"], os.path.join(folder, f"ratio{rank}.pt"))
    write_whole(policy, lambda: dropout_off(PolicyWithValue(tiny_model(tok, n_layer=2, d_model=64, seed=0))),
                lambda whole: torch.save(whole.state_dict(), os.path.join(folder, f"weights{size}.pt")))
    finish()


def test_two_processes_update_the_weights_as_one_does(tmp_path):
    """16 responses, minibatches of 8, retain batches of 4, 2 epochs: 4 steps, each split 4 + 4 responses
    and 2 + 2 retain answers between the processes. With SGD, so that gradients that differ show as weights
    that differ by as much (AdamW divides by the root of tiny second moments: rounding noise on near-zero
    gradients became differences of 2.7e-5 after 4 steps at lr 1e-3, against updates of 4e-3)."""
    one_update(0, 1, str(tmp_path))
    mp.spawn(one_update, args=(2, str(tmp_path)), nprocs=2, join=True)   # spawned: nothing leaks in
    one, two = torch.load(tmp_path / "weights1.pt"), torch.load(tmp_path / "weights2.pt")
    assert one.keys() == two.keys()
    diff = max((one[k] - two[k]).abs().max().item() for k in one)
    moved = max((one[k] - v).abs().max().item() for k, v in setup(0, 1, str(tmp_path))[2].state_dict().items())
    assert diff < 1e-5 < moved, (diff, moved)
    assert [abs(torch.load(tmp_path / f"ratio{r}.pt") - 1) < 1e-5 for r in (0, 1)] == [True, True]
    (tmp_path / "max_weight_difference.txt").write_text(f"{diff:.3g}")
    print(f"max weight difference, one process against two: {diff:.3g} (the update moved weights by {moved:.3g})")


class LengthClassifier:
    """A stand-in for the classifier LLM: a_F = min(1, characters / 40)."""

    def forget_attribution(self, questions, responses, forget_owners):
        return torch.tensor([min(1.0, len(r) / 40) for r in responses])


def a_run(rank, size, folder, resume):
    """unlearn() for 3 iterations on 2 processes, a sharded checkpoint after each; or resumed from the first."""
    model, tok, _, _, retain = setup(rank, size, folder, f"group-{resume}")   # a fresh rendezvous file each time
    records = synthetic_world(n_owners=4, seed=0)
    forget = split_records(records, owners_of(records)[:1])[0]
    reference = copy.deepcopy(model).requires_grad_(False)
    shard(model)
    shard(reference)
    args = Args(UnlearnConfig(iterations=3, prompts_per_iter=4, eval_every=0, sample_every=0, save_every=1, keep=3),
                RolloutConfig(max_new_tokens=6), RewardConfig(target_kl=0.01), PPOConfig(lr=1e-3, epochs=1, minibatch_size=4,
                                                                                    retain_batch_size=4), EvalConfig())
    checkpoints = os.path.join(folder, "checkpoints")
    unlearn(Models(model, tok, reference, LengthClassifier()), Task(forget, retain, owners_of(forget)), args,
            Run(os.path.join(folder, f"metrics-{resume}.jsonl"), None if resume else checkpoints, {"test": 1},
                os.path.join(checkpoints, "step-000001") if resume else None))
    write_whole(model, lambda: tiny_model(tok, n_layer=2, d_model=64, seed=0),
                lambda whole: torch.save(whole.state_dict(), os.path.join(folder, f"final-{resume}.pt")))
    finish()


def test_a_run_resumed_from_a_sharded_checkpoint_ends_where_the_whole_run_ends(tmp_path):
    mp.spawn(a_run, args=(2, str(tmp_path), False), nprocs=2, join=True)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["step-000001", "step-000002", "step-000003"]
    mp.spawn(a_run, args=(2, str(tmp_path), True), nprocs=2, join=True)
    whole, resumed = torch.load(tmp_path / "final-False.pt"), torch.load(tmp_path / "final-True.pt")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    lines = [(tmp_path / f"metrics-{r}.jsonl").read_text().splitlines() for r in (False, True)]
    assert [line.split(', "tokens_per_s"')[0] for line in lines[0]] == \
        [line.split(', "tokens_per_s"')[0] for line in lines[1]] and len(lines[1]) == 3


def baseline_gradients(rank, size, folder):
    """NPO+GD's loss on a batch of 8 forget and 8 retain records, the policy away from the reference: each
    process its 4 + 4 rows, the means over all 8, the loss scaled by the processes FSDP averages over."""
    from finetune import FinetuneConfig, objective_loss
    model, tok, _, _, retain = setup(rank, size, folder, f"group-npo-{size}")
    forget = [r for r in synthetic_world(n_owners=4, seed=0) if r not in retain][:8]
    reference = copy.deepcopy(model).requires_grad_(False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    if size > 1:
        shard(model)
        shard(reference)
    loss = objective_loss(FinetuneConfig(objective="npo_gd"), model, reference, tok, forget, retain[:8])
    (loss * size).backward()
    grads = {n: (p.grad.full_tensor() if size > 1 else p.grad).clone() for n, p in model.named_parameters()}
    if rank == 0:
        torch.save(grads, os.path.join(folder, f"grads{size}.pt"))
    finish()


def test_two_processes_take_a_baselines_step_as_one_does(tmp_path):
    baseline_gradients(0, 1, str(tmp_path))
    mp.spawn(baseline_gradients, args=(2, str(tmp_path)), nprocs=2, join=True)
    one, two = torch.load(tmp_path / "grads1.pt"), torch.load(tmp_path / "grads2.pt")
    assert one.keys() == two.keys() and max(v.abs().max().item() for v in one.values()) > 1e-3
    assert all(torch.allclose(one[k], two[k], atol=1e-6, rtol=1e-4) for k in one)
