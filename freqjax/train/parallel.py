"""Devices, mesh and batch sharding: one ('data',) mesh over every device of every process.

The train step is ``jax.jit`` with NamedSharding: the batch is split along 'data', the state is
replicated, so BatchNorm statistics and gradients are global-batch means with no explicit
collective in the model code. Several hosts join through ``jax.distributed.initialize``; each
process then loads its own slice of the batch and :func:`global_batch` assembles the global array
with ``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["data_sharding", "global_batch", "initialize_distributed", "make_mesh", "replicated"]


def initialize_distributed() -> bool:
    """Join a multi-process job if the environment describes one; returns whether it did.

    Explicit localhost/cluster setup: ``JAX_COORDINATOR_ADDRESS`` (host:port), ``JAX_NUM_PROCESSES``
    and ``JAX_PROCESS_ID``. ``FREQJAX_DISTRIBUTED=1`` instead calls ``jax.distributed.initialize()``
    with its automatic cluster detection (Slurm, Open MPI, TPU pods, GKE).
    """
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if address:
        try:
            num, pid = int(os.environ["JAX_NUM_PROCESSES"]), int(os.environ["JAX_PROCESS_ID"])
        except (KeyError, ValueError):
            raise ValueError(
                "JAX_COORDINATOR_ADDRESS is set, so JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers, got "
                f"{os.environ.get('JAX_NUM_PROCESSES')!r} and {os.environ.get('JAX_PROCESS_ID')!r}"
            ) from None
        jax.distributed.initialize(coordinator_address=address, num_processes=num, process_id=pid)
        return True
    if os.environ.get("FREQJAX_DISTRIBUTED") == "1":
        jax.distributed.initialize()
        return True
    return False


def make_mesh() -> Mesh:
    """A one-axis ('data',) mesh over all devices of all processes."""
    return Mesh(np.asarray(jax.devices()), ("data",))


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over 'data'."""
    return NamedSharding(mesh, PartitionSpec("data"))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole value (parameters, optimiser state)."""
    return NamedSharding(mesh, PartitionSpec())


def global_batch(local: dict, mesh: Mesh) -> dict:
    """This process's numpy batch slice -> global jax.Arrays sharded along 'data'.

    Raises:
        ValueError: if the local batch does not split evenly over this process's devices.
    """
    sharding = data_sharding(mesh)
    n_local = len(jax.local_devices())
    out = {}
    for key, value in local.items():
        if value.shape[0] % n_local:
            raise ValueError(
                f"batch field {key!r} has {value.shape[0]} examples, not divisible by {n_local} local devices"
            )
        out[key] = jax.make_array_from_process_local_data(sharding, np.asarray(value))
    return out
