"""Running on several processes under `torchrun`: this process's rank, its process group, and the share of work
that falls to it.

`torchrun` (PyTorch's launcher) starts one process per rank and tells each, through environment variables
(`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`), who it is and where to meet the others. The
same command run without `torchrun` is a group of one, and every collective here is then a no-op.

The collectives use gloo on CPUs and NCCL on GPUs. Ranks share the output folder, so several nodes need a shared
file system. A rank that fails leaves the others waiting in a collective; `torchrun` notices the failed process and
stops them, which is what ends such a run (with the failed rank named in its report).
"""

from __future__ import annotations

import atexit
import datetime
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence, TypeVar

from clear_sae.errors import ClearSaeError

if TYPE_CHECKING:
    import torch

T = TypeVar("T")

COLLECTIVE_TIMEOUT = datetime.timedelta(hours=24)
"""How long a rank waits in a collective before giving up. Long on purpose: a rank that has trained its share of
the layers waits at the closing barrier for the slowest one, possibly for hours; a rank that dies is noticed by
`torchrun`, not by this timeout."""


@dataclass
class ProcessGroup:
    """This process's place among the ranks of one run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    """The rank's index on its own node (which GPU it drives)."""

    @property
    def alone(self) -> bool:
        """Whether this is a run of one process (no collectives to do)."""
        return self.size == 1

    @property
    def leads(self) -> bool:
        """Whether this rank writes what the run writes once (manifests, indexes): rank 0."""
        return self.rank == 0

    def share(self, items: Sequence[T]) -> list[T]:
        """The items this rank takes when `items` are dealt out in turn: every `size`-th from the `rank`-th."""
        return list(items[self.rank :: self.size])

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if not self.alone:
            import torch.distributed as dist

            dist.barrier()

    def average(self, tensors: list["torch.Tensor"]) -> None:
        """Replace each tensor, in place, by its mean over the ranks."""
        if self.alone:
            return
        import torch.distributed as dist

        for tensor in tensors:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
            tensor.div_(self.size)

    def any(self, mask: "torch.Tensor") -> "torch.Tensor":
        """A bool mask true where it is true on any rank."""
        if self.alone:
            return mask
        import torch
        import torch.distributed as dist

        as_int = mask.to(torch.uint8)
        dist.all_reduce(as_int, op=dist.ReduceOp.MAX)
        return as_int.bool()

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value` (any JSON-like object), in rank order, on every rank."""
        if self.alone:
            return [value]
        import torch.distributed as dist

        values: list[Any] = [None] * self.size
        dist.all_gather_object(values, value)
        return values


def launched_ranks() -> int:
    """How many ranks `torchrun` started this run with (1 when it was started directly)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ClearSaeError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number; launch with torchrun") from None


def join(device: str = "cpu") -> ProcessGroup:
    """This process's group: joined on first call when `torchrun` started several ranks (gloo for a CPU run, NCCL
    for a CUDA one), a group of one otherwise."""
    size = launched_ranks()
    if size == 1:
        return ProcessGroup()
    import torch
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.device(device).type == "cuda"
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if cuda else "gloo", timeout=COLLECTIVE_TIMEOUT)
        atexit.register(leave)
    return ProcessGroup(rank, size, local_rank)


def leave() -> None:
    """Tear down the process group this process joined, if any. `join` registers it to run at exit: a gloo group
    left to the interpreter's own shutdown can abort the process (SIGABRT, "terminate called without an active
    exception") after its work is done, which fails the whole run."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def rank_device(device: str, group: ProcessGroup) -> str:
    """The device this rank runs on: its own GPU of the node (`cuda:LOCAL_RANK`) when several ranks are asked for
    `cuda`; any other device (`cpu`, or a GPU named by number) as given."""
    if device == "cuda" and not group.alone:
        return f"cuda:{group.local_rank}"
    return device
