"""Peak resident memory added by one IGC run under a given max_memory (used by tests/test_engine.py)."""

import resource, sys, torch, igcorr
from torch import nn
torch.set_num_threads(1)
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.Tanh(), nn.Conv2d(32, 32, 3, padding=1), nn.Tanh(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 2)).eval()
x = torch.randn(8, 1, 64, 64); y = torch.randn(8, 2)
budget = int(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
r = igcorr.IGC(model, max_memory=budget).attribute((x, y), n_steps=64, progress=False)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(after - before, r.metadata["engine"]["chunk_points"])
