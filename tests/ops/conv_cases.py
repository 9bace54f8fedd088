"""Shared by the conv tests (test_conv.py, test_native.py): the kernel / stride / padding
cases the models use, the tolerance, and helpers to compare with XLA and inspect a trace."""

import jax
import jax.numpy as jnp

RTOL = 1e-5  # float32 relative error against XLA's convolution


def rel_err(a, b) -> float:
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


def sym(k: int, s: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """timm's symmetric padding of a k x k kernel at stride s, both axes."""
    p = ((s - 1) + (k - 1)) // 2
    return ((p, p), (p, p))


# (kernel, stride, padding) of dense convs: timm's symmetric padding for k = 1, 3, 5, 7 at strides
# 1 and 2 (the ResNet stem is 7x7 / 2, pad 3), TF 'SAME'-style asymmetric padding, unpadded and
# the 8x8 / 8 DCT front.
DENSE_CASES = [
    (1, 1, ((1, 1), (1, 1))),
    (1, 2, ((0, 0), (0, 0))),
    (2, 1, ((0, 1), (0, 1))),
    (3, 1, sym(3, 1)),
    (3, 2, sym(3, 2)),
    (3, 2, ((0, 1), (0, 1))),
    (3, 1, ((0, 0), (0, 0))),
    (5, 1, sym(5, 1)),
    (5, 2, sym(5, 2)),
    (7, 2, sym(7, 2)),
    (8, 8, ((0, 0), (0, 0))),
]

# (kernel (kh, kw), strides, padding) of every depthwise layer: square k = 3, 5, 7 at strides
# 1 and 2, XSepConv's 1xk / kx1 (also in the downsampling form, strides (1, 2) then (2, 1)), the
# 1x2 / (1, 2) downsampling, and the 2x2 layer with each of its four one-sided paddings.
DEPTHWISE_CASES = [
    ((3, 3), (1, 1), sym(3, 1)),
    ((3, 3), (2, 2), sym(3, 2)),
    ((3, 3), (2, 2), ((0, 1), (0, 1))),
    ((5, 5), (1, 1), sym(5, 1)),
    ((5, 5), (2, 2), sym(5, 2)),
    ((7, 7), (1, 1), sym(7, 1)),
    ((7, 7), (2, 2), sym(7, 2)),
    ((1, 5), (1, 1), ((0, 0), (2, 2))),
    ((5, 1), (1, 1), ((2, 2), (0, 0))),
    ((1, 7), (1, 2), ((0, 0), (3, 3))),
    ((7, 1), (2, 1), ((3, 3), (0, 0))),
    ((1, 2), (1, 2), ((0, 0), (0, 0))),
    ((2, 2), (1, 1), ((0, 1), (0, 1))),
    ((2, 2), (1, 1), ((1, 0), (1, 0))),
    ((2, 2), (1, 1), ((0, 1), (1, 0))),
    ((2, 2), (1, 1), ((1, 0), (0, 1))),
]


def primitives(fn, *args) -> list[str]:
    """Every primitive ``fn`` traces to, with repeats, including those inside custom_vjp calls and
    other sub-jaxprs."""
    found: list[str] = []

    def visit(jaxpr) -> None:
        for eqn in jaxpr.eqns:
            found.append(str(eqn.primitive))
            for param in eqn.params.values():
                for sub in param if isinstance(param, tuple | list) else (param,):
                    if hasattr(sub, "eqns"):
                        visit(sub)
                    elif hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
                        visit(sub.jaxpr)

    visit(jax.make_jaxpr(fn)(*args).jaxpr)
    return found
