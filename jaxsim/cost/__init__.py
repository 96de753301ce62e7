"""Op costs: FLOPs and bytes (`flops`), kernel times (`kernels`), collectives (`comm`), memory (`memory`)."""

from jaxsim.cost import comm, flops, kernels, memory

__all__ = ["comm", "flops", "kernels", "memory"]
