"""The digits demo: a small CNN trained on scikit-learn's bundled 8×8 digits, explained class by class with IGC.

Everything is local (the digits ship with scikit-learn), so the demo runs offline on a CPU. scikit-learn is an
optional dependency (``pip install "igcorr[examples]"``) imported only when the digits are loaded.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from igcorr import baselines as baseline_forms
from igcorr import IGC
from igcorr.result import Result

logger = logging.getLogger(__name__)


@dataclass
class DigitsSplit:
    """Stratified train/test split of the digits: inputs (n, 1, 8, 8) float32 in [0, 1], labels (n,) int64."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_digits_split(test_fraction: float = 0.3, seed: int = 0) -> DigitsSplit:
    """Load the bundled digits and split them, stratified by class."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=test_fraction, stratify=digits.target, random_state=seed)
    as_x, as_y = torch.from_numpy, lambda a: torch.from_numpy(a.astype(np.int64))
    return DigitsSplit(as_x(x_train), as_y(y_train), as_x(x_test), as_y(y_test))


class DigitsCNN(nn.Module):
    """Two 3×3 convolutions, a 2×2 max-pool and two linear layers: (n, 1, 8, 8) → (n, 10) logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten())
        self.classifier = nn.Sequential(nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def train_digits_model(split: DigitsSplit, epochs: int = 30, batch_size: int = 64, lr: float = 2e-3,
                       seed: int = 0, progress: bool = True) -> tuple[DigitsCNN, float]:
    """Train :class:`DigitsCNN` with Adam and cross-entropy; returns the model (eval mode) and test accuracy."""
    torch.manual_seed(seed)
    model = DigitsCNN()
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    loss_function = nn.CrossEntropyLoss()
    for _ in tqdm(range(epochs), desc="training", unit="epoch", disable=not progress, leave=False):
        model.train()
        order = torch.randperm(len(split.x_train), generator=generator)
        for begin in range(0, len(order), batch_size):
            chosen = order[begin : begin + batch_size]
            optimiser.zero_grad()
            loss_function(model(split.x_train[chosen]), split.y_train[chosen]).backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(split.x_test).argmax(dim=1) == split.y_test).float().mean())
    logger.info("digits CNN test accuracy %.4f", accuracy)
    return model, accuracy


def run_demo(out_dir: str | Path = "igcorr-out/demo", epochs: int = 30, n_steps: int = 32, n_baselines: int = 8,
             seed: int = 0, progress: bool = True) -> dict:
    """Train the digits CNN, compute per-class IGC on the test split and write figure, result and summary.

    IGC attributes the softmax probability of each class against the one-hot labels, with ``n_baselines``
    test images shared by all samples as baselines (so each class map sums to that class's Pearson r).

    Returns
    -------
    dict
        Accuracy, per-class r and map sums, completeness error, timings and the written paths.
    """
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    split = load_digits_split(seed=seed)
    model, accuracy = train_digits_model(split, epochs=epochs, seed=seed, progress=progress)
    trained = time.perf_counter()
    result = IGC(model, score="softmax").attribute(
        (split.x_test, split.y_test), baselines=baseline_forms.FromData(n_baselines, shared=True),
        n_steps=n_steps, seed=seed, progress=progress)
    attributed = time.perf_counter()
    result.metadata["demo"] = {"test_accuracy": accuracy, "epochs": epochs}
    result_path = result.save(out / "result.npz")
    figure_path = out / "class_maps.png"
    figure = class_map_figure(result, split)
    figure.savefig(figure_path, dpi=120, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    report = {
        "test_accuracy": accuracy,
        "correlation": result.correlation.tolist(),
        "map_sums": result.map_sums.tolist(),
        "completeness": result.ig_completeness,
        "train_seconds": trained - started,
        "igc_seconds": attributed - trained,
        "n_test": len(split.x_test),
        "paths": {"result": str(result_path), "figure": str(figure_path), "summary": str(out / "summary.md")},
    }
    (out / "summary.md").write_text(demo_summary(report, result))
    return report


def class_map_figure(result: Result, split: DigitsSplit):
    """Class-mean test images (top row) above the class IGC maps on one shared symmetric scale (bottom row)."""
    import matplotlib.pyplot as plt

    from igcorr.plotting import symmetric_limit

    limit = symmetric_limit(result.maps)
    figure, axes = plt.subplots(2, 10, figsize=(16, 3.8))
    for digit in range(10):
        mean_image = split.x_test[split.y_test == digit].mean(dim=0)[0].numpy()
        axes[0, digit].imshow(mean_image, cmap="gray_r", vmin=0, vmax=1)
        axes[0, digit].set_title(f"mean of {digit}", fontsize=9)
        shown = axes[1, digit].imshow(result.maps[digit, 0], cmap="RdBu_r", vmin=-limit, vmax=limit)
        axes[1, digit].set_title(f"IGC, r={result.correlation[digit]:.2f}", fontsize=9)
    for axis in axes.ravel():
        axis.set_axis_off()
    figure.colorbar(shown, ax=axes[1].tolist(), shrink=0.9, fraction=0.02)
    figure.suptitle("Digits: class-mean images and per-class IGC maps (softmax probability vs one-hot label)")
    return figure


def demo_summary(report: dict, result: Result) -> str:
    """Markdown summary of a demo run."""
    lines = [
        "# igcorr digits demo",
        "",
        f"- test accuracy: {report['test_accuracy']:.4f} on {report['n_test']} test images",
        f"- training: {report['train_seconds']:.1f} s; IGC: {report['igc_seconds']:.1f} s "
        f"({result.metadata['parameters']['n_steps']} steps, {result.metadata['baselines']['count']} shared "
        "dataset baselines)",
        f"- IG completeness error |Σ IG − (f(x) − mean f(b))|: mean {report['completeness']['mean']:.2e}, "
        f"max {report['completeness']['max']:.2e}",
        "",
        "| class | Pearson r | Σ map | Σ map − r |",
        "|---|---|---|---|",
    ]
    for digit in range(len(result.maps)):
        r, total = result.correlation[digit], result.map_sums[digit]
        lines.append(f"| {digit} | {r:.4f} | {total:.4f} | {total - r:.2e} |")
    lines += ["", "![class maps](class_maps.png)", ""]
    return "\n".join(lines)
