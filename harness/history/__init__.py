"""History of every figure over commits: the store, change points, and the report (no torch)."""
