"""Peak resident memory added by an IGC run whose per-sample draws or accumulated state are large: Monte-Carlo
with S points per sample, or a permutation test with P permutations (used by tests/test_memory_budget.py)."""

import resource, sys, torch, igcorr
from torch import nn
torch.set_num_threads(1)
torch.manual_seed(0)
case, budget = sys.argv[1], int(sys.argv[2])
if case == "montecarlo":
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1)).double().eval()
    x, y = torch.randn(8, 6, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    options = dict(estimator="montecarlo", n_steps=400_000, baselines=8)
else:
    model = nn.Sequential(nn.Linear(1000, 8), nn.Tanh(), nn.Linear(8, 5)).double().eval()
    x, y = torch.randn(60, 1000, dtype=torch.float64), torch.randn(60, 5, dtype=torch.float64)
    options = dict(permutations=999, n_steps=16)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
result = igcorr.IGC(model, max_memory=budget).attribute((x, y), progress=False, **options)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(after - before, result.metadata["batch_size"])
