"""A standalone IGC run used by the multi-process and kill/resume tests.

Usage: python igc_worker.py OUT.npz [--checkpoint PATH] [--slow SECONDS] [--calls FILE]
Under torchrun-style environment variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) it runs distributed.
"""

import argparse
import time

import torch
from torch import nn

import igcorr

parser = argparse.ArgumentParser()
parser.add_argument("out")
parser.add_argument("--checkpoint")
parser.add_argument("--slow", type=float, default=0.0)
parser.add_argument("--calls")
parser.add_argument("--method", default="igc")
args = parser.parse_args()


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if args.slow:
            time.sleep(args.slow)
        return self.net(x)


def dataset():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(23, 6, dtype=torch.float64, generator=generator)
    y = torch.randn(23, 2, dtype=torch.float64, generator=generator) + x[:, :2]
    return x, y


model = Model().double().eval()
method = {"igc": igcorr.IGC}.get(args.method) or getattr(igcorr, args.method)
result = method(model).attribute(dataset(), baselines=3, n_steps=8, batch_size=2, progress=False,
                                 checkpoint=args.checkpoint, checkpoint_every=0)
result.save(args.out)
if args.calls:
    with open(args.calls, "w") as handle:
        handle.write(str(model.calls))
