"""torch.distributed for training and decoding: launch detection, process groups, batch plans.

wavediff does not launch processes itself: ``torchrun`` (or SLURM's ``srun`` with the
standard variables, or any launcher that sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``) starts one process per GPU, and
:func:`init_distributed` joins them: NCCL on CUDA, gloo on the CPU.

The global batch (``train.batch_size``) is a config value that does not depend on the
number of processes. :class:`BatchPlan` splits it into ``world_size * grad_accum``
micro-batches whose sizes differ by at most one (a global batch that does not divide
evenly is not an error); each micro-batch's loss is weighted by its number of samples, so
one optimisation step equals one step on the whole global batch in a single process.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from wavediff.errors import ConfigError, WavediffError
from wavediff.hardware import pick_device

log = logging.getLogger("wavediff.distributed")

T = TypeVar("T")
_LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly one-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None  # "nccl", "gloo"; None when not distributed
    device: str = "cpu"

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        if not self.enabled:
            return "one process"
        return f"rank {self.rank} of {self.world_size} ({self.backend}, {self.device})"


def launched_distributed() -> bool:
    """True when a launcher such as torchrun started this process as part of a group."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def init_distributed(device: str = "auto", timeout_minutes: float = 30.0) -> DistInfo:
    """Join the process group a launcher set up, or describe a single process.

    ``device``: ``auto``, ``cpu`` or ``cuda`` (a ``cuda:N`` index is replaced by
    ``LOCAL_RANK``: each process drives its own GPU). Returns the :class:`DistInfo`;
    call :func:`cleanup` at the end.
    """
    if not launched_distributed():
        return DistInfo(device=_single_device(device))
    missing = [v for v in _LAUNCH_VARS if v not in os.environ]
    if missing:
        raise WavediffError(
            f"RANK and WORLD_SIZE are set but {', '.join(missing)} is not; start wavediff "
            f"with torchrun (torchrun --nproc_per_node N -m wavediff ...)"
        )
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    want_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if want_cuda:
        if not torch.cuda.is_available():
            raise WavediffError(f"--device {device} was asked for but CUDA is not available; "
                                f"use --device cpu (gloo)")
        if local_rank >= torch.cuda.device_count():
            raise WavediffError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) visible; "
                f"lower --nproc_per_node to the number of GPUs per node"
            )
        torch.cuda.set_device(local_rank)
        backend, dev = "nccl", f"cuda:{local_rank}"
    else:
        backend, dev = "gloo", "cpu"
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {"timeout": datetime.timedelta(minutes=timeout_minutes)}
        if backend == "nccl":
            kwargs["device_id"] = torch.device(dev)
        dist.init_process_group(backend, rank=rank, world_size=world, **kwargs)
    info = DistInfo(rank=rank, world_size=world, local_rank=local_rank, backend=backend, device=dev)
    log.debug("joined the process group: %s", info.describe())
    return info


def _single_device(device: str) -> str:
    return str(pick_device(device))


def cleanup(info: DistInfo, finished: bool = False) -> None:
    """Leave the process group (a no-op for a single process). ``finished``: every rank
    completed the same work; they first wait for each other, so that no rank tears its
    connections down while another still uses them."""
    if info.enabled and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        if info.backend == "nccl":
            dist.barrier(device_ids=[info.local_rank])
        else:
            dist.barrier()


def all_agree(info: DistInfo, ok: bool) -> bool:
    """True on every rank when ``ok`` is true on every rank (a collective)."""
    if not info.enabled:
        return ok
    flag = torch.tensor([0.0 if ok else 1.0], device=info.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return float(flag) == 0.0


def gather_objects(info: DistInfo, obj: T) -> list[T]:
    """``obj`` of every rank, in rank order (picklable Python objects; a collective)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def shard(items: Sequence[T], info: DistInfo) -> list[T]:
    """This rank's share of ``items``: every ``world_size``-th item from ``rank`` on."""
    return list(items[info.rank::info.world_size])


def file_seed(seed: int, name: str) -> int:
    """A 63-bit seed derived from ``seed`` and a file name: a file's noise then depends on
    neither the order of decoding nor the number of processes."""
    digest = hashlib.sha256(f"{seed}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


# ---------------------------------------------------------------------- batches
def split_sizes(total: int, parts: int) -> list[int]:
    """``total`` items in ``parts`` contiguous chunks whose sizes differ by at most one."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


@dataclass(frozen=True)
class BatchPlan:
    """How one global batch is split over ranks and accumulation micro-steps.

    Micro-batch ``(rank, a)`` is chunk ``rank * grad_accum + a`` of the global batch; it
    holds ``sizes[rank][a]`` samples starting at ``offsets[rank][a]``.
    """

    global_batch: int
    world_size: int = 1
    grad_accum: int = 1

    def __post_init__(self) -> None:
        parts = self.world_size * self.grad_accum
        if self.global_batch < parts:
            raise ConfigError(
                f"train.batch_size {self.global_batch} is smaller than the {parts} micro-batches "
                f"of {self.world_size} process(es) x train.grad_accum {self.grad_accum}; raise "
                f"train.batch_size to at least {parts} or lower train.grad_accum"
            )

    @property
    def chunk_sizes(self) -> list[int]:
        return split_sizes(self.global_batch, self.world_size * self.grad_accum)

    def sizes(self, rank: int) -> list[int]:
        a = self.grad_accum
        return self.chunk_sizes[rank * a:(rank + 1) * a]

    def offsets(self, rank: int) -> list[int]:
        chunks = self.chunk_sizes
        start = sum(chunks[:rank * self.grad_accum])
        out = []
        for n in self.sizes(rank):
            out.append(start)
            start += n
        return out

    @property
    def even(self) -> bool:
        return len(set(self.chunk_sizes)) == 1

    def describe(self) -> str:
        chunks = self.chunk_sizes
        layout = (f"{self.world_size} process(es) x {self.grad_accum} accumulation step(s) "
                  f"of {chunks[0]} sample(s)")
        if self.even:
            return f"global batch {self.global_batch} = {layout}"
        sizes = sorted(set(chunks), reverse=True)
        return (f"global batch {self.global_batch} does not divide into "
                f"{self.world_size * self.grad_accum} micro-batches: they hold "
                f"{' or '.join(map(str, sizes))} samples, each loss weighted by its sample "
                f"count, so every step equals one step on a batch of {self.global_batch}")


class RankBatchSampler(Sampler):
    """This rank's micro-batches of a global-batch sampler, ``grad_accum`` per step.

    ``base`` yields one global batch (a list of items) per step, a pure function of the
    step; this sampler yields, for every step, the rank's ``grad_accum`` slices of it in
    order. Every rank thus sees a disjoint part of the same global batch.
    """

    def __init__(self, base: Any, plan: BatchPlan, rank: int) -> None:
        self.base = base
        self.batch_plan = plan
        self.rank = rank
        self._sizes = plan.sizes(rank)
        self._offsets = plan.offsets(rank)

    def __iter__(self) -> Iterator[list[Any]]:
        for batch in self.base:
            for off, n in zip(self._offsets, self._sizes):
                yield batch[off:off + n]

    def __len__(self) -> int:
        return len(self.base) * self.batch_plan.grad_accum
