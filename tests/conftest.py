"""Test setup: 8 fake CPU devices, forced before jax is imported anywhere.

Multi-device code (meshes, sharded batches) is then exercised on any machine, CI included.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax

assert jax.device_count() == 8, f"conftest expected 8 CPU devices, jax sees {jax.devices()}"
