"""Several processes, one model (`torchrun --nproc-per-node N unlearn.py ... --fsdp`): PyTorch's FSDP2 shards
each decoder layer's weights, gradients and AdamW state across the processes. With one process every
function here is the identity, so the algorithm reads the same either way.

  rank_and_size()   which process this is, of how many ((0, 1) without torch.distributed),
  share(items)      this process's part of a list (items[rank::size]),
  all_sum(x)        x summed over the processes,
  full(x)           a sharded tensor whole (a gradient norm computed by FSDP2),
  gather(obj)       every process's `obj`, in rank order (small Python objects: a rollout's rows),
  start(device)     join the process group torchrun set up; the device of this process,
  shard(model)      FSDP2 on every decoder layer, then on the whole model,
  finish()          wait for every process, leave the process group, end the process,
and the harness's: work done on process 0 first, one staging folder for all, the whole model written by
process 0, and sharded checkpoints (torch.distributed.checkpoint) for --resume.
"""
import os
import shutil
import sys

import torch
import torch.distributed as dist

from helpers.cli import DareuError, checkpoints, publish, staging_dir, write_json


def rank_and_size():
    return (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)


def share(items):
    rank, size = rank_and_size()
    return items[rank::size]


def all_sum(x):
    """x (a number or a tensor) summed over the processes: a float, or a tensor on x's device."""
    if rank_and_size()[1] == 1:
        return x
    device = x.device if isinstance(x, torch.Tensor) and dist.get_backend() == "nccl" else "cpu"
    total = torch.as_tensor(x, dtype=torch.float64).detach().clone().to(device)
    dist.all_reduce(total)
    return total.to(x.device, x.dtype) if isinstance(x, torch.Tensor) else total.item()


def full(x):
    """A tensor whole on every process (an FSDP2 DTensor's full value; any other tensor as it is)."""
    return x.full_tensor() if hasattr(x, "full_tensor") else x


def gather(obj):
    """[obj of rank 0, obj of rank 1, ...] on every process ([obj] with one)."""
    if rank_and_size()[1] == 1:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def start(device):
    """Join torchrun's process group (gloo on CPUs, nccl on GPUs); the device of this process: `device`,
    or cuda:LOCAL_RANK on GPUs. Refuses --fsdp outside torchrun."""
    if "WORLD_SIZE" not in os.environ:
        raise DareuError("--fsdp runs under torchrun: torchrun --nproc-per-node N unlearn.py ... --fsdp")
    cuda = torch.device(device).type == "cuda"
    if cuda:
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    if dist.get_rank() > 0:   # one voice: the others print nothing (their progress bars still show)
        sys.stdout = open(os.devnull, "w", encoding="utf-8")
    return device


def shard(model):
    """FSDP2 on each decoder layer (the modules of the model's layer list, if it has one), then on the whole
    model: each process keeps 1/N of every weight, gradient and AdamW state, and gathers a layer's weights
    only while that layer runs."""
    from torch.distributed.fsdp import fully_shard
    layers = next((m for m in model.modules() if isinstance(m, torch.nn.ModuleList)), [])
    for layer in layers:
        fully_shard(layer)
    fully_shard(model)
    return model


def finish():
    """The last call of a process that joined a group: wait for every process, leave the group, and end the
    process here (exit status 0) without the interpreter's shutdown. A gloo thread can still release a
    tensor after destroy_process_group; if it takes the GIL while the interpreter is finalising, the
    process aborts with "terminate called without an active exception" (SIGABRT), after every output was
    written: seen twice in CI, once on each process. With one process, nothing."""
    if rank_and_size()[1] > 1:
        dist.barrier()
        dist.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def on_rank_0_first(fn):
    """fn() on process 0, then, once it is done, on the others (e.g. building a cache they then read)."""
    rank, size = rank_and_size()
    result = fn() if rank == 0 else None
    if size > 1:
        dist.barrier()
    return result if rank == 0 else fn()


def same_path(make):
    """make() on process 0 (a fresh staging folder, say), the same path on every process."""
    return gather(make() if rank_and_size()[0] == 0 else None)[0]


def write_whole(model, rebuild, write):
    """write(model) with one process. With several, every process takes part in gathering the whole state
    dict onto process 0 (on the CPU), which loads it into rebuild(), a plain model of the same shape, and
    writes that; the others wait until it is written."""
    if rank_and_size()[1] == 1:
        return write(model)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank_and_size()[0] == 0:
        plain = rebuild()
        plain.load_state_dict(state)
        write(plain)
    dist.barrier()


def save_sharded(folder, step, module, optimizer, state, args, keep):
    """A checkpoint of several processes, folder/step-NNNNNN as helpers/cli.save_checkpoint writes one: the
    module's and AdamW's shards with torch.distributed.checkpoint, each process's own `state` (its random
    generators, …) in state.pt (process 0) or state.rank<r>.pt, written into one staging folder that
    process 0 publishes once every process is done; then all but the last `keep` are deleted."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict
    path, rank = os.path.join(folder, f"step-{step:06d}"), rank_and_size()[0]
    stage = same_path(lambda: staging_dir(path))
    model_state, optim_state = get_state_dict(module, optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=stage)
    torch.save(state, os.path.join(stage, "state.pt" if rank == 0 else f"state.rank{rank}.pt"))
    dist.barrier()
    if rank == 0:
        write_json(os.path.join(stage, "args.json"), args)
        publish(stage, path)
        for old in checkpoints(folder)[:-keep]:
            shutil.rmtree(old)
    dist.barrier()


def load_sharded(path, module, optimizer):
    """The shards of a checkpoint written by save_sharded into `module` and `optimizer` (on the same number
    of processes); returns this process's own state."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    model_state, optim_state = get_state_dict(module, optimizer)
    dcp.load({"model": model_state, "optimizer": optim_state}, checkpoint_id=path)
    set_state_dict(module, optimizer, model_state_dict=model_state, optim_state_dict=optim_state)
    rank = rank_and_size()[0]
    return torch.load(os.path.join(path, "state.pt" if rank == 0 else f"state.rank{rank}.pt"), map_location="cpu",
                      weights_only=True)
