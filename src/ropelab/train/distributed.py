"""PyTorch's own data-parallel engines under ``torchrun``: DDP, or FSDP (``fully_shard``) for big models.

ropelab does not implement data parallelism: under ``torchrun --nproc_per_node=K`` (which sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``), :func:`setup` joins the process group
(NCCL on GPUs, gloo on CPUs), :func:`wrap` hands the model to ``DistributedDataParallel`` or to
FSDP2's ``fully_shard`` (one shard group per transformer block, then the root), and the gradient
all-reduce / reduce-scatter is theirs. What is ours: which rows of the global batch each rank
takes (:class:`ShardedBatches`), averaging the logged loss, and saving and loading the model and
optimiser: full state dicts (DDP: every rank holds the whole model; rank 0 writes them) or, under FSDP,
each rank's own shards through ``torch.distributed.checkpoint`` (:func:`save_shards`,
:func:`load_shards`): nothing gathers the whole model and optimiser on one rank.

Jobs whose ranks work alone (``eval`` and ``passkey`` split their units over the ranks) :func:`join`
the group with strategy ``none`` and use :func:`broadcast_object` and :func:`barrier`.

Started without ``torchrun`` (``WORLD_SIZE`` unset), everything here is a no-op: one process, the
model unwrapped, plain ``state_dict`` calls.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ropelab.errors import RopeConfigError

STRATEGIES = ("auto", "ddp", "fsdp")
#: how long a rank of a job whose ranks work alone waits for the others at a barrier: a rank may finish
#: its share long before the slowest (one unit of a long-context sweep can take most of an hour on CPUs)
ALONE_TIMEOUT = datetime.timedelta(hours=24)


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: ``rank`` of ``world`` processes, on ``device``."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"
    strategy: str = "none"  # "none" (one process, or ranks that work alone) | "ddp" | "fsdp"
    #: whether :func:`setup` joined the process group (then :func:`teardown` leaves it); a group the
    #: caller's program joined is the caller's to leave
    owns_group: bool = field(default=False, compare=False)

    @property
    def main(self) -> bool:
        """True on the process that writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def setup(device: str = "auto", strategy: str = "auto", *, timeout: datetime.timedelta | None = None) -> Dist:
    """Join the ``torchrun`` process group if there is one; pick the device.

    ``device``: ``auto`` (this rank's GPU if CUDA is available, else CPU), ``cpu``, ``cuda`` (this
    rank's GPU), or for one process ``cuda:N`` (GPU N) and ``mps`` (Apple GPU).
    ``strategy``: ``auto`` (DDP when distributed), ``ddp`` or ``fsdp``; ``none`` (not a user's choice:
    :func:`join`) for ranks that work alone. ``timeout``: the group's collective timeout (torch's default).
    """
    if strategy not in (*STRATEGIES, "none"):
        raise RopeConfigError(f"unknown strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    single = device == "mps" or (device.startswith("cuda:") and device[5:].isdigit())
    if device not in ("cpu", "cuda") and not single:
        raise RopeConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, got {device!r}")
    if single and world > 1:
        raise RopeConfigError(f"--device {device} is for one process; under torchrun use --device cuda")
    if device == "mps" and not torch.backends.mps.is_available():
        raise RopeConfigError("--device mps but MPS is not available")
    if device.startswith("cuda:"):
        if not torch.cuda.is_available() or int(device[5:]) >= torch.cuda.device_count():
            raise RopeConfigError(f"--device {device} but there is no such CUDA device")
        torch.cuda.set_device(int(device[5:]))
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RopeConfigError("--device cuda but CUDA is not available")
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if world == 1:
        if strategy == "fsdp":
            raise RopeConfigError(
                "--strategy fsdp needs several processes: start with torchrun --nproc_per_node=K"
            )
        return Dist(device=device)
    import torch.distributed as dist

    owns = not dist.is_initialized()
    if owns:
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend, **({"timeout": timeout} if timeout is not None else {}))
    return Dist(rank, world, local, device, strategy if strategy in ("fsdp", "none") else "ddp", owns)


def join(device: str | None = "auto") -> Dist:
    """This process's place in a ``torchrun`` job whose ranks work alone (``eval``, ``passkey``).

    One process (``WORLD_SIZE`` unset or 1): ``Dist()``, nothing joined (the caller keeps its own
    device). Under ``torchrun``: the group is joined (gloo on CPUs, NCCL on GPUs, with
    :data:`ALONE_TIMEOUT`) unless the caller's program already did, on this rank's device (``auto``:
    ``cuda:LOCAL_RANK`` where there is CUDA, else the CPU); a group joined here is left when the process
    exits, so that several jobs of one program share it.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()

    d = setup(device or "auto", "none", timeout=ALONE_TIMEOUT)
    if d.owns_group:
        atexit.register(_leave)
    return d


def _leave() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def teardown(d: Dist) -> None:
    """A final barrier, then leave the process group if :func:`setup` joined it."""
    if d.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            if d.owns_group:
                dist.destroy_process_group()


def _blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated transformer blocks: the children of the longest ``nn.ModuleList`` in the model."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    return list(max(lists, key=len)) if lists else []


def wrap(model: nn.Module, d: Dist) -> nn.Module:
    """The model as the engine trains it: itself (one process), DDP, or FSDP2-sharded in place."""
    model.to(d.device)
    if d.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [d.local_rank] if d.device.startswith("cuda") else None
        return DistributedDataParallel(model, device_ids=ids)
    if d.strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(d.device.split(":")[0], (d.world,))
        for block in _blocks(model):
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside a DDP wrapper (FSDP2 shards in place: the module itself)."""
    return getattr(model, "module", model) if type(model).__name__ == "DistributedDataParallel" else model


def no_sync(model: nn.Module, skip: bool) -> contextlib.AbstractContextManager[Any]:
    """DDP's ``no_sync`` for the micro-batches before the last of an accumulation (else nothing)."""
    if skip and hasattr(model, "no_sync"):
        return model.no_sync()
    return contextlib.nullcontext()


def mean_over_ranks(value: torch.Tensor, d: Dist) -> torch.Tensor:
    """The mean of a scalar across ranks (the value itself in one process)."""
    return sum_over_ranks(value.float(), d) / d.world if d.distributed else value


def sum_over_ranks(values: torch.Tensor, d: Dist) -> torch.Tensor:
    """Element-wise sum of a tensor across ranks."""
    if not d.distributed:
        return values
    import torch.distributed as dist

    out = values.detach().clone()
    dist.all_reduce(out)
    return out


def barrier(d: Dist) -> None:
    if d.distributed:
        import torch.distributed as dist

        dist.barrier()


def broadcast_object(value: Any, d: Dist) -> Any:
    """Rank 0's ``value`` (any picklable object) on every rank; ``value`` itself in one process."""
    if not d.distributed:
        return value
    import torch.distributed as dist

    box = [value if d.main else None]
    dist.broadcast_object_list(box, src=0, device=torch.device(d.device) if d.device != "cpu" else None)
    return box[0]


def _options() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def model_state(model: nn.Module, d: Dist) -> dict[str, Any]:
    """The full model state dict (every rank must call it; only rank 0's copy is complete under FSDP)."""
    if not d.distributed:
        return unwrap(model).state_dict()
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options())


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, d: Dist) -> dict[str, Any]:
    """The full optimiser state dict, keyed by parameter names when distributed."""
    if not d.distributed:
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_options())


def load_model_state(model: nn.Module, state: dict[str, Any], d: Dist) -> None:
    if not d.distributed:
        unwrap(model).load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))


def load_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any], d: Dist
) -> None:
    if not d.distributed:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def save_shards(folder: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, d: Dist) -> None:
    """Write the model and optimiser of an FSDP job to ``folder`` through ``torch.distributed.checkpoint``.

    Every rank calls it and writes its own shards (``__RANK_0.distcp``); rank 0 adds ``.metadata`` (where
    each shard of each tensor lies) once all have written. Nothing is gathered: a rank holds its
    1/K of the parameters and optimiser moments, as in training. A folder left by an earlier, unfinished
    save is cleared first. The layout is torch's (``torch.distributed.checkpoint.FileSystemWriter``), so
    ``torch.distributed.checkpoint.format_utils.dcp_to_torch_save`` turns it into one file offline.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    folder = Path(folder)
    if d.main and folder.exists():
        shutil.rmtree(folder)
    barrier(d)
    state = {"model": get_model_state_dict(model)}  # sharded (DTensor) views of what each rank holds
    # an optimiser that has not stepped has no moments: saved without them (asking torch for its state
    # dict would create them with a step at lr 0, and the resumed run would count that step)
    if optimizer.state:
        state["optimizer"] = get_optimizer_state_dict(model, optimizer)
    dcp.save(state, checkpoint_id=folder)


def load_shards(folder: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, d: Dist) -> None:
    """Read what :func:`save_shards` wrote into the FSDP ``model`` and ``optimizer``: each rank reads the
    pieces of its own shards (in place into its state dicts), then hands them to the model and optimiser."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    folder = Path(folder)
    if not (folder / ".metadata").is_file():
        raise RopeConfigError(
            f"{folder} is not a whole sharded resume state (no .metadata); delete it to start again"
        )
    saved = dcp.FileSystemReader(folder).read_metadata().state_dict_metadata
    state = {"model": get_model_state_dict(model)}
    if any(key.startswith("optimizer.") for key in saved):
        # a fresh optimiser has no moments to load into: torch creates them (a step at lr 0), then reads
        state["optimizer"] = get_optimizer_state_dict(model, optimizer)
    dcp.load(state, checkpoint_id=folder)
    set_model_state_dict(model, state["model"])
    if "optimizer" in state:
        set_optimizer_state_dict(model, optimizer, state["optimizer"])


@contextlib.contextmanager
def autocast(dtype: torch.dtype | None, d: Dist) -> Iterator[None]:
    """bf16 autocast on this rank's device when ``dtype`` is set, else nothing."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=d.device.split(":")[0], dtype=dtype):
        yield


class ShardedBatches:
    """This rank's rows of a global batch source, so that K processes see the batch one process would.

    ``source.next_batch()`` gives the step's *global* batch (a tuple of tensors with ``K * n``
    rows, ``K`` = world size); rank ``r`` keeps rows ``[r n, (r + 1) n)``. The position (the
    source's state) is the same on every rank, so resuming restores it from rank 0's save.
    """

    def __init__(self, source: Any, d: Dist) -> None:
        self.source = source
        self.d = d

    def next_batch(self) -> Any:
        batch = self.source.next_batch()
        if not self.d.distributed:
            return batch
        rows = batch[0].shape[0]
        if rows % self.d.world:
            raise RopeConfigError(f"a global batch of {rows} rows does not split over {self.d.world} ranks")
        n = rows // self.d.world
        return tuple(t[self.d.rank * n : (self.d.rank + 1) * n] for t in batch)

    def state_dict(self) -> dict[str, Any]:
        return self.source.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.source.load_state_dict(state)
