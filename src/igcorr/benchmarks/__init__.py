"""Ground-truth benchmarks and demo data: the synthetic 1/f benchmark and the digits demo."""
