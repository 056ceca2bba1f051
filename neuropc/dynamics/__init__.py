"""How a network runs: inference settings and modes, the lowered plan, and the optimisers."""
