"""Wide vectors for the numba kernels. ``prefer_512()``, called as a kernel's first statement,
asks LLVM's vectoriser for 512-bit vectors in that function (the function attribute
``"prefer-vector-width"="512"``).

Why: LLVM's tuning for Intel's AVX-512 cores (Skylake-SP to Sapphire Rapids, Rocket Lake)
prefers 256-bit vectors, so numba's loops use half the width the core has. On this project's
Xeon, 512-bit kernels took 3% off the standard task's batch and 2-3% off Langevin's extra cost
(docs/performance.md, issue 14, fifth round); MKL's gemms in the same batch already run 512-bit
code. A CPU without AVX-512 has no 512-bit vectors, and the attribute then changes nothing.

It is set per function, not process-wide through numba's ``CPU_FEATURES``. The process-wide
setting would also change the code a user's own numba functions compile to, and it would depend
on the import order. The attribute is written into llvmlite's attribute set directly, since
llvmlite only accepts its list of known keyword attributes. If that ever fails, the kernel
simply keeps LLVM's default width."""

from __future__ import annotations

from numba.core import types
from numba.extending import intrinsic

_ATTRIBUTE = '"prefer-vector-width"="512"'


@intrinsic
def prefer_512(typingctx):
    """Mark the calling function for 512-bit vectors; compiles to nothing."""

    def codegen(context, builder, sig, args):
        try:
            set.add(builder.function.attributes, _ATTRIBUTE)
        except Exception:  # an llvmlite without a set of attributes: keep the default width
            pass
        return context.get_dummy_value()

    return types.none(), codegen
