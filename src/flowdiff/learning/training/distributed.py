"""Distributed helpers on `torch.distributed` (launched by `torchrun`): no-ops in a single process.

`init_from_env` starts the process group from torchrun's environment (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR/PORT): NCCL on CUDA, gloo on the CPU. The other helpers (rank,
world_size, is_main, barrier, broadcast_object, all_gather, all_reduce_mean, any_rank,
run_on_main) work the same with or without a process group, so the training loop has one path.

World-size-independent randomness: while a `Shard` is active (`sharded(...)`), every training
draw made through `flowdiff.learning.losses.draw` (and the minibatch index) draws the randomness
of the whole global batch from generators that are identical on every rank, and keeps this rank's
slice of it. A run on N ranks therefore draws exactly what one process draws for the same global
batch (docs/distributed.md).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from flowdiff.errors import FlowdiffError, IncompatibleError


def active() -> bool:
    """True when a process group of more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_rank() -> int:
    """This process's rank on its machine, from torchrun's LOCAL_RANK (0 when not launched by torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """True on rank 0, the process that writes files and prints."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    """True when torchrun's environment variables (RANK, WORLD_SIZE, MASTER_ADDR) are set."""
    return all(key in os.environ for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR"))


def init_from_env(device: str = "auto") -> bool:
    """Initialise the default process group from torchrun's environment; True if this call started it.

    Backend: NCCL when the run is on CUDA (device "auto" with CUDA available, or "cuda"), gloo
    otherwise; on CUDA, this process uses cuda:LOCAL_RANK. A no-op (False) outside torchrun or
    when the group is already initialised.
    """
    if not launched_by_torchrun() or not dist.is_available() or dist.is_initialized():
        return False
    cuda = torch.cuda.is_available() and str(device).split(":")[0] in ("auto", "cuda")
    if cuda:
        if local_rank() >= torch.cuda.device_count():
            raise IncompatibleError(f"local rank {local_rank()} has no GPU: this machine has "
                                    f"{torch.cuda.device_count()}; start at most that many processes per machine")
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return True


def close(wait: bool = True) -> None:
    """Destroy the default process group, if there is one; with `wait`, once every rank has arrived (a rank that
    tears its connections down while another still talks to it can abort at exit). A rank leaving on an error does
    not wait: the others may never arrive."""
    if dist.is_available() and dist.is_initialized():
        try:
            if wait:
                dist.barrier()
        finally:
            dist.destroy_process_group()


@contextlib.contextmanager
def process_group(device: str = "auto") -> Iterator[None]:
    """`init_from_env` for the duration of a block (a command run under torchrun); the group is closed after."""
    started = init_from_env(device)
    try:
        yield
    except BaseException:
        if started:
            close(wait=False)
        raise
    if started:
        close()


def training_device(device: torch.device) -> torch.device:
    """The device of this rank: cuda:LOCAL_RANK when training on CUDA under a process group."""
    if device.type == "cuda" and active():
        return torch.device("cuda", local_rank())
    return device


def barrier() -> None:
    """Wait until every rank arrives here (a no-op in one process)."""
    if active():
        dist.barrier()


def broadcast_object(value: object, source: int = 0) -> object:
    """`value` of rank `source` on every rank (a picklable object; returned as is in one process)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=source)
    return box[0]


def all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """The tensors of all ranks (equal shapes) concatenated along dim 0 in rank order; itself in one process."""
    if not active():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of `tensor` over the ranks (a new tensor; a copy in one process)."""
    out = tensor.detach().clone()
    if active():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= world_size()
    return out


def any_rank(flag: bool, device: torch.device | None = None) -> bool:
    """True if `flag` is true on any rank (so that all ranks take the same branch)."""
    if not active():
        return bool(flag)
    value = torch.tensor(1.0 if flag else 0.0, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def run_on_main(action: Callable[[], object]) -> object:
    """Run `action` on rank 0 while the other ranks wait; every rank returns its result or raises its error.

    The result (or the exception) is broadcast, so that a failure on rank 0 — a locked run
    directory, a full disk — stops every rank with the same message instead of leaving them waiting.
    """
    if not active():
        return action()
    outcome: tuple[bool, object] = (True, None)
    failure: Exception | None = None
    if is_main():
        try:
            outcome = (True, action())
        except Exception as error:  # sent to every rank, raised everywhere below
            failure, outcome = error, (False, _portable(error))
    ok, value = broadcast_object(outcome)
    if not ok:
        raise failure if failure is not None else value
    return value


def _portable(error: Exception) -> Exception:
    """The error itself if it survives pickling (to be raised on the other ranks), else a FlowdiffError naming it."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return FlowdiffError(f"{type(error).__name__} on rank 0: {error}")


def run_everywhere(action: Callable[[], object]) -> object:
    """Run `action` on every rank; if it fails on any rank, every rank raises (its own error, or one naming it).

    Keeps the ranks together when a step can fail on some of them only (reading a checkpoint).
    """
    try:
        result, failed = action(), None
    except Exception as error:
        result, failed = None, error
    if any_rank(failed is not None):
        if failed is not None:
            raise failed
        raise FlowdiffError(f"another process failed where rank {rank()} did not; see its message")
    return result


def split_rows(fn: Callable[..., torch.Tensor], x0: torch.Tensor, y: torch.Tensor | None = None,
               **kwargs) -> torch.Tensor:
    """fn(x0=..., y=..., **kwargs) of this rank's share of the rows of x0 (and y); every rank's rows gathered.

    `fn` maps rows to rows of the same shape (a sampler from its start points). Every rank passes
    the same x0 (drawn from identically seeded generators), so every rank returns the single
    process's fn(x0, y), up to the effect of the batch size on floating-point sums.
    """
    if not active():
        return fn(x0=x0, y=y, **kwargs)
    parts = torch.tensor_split(torch.arange(len(x0), device=x0.device), world_size())
    mine, size = parts[rank()], max(len(part) for part in parts)
    padded = torch.zeros((size, *x0.shape[1:]), dtype=x0.dtype, device=x0.device)
    if len(mine):
        padded[:len(mine)] = fn(x0=x0[mine], y=None if y is None else y[mine], **kwargs)
    gathered = all_gather(padded)
    return torch.cat([gathered[r * size:r * size + len(part)] for r, part in enumerate(parts)])


class DistributedModel(DistributedDataParallel):
    """`DistributedDataParallel` that also answers the wrapped network's attributes (num_classes, config...)."""

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The network under DDP (gradients averaged over the ranks) in a process group, else itself."""
    if not active():
        return model
    return DistributedModel(model, device_ids=[device.index] if device.type == "cuda" else None)


@dataclass(frozen=True)
class Shard:
    """This rank's slice of a global batch: examples [rank * n, (rank + 1) * n) of world_size * n.

    `gather_couplings`: couplings that pair the whole batch (minibatch OT) see the global batch
    (False: each rank pairs its own slice).
    """

    rank: int = 0
    world_size: int = 1
    gather_couplings: bool = True

    def local(self, tensor: torch.Tensor, size: int) -> torch.Tensor:
        """This rank's `size` rows of a tensor holding the global batch's rows."""
        return tensor[self.rank * size:(self.rank + 1) * size]


_SHARD: contextvars.ContextVar[Shard | None] = contextvars.ContextVar("flowdiff_shard", default=None)


def current_shard() -> Shard | None:
    """The active shard of the global batch (None outside `sharded`, or in one process)."""
    shard = _SHARD.get()
    return shard if shard is not None and shard.world_size > 1 else None


@contextlib.contextmanager
def sharded(shard: Shard | None) -> Iterator[None]:
    """Within this block, training draws are drawn for the global batch and sliced to `shard`."""
    token = _SHARD.set(shard)
    try:
        yield
    finally:
        _SHARD.reset(token)


def shard_of_this_rank(gather_couplings: bool = True) -> Shard:
    """The `Shard` of this process in the current process group."""
    return Shard(rank(), world_size(), gather_couplings)
