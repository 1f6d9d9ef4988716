"""Speed and accuracy of igcorr's IGC engine against a Captum pipeline and a bare floor loop.

Workloads (sizes scale with --scale):
  W1  28×28 single-channel CNN (two conv + two linear layers) trained on the bundled digits resized to 28×28,
      10 outputs, N=512 test images, M=8 dataset baselines (training images)
  W2  the synthetic benchmark's 64×64 trained model (MLP option), 1 output, N=1,000, M=8
  W3  an encoding model with K=2,000 outputs behind a final linear layer of width 64, N=256

Every contender computes the same IGC map (same baselines, same targets) in the same process with the same
threads. Reported: seconds, time ratios, and each map's relative L2 error against a converged map (a midpoint
rule with many nodes, same baselines).

With --map-tolerance T the accuracy table is run instead (W1 and W2): Captum at its default setting
(Gauss–Legendre, 50 steps) and its fastest setting under T (its rules scanned), igcorr's fixed rules (the
fastest under T found in hindsight), and igcorr's automatic choice (map_tolerance=T) with its estimated and
measured errors.

    python benchmarks/bench_igc.py [--scale 1.0] [--workloads W1 W2 W3] [--out benchmarks/results]
    python benchmarks/bench_igc.py --workloads W1 --scale 0.25 --map-tolerance 0.01 --reference-steps 128
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

import igcorr
from igcorr.paths.quadrature import rule as quadrature_rule


# ----------------------------------------------------------------------------- workloads
class CNN28(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x):
        return self.head(self.features(x))


class Encoder(nn.Module):
    def __init__(self, n_outputs: int = 2000, width: int = 64) -> None:
        super().__init__()
        self.core = nn.Sequential(nn.Flatten(), nn.Linear(16 * 16, 256), nn.GELU(), nn.Linear(256, width), nn.GELU())
        self.readout = nn.Linear(width, n_outputs)

    def forward(self, x):
        return self.readout(self.core(x))


@dataclass
class Workload:
    name: str
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    baselines: torch.Tensor  # (M, *x_shape), shared by every contender
    score: str | None
    captum_outputs: int  # outputs the Captum pipeline attributes (all, or a subset for W3)


def make_workload(name: str, scale: float, seed: int = 0) -> Workload:
    from igcorr_examples.synthetic import SyntheticDataset, generate_images
    from igcorr_examples.synthetic_models import train_model, trainable_model

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    if name == "W1":
        n = max(16, int(512 * scale))
        x_train, y_train, x_test, y_test = digits_28(seed)
        model = train_cnn28(x_train, y_train, seed)
        baselines = x_train[torch.randperm(len(x_train), generator=generator)[:8]]  # dataset baselines
        # classes interleaved, so that every class (every output's target) varies in any first n ≥ 10 images
        within_class = torch.zeros_like(y_test)
        for label in range(10):
            within_class[y_test == label] = torch.arange(int((y_test == label).sum()))
        chosen = torch.from_numpy(np.lexsort((y_test.numpy(), within_class.numpy())))[:n]
        return Workload(name, model, x_test[chosen], y_test[chosen], baselines, "softmax", 10)
    if name == "W2":
        n = max(16, int(1000 * scale))
        train = SyntheticDataset("B", 2000, seed=seed + 10)
        model = trainable_model("mlp", "B", seed=seed)
        train_model(model, train, epochs=15, batch_size=64, lr=1e-3, seed=seed, progress=False)
        evaluation = SyntheticDataset("B", n, seed=seed + 20, standardize=(train.target_mean, train.target_std))
        x, y = evaluation.get_batch(np.arange(n))
        baselines = generate_images(seed + 30, np.arange(8))
        return Workload(name, model.eval(), x, y, baselines, None, 1)
    if name == "W3":
        n = max(16, int(256 * scale))
        model = Encoder().eval()
        x = torch.randn(n, 1, 16, 16, generator=generator)
        with torch.no_grad():
            y = model(x) + torch.randn(n, 2000, generator=generator)
        baselines = torch.randn(8, 1, 16, 16, generator=generator)
        return Workload(name, model, x, y, baselines, None, 20)
    raise ValueError(name)


def digits_28(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The bundled 8×8 digits, bilinearly resized to 28×28: train inputs and labels, test inputs and labels."""
    from igcorr_examples.digits import load_digits_split

    split = load_digits_split(seed=seed)

    def resize(images: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False)

    return resize(split.x_train), split.y_train, resize(split.x_test), split.y_test


def train_cnn28(x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int = 6) -> CNN28:
    """A trained W1 model (about 97 % test accuracy), so that its IGC maps carry signal, not noise."""
    torch.manual_seed(seed)
    model = CNN28()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for begin in range(0, len(order), 64):
            chosen = order[begin : begin + 64]
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(x[chosen]), y[chosen]).backward()
            optimiser.step()
    return model.eval()


# ----------------------------------------------------------------------------- contenders
def igc_from_ig(ig: np.ndarray, predictions: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """IGC map from per-sample IG (N, K, D), predictions (N, K), targets (N, K)."""
    centred = targets - targets.mean(axis=0)
    scale = targets.std(axis=0) * predictions.std(axis=0)
    return np.einsum("nkd,nk->kd", ig, centred) / len(targets) / scale[:, None]


def encoded_targets(workload: Workload, n_outputs: int) -> np.ndarray:
    y = workload.y
    if y.ndim == 1 and not y.is_floating_point():
        return nn.functional.one_hot(y, n_outputs).double().numpy()
    return y.reshape(len(y), -1).double().numpy()


def scores_of(workload: Workload, x: torch.Tensor) -> torch.Tensor:
    out = workload.model(x)
    return torch.softmax(out, dim=1) if workload.score == "softmax" else out


def run_igcorr(workload: Workload, n_steps: int | None, method: str = "trapezoid",
               **options) -> tuple[np.ndarray, float, dict]:
    engine_options = {key: options.pop(key) for key in ("readout", "output_strategy", "compile", "autocast")
                      if key in options}
    started = time.perf_counter()
    result = igcorr.IGC(workload.model, score=workload.score, **engine_options).attribute(
        (workload.x, workload.y), baselines=igcorr.baselines.Shared(workload.baselines), n_steps=n_steps,
        method=method, progress=False, **options)
    return result.maps.reshape(len(result.maps), -1), time.perf_counter() - started, result.metadata["engine"]


def run_floor(workload: Workload, n_steps: int, chunk: int) -> tuple[np.ndarray, float]:
    """One forward per path point and K plain backward passes; nothing else."""
    model, x, baselines = workload.model, workload.x, workload.baselines
    nodes, weights = quadrature_rule("trapezoid", n_steps)
    alphas = torch.as_tensor(nodes, dtype=x.dtype)
    weight = torch.as_tensor(weights, dtype=x.dtype)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    started = time.perf_counter()
    n, m, d = len(x), len(baselines), x[0].numel()
    with torch.no_grad():
        first = scores_of(workload, x[:1])
    k_out = first.shape[1]
    ig = torch.zeros(n, k_out, d, dtype=torch.float64)
    flat_x, flat_b = x.reshape(n, d), baselines.reshape(m, d)
    total = n * m * n_steps
    for begin in range(0, total, chunk):
        point = torch.arange(begin, min(begin + chunk, total))
        pair, node = point // n_steps, point % n_steps
        sample, base = pair // m, pair % m
        delta = flat_x[sample] - flat_b[base]
        points = (flat_b[base] + alphas[node, None] * delta).reshape(len(point), *x.shape[1:]).requires_grad_(True)
        out = scores_of(workload, points)
        for k in range(k_out):
            (grad,) = torch.autograd.grad(out[:, k], points, grad_outputs=weight[node], retain_graph=k < k_out - 1)
            ig[:, k].index_add_(0, sample, (grad.reshape(len(point), d) * delta).double())
    ig /= m
    with torch.no_grad():
        predictions = scores_of(workload, x).double().numpy()
    seconds = time.perf_counter() - started
    targets = encoded_targets(workload, k_out)
    return igc_from_ig(ig.numpy(), predictions, targets), seconds


def run_captum(workload: Workload, n_steps: int, outputs: int, method: str = "riemann_trapezoid") -> tuple[np.ndarray, float]:
    """The pipeline a Captum user writes: IntegratedGradients per baseline and per target, then the weighting."""
    from captum.attr import IntegratedGradients

    model, x = workload.model, workload.x
    forward = (lambda inputs: torch.softmax(model(inputs), dim=1)) if workload.score == "softmax" else model
    explainer = IntegratedGradients(forward)
    started = time.perf_counter()
    n, d = len(x), x[0].numel()
    ig = np.zeros((n, outputs, d))
    for baseline in workload.baselines:
        for k in range(outputs):
            attribution = explainer.attribute(x, baselines=baseline.unsqueeze(0), target=k, n_steps=n_steps,
                                              method=method, internal_batch_size=512)
            ig[:, k] += attribution.detach().reshape(n, d).double().numpy()
    ig /= len(workload.baselines)
    if method == "riemann_trapezoid":
        ig *= n_steps / (n_steps - 1)  # undo Captum's (n−1)/n trapezoid bias
    with torch.no_grad():
        predictions = scores_of(workload, x).double().numpy()[:, :outputs]
    seconds = time.perf_counter() - started
    targets = encoded_targets(workload, scores_of(workload, x[:1]).shape[1])[:, :outputs]
    return igc_from_ig(ig, predictions, targets), seconds


def subset(workload: Workload, n: int) -> Workload:
    """The first n samples of a workload (same model and baselines)."""
    return Workload(workload.name, workload.model, workload.x[:n], workload.y[:n], workload.baselines,
                    workload.score, workload.captum_outputs)


def relative_error(candidate: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm(candidate - reference) / np.linalg.norm(reference))


# ----------------------------------------------------------------------------- the benchmark
#: chunk sizes (path points per forward pass) the floor loop tries
FLOOR_CHUNKS = (256, 512, 1024, 2048)
#: the converged map every contender is compared with: a fine midpoint rule (Gauss–Legendre's advantage
#: vanishes at the ReLU kinks of W1, where its error falls only like 1/n)
REFERENCE_METHOD = "riemann_middle"
#: cheaper rules tried in order of cost until one reaches 1 % relative error (midpoint rules suit ReLU
#: networks, whose integrands have kinks; Gauss–Legendre suits smooth ones)
EQUAL_ACCURACY_RULES = (("gausslegendre", 4), ("gausslegendre", 6), ("riemann_middle", 8), ("gausslegendre", 8),
                        ("riemann_middle", 12), ("riemann_middle", 16), ("riemann_middle", 24),
                        ("riemann_middle", 32))


def bench(workload: Workload, steps: int, reference_steps: int, variants: bool) -> dict:
    rows: dict[str, dict] = {}
    reference, _, _ = run_igcorr(workload, reference_steps, method=REFERENCE_METHOD)
    k_captum = workload.captum_outputs

    def record(name: str, maps: np.ndarray, seconds: float, **extra) -> None:
        rows[name] = {"seconds": seconds, "error": relative_error(maps, reference[: len(maps)]), **extra}

    maps, seconds, engine = run_igcorr(workload, steps)
    record(f"igcorr trapezoid {steps}", maps, seconds, engine=engine)
    if workload.name != "W3":
        # the floor's chunk size is chosen on the first eighth of the samples, then timed on all of them
        trial = subset(workload, max(16, len(workload.x) // 8))
        trials = {chunk: run_floor(trial, steps, chunk)[1] for chunk in FLOOR_CHUNKS}
        best_chunk = min(trials, key=trials.__getitem__)
        maps, seconds = run_floor(workload, steps, best_chunk)
        record(f"floor trapezoid {steps}", maps, seconds, chunk=best_chunk,
               trial_seconds={"samples": len(trial.x), **trials})
        maps, seconds = run_captum(workload, steps, k_captum)
        record(f"captum trapezoid {steps}", maps, seconds)
        for method, small in EQUAL_ACCURACY_RULES:
            maps, seconds, _ = run_igcorr(workload, small, method=method)
            record(f"igcorr {method} {small}", maps, seconds)
            if rows[f"igcorr {method} {small}"]["error"] <= 0.01:
                break
        if variants:
            maps, seconds, engine = run_igcorr(workload, steps, compile=True)
            record(f"igcorr trapezoid {steps}, torch.compile (compile time included)", maps, seconds, engine=engine)
            maps, seconds, engine = run_igcorr(workload, steps, autocast="bfloat16")
            record(f"igcorr trapezoid {steps}, bfloat16 autocast", maps, seconds, engine=engine)
    else:
        maps, seconds, engine = run_igcorr(workload, steps, readout=False)
        record(f"igcorr trapezoid {steps} without readout", maps, seconds, engine=engine)
        maps, seconds = run_captum(workload, steps, k_captum)
        rows[f"captum trapezoid {steps}, {k_captum} of {reference.shape[0]} outputs"] = {
            "seconds": seconds, "error": relative_error(maps, reference[:k_captum]),
            "extrapolated_seconds_all_outputs": seconds * reference.shape[0] / k_captum}
    return rows


def ratios(name: str, rows: dict, steps: int) -> dict:
    ours = rows[f"igcorr trapezoid {steps}"]["seconds"]
    found: dict[str, float] = {}
    if name != "W3":
        found["igcorr / best floor (equal points)"] = ours / rows[f"floor trapezoid {steps}"]["seconds"]
        found["captum / igcorr (equal points)"] = rows[f"captum trapezoid {steps}"]["seconds"] / ours
        cheaper = [f"igcorr {method} {n}" for method, n in EQUAL_ACCURACY_RULES]
        accurate = [k for k in cheaper if k in rows and rows[k]["error"] <= 0.01]
        if accurate:
            found[f"captum {steps} steps / igcorr at ≤1 % error"] = (
                rows[f"captum trapezoid {steps}"]["seconds"] / rows[accurate[0]]["seconds"])
    else:
        found["without / with readout shortcut"] = rows[f"igcorr trapezoid {steps} without readout"]["seconds"] / ours
        captum = next(v for k, v in rows.items() if k.startswith("captum"))
        found["captum (extrapolated to all outputs) / igcorr"] = captum["extrapolated_seconds_all_outputs"] / ours
    return found


def markdown(report: dict) -> str:
    lines = ["# IGC engine benchmark", "",
             f"torch {report['torch']}, {report['threads']} threads, scale {report['scale']}, {report['steps']} steps, "
             f"reference: {REFERENCE_METHOD} rule with {report['reference_steps']} nodes", ""]
    for name, workload in report["workloads"].items():
        lines += [f"## {name}: {workload['description']}", "", "| contender | seconds | rel. L2 error |", "|---|---|---|"]
        for contender, row in workload["rows"].items():
            lines.append(f"| {contender} | {row['seconds']:.2f} | {row['error']:.2e} |")
        lines += ["", "| ratio | value |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in workload["ratios"].items()]
        lines.append("")
    return "\n".join(lines)


DESCRIPTIONS = {
    "W1": "28×28 CNN trained on the digits (resized), 10 outputs (softmax), M=8 dataset baselines",
    "W2": "64×64 synthetic benchmark B, trained MLP, 1 output, M=8 shared baselines",
    "W3": "encoding model, 2,000 outputs behind a linear readout of width 64, M=8 shared baselines",
}


# ----------------------------------------------------------------------------- accuracy chosen for the user
#: igcorr's fixed rules in the accuracy table (the fastest under the tolerance is the best "in hindsight")
ACCURACY_RULES = {
    "W1": (("riemann_middle", 6), ("riemann_middle", 8), ("riemann_middle", 9), ("riemann_middle", 10),
           ("riemann_middle", 11), ("riemann_middle", 12),
           ("gausslegendre", 8), ("gausslegendre", 16), ("shifted", 6), ("shifted", 8), ("shifted", 10),
           ("shifted", 12), ("montecarlo", 64), ("gausslegendre", 50), ("trapezoid", 64)),
    "W2": (("gausslegendre", 2), ("gausslegendre", 3), ("gausslegendre", 4), ("riemann_middle", 2),
           ("riemann_middle", 3), ("riemann_middle", 4), ("shifted", 2), ("shifted", 4), ("montecarlo", 64),
           ("gausslegendre", 50),
           ("trapezoid", 64)),
}
#: Captum's rules scanned for its fastest setting under the tolerance: each family from few steps up, until one
#: is under the tolerance
CAPTUM_SCAN = {
    "W1": {"gausslegendre": (8, 12, 16, 20, 24, 32), "riemann_middle": (8, 10, 12, 16, 24)},
    "W2": {"gausslegendre": (2, 3, 4, 6, 8), "riemann_middle": (2, 4, 6, 8)},
}
CAPTUM_DEFAULT = ("gausslegendre", 50)


def run_auto(workload: Workload, tolerance: float) -> tuple[np.ndarray, float, dict]:
    """igcorr's automatic choice: maps, seconds and the parameters it recorded (choice and estimates)."""
    started = time.perf_counter()
    result = igcorr.IGC(workload.model, score=workload.score).attribute(
        (workload.x, workload.y), baselines=igcorr.baselines.Shared(workload.baselines), map_tolerance=tolerance,
        progress=False)
    seconds = time.perf_counter() - started
    parameters = dict(result.metadata["parameters"])
    parameters["map_error_estimate"] = result.diagnostics["map_error_estimate"].tolist()
    return result.maps.reshape(len(result.maps), -1), seconds, parameters


def run_fixed(workload: Workload, method: str, n_steps: int) -> tuple[np.ndarray, float]:
    if method == "montecarlo":
        maps, seconds, _ = run_igcorr(workload, n_steps, estimator="montecarlo")
    else:
        maps, seconds, _ = run_igcorr(workload, n_steps, method=method)
    return maps, seconds


def bench_accuracy(workload: Workload, tolerance: float, reference_steps: int) -> tuple[dict, dict]:
    """The accuracy table of one workload: rows (seconds, error, ...) and ratios."""
    rows: dict[str, dict] = {}
    reference, _, _ = run_igcorr(workload, reference_steps, method=REFERENCE_METHOD)
    outputs = workload.captum_outputs

    def record(name: str, maps: np.ndarray, seconds: float, **extra) -> dict:
        rows[name] = {"seconds": seconds, "error": relative_error(maps, reference[: len(maps)]), **extra}
        return rows[name]

    maps, seconds, parameters = run_auto(workload, tolerance)
    auto = record(f"igcorr automatic (map_tolerance={tolerance:g})", maps, seconds, parameters=parameters,
                  estimated_error=parameters["estimated_map_error"], checked_error=parameters["checked_map_error"],
                  choice=f"{parameters['method']} {parameters['n_steps']} (pilot grids {parameters['pilot_steps']})")
    method, n = CAPTUM_DEFAULT
    maps, seconds = run_captum(workload, n, outputs, method=method)
    default = record(f"captum {method} {n} (its default)", maps, seconds)
    captum_passing = []
    for method, counts in CAPTUM_SCAN[workload.name].items():
        for n in counts:
            maps, seconds = run_captum(workload, n, outputs, method=method)
            row = record(f"captum {method} {n}", maps, seconds)
            if row["error"] <= tolerance:
                captum_passing.append(f"captum {method} {n}")
                break
    fixed_passing = []
    for method, n in ACCURACY_RULES[workload.name]:
        maps, seconds = run_fixed(workload, method, n)
        if record(f"igcorr {method} {n}", maps, seconds)["error"] <= tolerance:
            fixed_passing.append(f"igcorr {method} {n}")
    found: dict[str, float | str] = {}
    found["automatic: measured error ≤ tolerance"] = "yes" if auto["error"] <= tolerance else "no"
    found["captum default / automatic"] = default["seconds"] / auto["seconds"]
    if captum_passing:
        best = min(captum_passing, key=lambda name: rows[name]["seconds"])
        found[f"captum best under the tolerance ({best[7:]}) / automatic"] = rows[best]["seconds"] / auto["seconds"]
    if fixed_passing:
        best = min(fixed_passing, key=lambda name: rows[name]["seconds"])
        found[f"automatic / igcorr best fixed rule in hindsight ({best[7:]})"] = auto["seconds"] / rows[best]["seconds"]
    found["automatic: estimated (pilot) / measured error"] = auto["estimated_error"] / auto["error"]
    found["automatic: estimated (final check) / measured error"] = auto["checked_error"] / auto["error"]
    return rows, found


def markdown_accuracy(report: dict) -> str:
    lines = ["# Accuracy chosen for the user", "",
             f"torch {report['torch']}, {report['threads']} threads, scale {report['scale']}, tolerance "
             f"{report['map_tolerance']:g} (relative L2 error of the map), reference: {REFERENCE_METHOD} rule with "
             f"{report['reference_steps']} nodes", ""]
    for name, workload in report["workloads"].items():
        lines += [f"## {name}: {workload['description']}, N={workload['n']}", "",
                  "| contender | seconds | rel. L2 error | estimated error (pilot / final check) |", "|---|---|---|---|"]
        for contender, row in workload["rows"].items():
            estimate = (f"{row['estimated_error']:.2e} / {row['checked_error']:.2e} ({row['choice']})"
                        if "estimated_error" in row else "")
            lines.append(f"| {contender} | {row['seconds']:.2f} | {row['error']:.2e} | {estimate} |")
        lines += ["", "| ratio | value |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" if isinstance(v, float) else f"| {k} | {v} |"
                  for k, v in workload["ratios"].items()]
        lines.append("")
    return "\n".join(lines)


def main_accuracy(args: argparse.Namespace) -> None:
    report = {"torch": torch.__version__, "threads": torch.get_num_threads(), "scale": args.scale,
              "map_tolerance": args.map_tolerance, "reference_steps": args.reference_steps,
              "machine": platform.machine(), "workloads": {}}
    for name in args.workloads:
        if name not in ACCURACY_RULES:
            raise SystemExit(f"the accuracy table covers {sorted(ACCURACY_RULES)}, not {name}")
        workload = make_workload(name, args.scale)
        rows, found = bench_accuracy(workload, args.map_tolerance, args.reference_steps)
        report["workloads"][name] = {"description": DESCRIPTIONS[name], "n": len(workload.x), "rows": rows,
                                     "ratios": found}
        print(markdown_accuracy({**report, "workloads": {name: report["workloads"][name]}}), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "igc_accuracy.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "igc_accuracy.md").write_text(markdown_accuracy(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of each workload's N (default 1)")
    parser.add_argument("--workloads", nargs="+", default=["W1", "W2", "W3"])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--reference-steps", type=int, default=256)
    parser.add_argument("--no-variants", action="store_true", help="skip the torch.compile and autocast rows")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--map-tolerance", type=float, default=None,
                        help="run the accuracy table (W1, W2) at this relative L2 tolerance of the map instead")
    args = parser.parse_args()
    if args.map_tolerance is not None:
        main_accuracy(args)
        return
    report = {"torch": torch.__version__, "threads": torch.get_num_threads(), "scale": args.scale,
              "steps": args.steps, "reference_steps": args.reference_steps, "machine": platform.machine(),
              "workloads": {}}
    for name in args.workloads:
        workload = make_workload(name, args.scale)
        rows = bench(workload, args.steps, args.reference_steps, variants=not args.no_variants)
        report["workloads"][name] = {"description": DESCRIPTIONS[name], "n": len(workload.x), "rows": rows,
                                     "ratios": ratios(name, rows, args.steps)}
        print(markdown({**report, "workloads": {name: report["workloads"][name]}}), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "igc_engine.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "igc_engine.md").write_text(markdown(report))


if __name__ == "__main__":
    main()
