"""IG vs IG2 and region-to-neuron attributions on the bundled digits (the worked example of docs/ig2_and_neurons.md).

Trains the digits CNN, then
1. explains every test image's predicted class with IG (zero baseline) and IG2 (GradPaths towards 2 training
   images of other classes, representation = the input of the last linear layer), and averages the maps per
   class;
2. compares both with deletion and insertion curves (pixels replaced, in the order of the attribution, by a
   fill image: blank, which is IG's baseline, or the sample's first IG2 reference) and their areas;
3. runs IGC over the test set on IG and on IG2 attributions for one class;
4. splits the network after its convolutions (512 units) and asks which units carry the IG of one region (the
   bottom bar of a "2"): the region-to-neuron attributions rank the units, ablating the top ones is compared
   with ablating the top units by conductance, and the dataset-wise version maps the region's share of the
   IGC onto units.

Writes figures and a JSON file of every number into docs/figures/ (about a minute on two CPU cores):

    .venv/bin/python examples/ig2_digits.py [--out docs/figures]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import igcorr  # noqa: E402
from igcorr_examples.digits import load_digits_split, train_digits_model  # noqa: E402

SEED = 0
REFERENCES = 2          # IG2 references per test image (training images of another class)
IG2_STEPS = 64          # k; the step size is "auto": k·η = 2‖x − x^r‖₂ per pair
IG_STEPS = 32
CLASS, ROWS = 2, slice(6, 8)   # the region: the bottom two rows, for class "2"
LAYER = "classifier.1"         # IG2's representation: the hidden ReLU layer (64 units) read by the last linear layer
NEURON_LAYER = "features.4"    # the split f = h ∘ g for the internal-neuron part: the max-pool output (32 × 4 × 4)


def deletion_insertion(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, attributions: torch.Tensor,
                       fill: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean softmax probability of ``target`` after deleting / inserting the t top-ranked pixels, t = 0..D.

    Deletion replaces pixels by those of ``fill`` (n, *x_shape), most positive attribution first; insertion
    starts from ``fill`` and restores the pixels of x in the same order. Returns two arrays of shape (D + 1,).
    """
    n, features = len(x), x[0].numel()
    flat, background = x.reshape(n, features), fill.reshape(n, features)
    order = attributions.reshape(n, features).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(features).expand(n, features))
    curves = []
    for restore in (False, True):
        values = []
        for removed in range(features + 1):
            chosen = rank < removed
            images = torch.where(chosen, flat, background) if restore else torch.where(chosen, background, flat)
            with torch.no_grad():
                probabilities = torch.softmax(model(images.reshape(x.shape)), dim=1)
            values.append(float(probabilities.gather(1, target[:, None]).mean()))
        curves.append(np.asarray(values))
    return curves[0], curves[1]


def auc(curve: np.ndarray) -> float:
    """Area under a curve sampled at the fractions 0, 1/D, ..., 1 (trapezoid rule)."""
    return float(np.sum((curve[1:] + curve[:-1]) / 2) / (len(curve) - 1))


def main(out: Path) -> dict:
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    split = load_digits_split(seed=SEED)
    model, accuracy = train_digits_model(split, seed=SEED, progress=False)
    x, labels = split.x_test, split.y_test
    with torch.no_grad():
        predicted = model(x).argmax(dim=1)
    numbers: dict = {"test_accuracy": accuracy, "n_test": len(x)}

    # 1. per-sample IG and IG2 of the predicted class
    clock = time.perf_counter()
    ig = igcorr.IntegratedGradients(model, score="softmax").attribute(x, None, target=predicted, n_steps=IG_STEPS)
    numbers["ig_seconds"] = time.perf_counter() - clock
    references = igcorr.select_references(split.x_train, split.y_train, predicted, k=REFERENCES, seed=SEED)
    clock = time.perf_counter()
    ig2 = igcorr.IG2(model, representation=LAYER, score="softmax").attribute(
        x, references, target=predicted, steps=IG2_STEPS, clip=(0.0, 1.0))
    numbers["ig2_seconds"] = time.perf_counter() - clock
    explained = ig2.predictions - ig2.counterfactual_predictions.mean(dim=1)
    numbers["ig2"] = {
        "references": REFERENCES, "steps": IG2_STEPS, "step_size": "auto (k·η = 2‖x − x^r‖)",
        "completeness_abs_mean": float(ig2.completeness_residual.abs().mean()),
        "completeness_abs_median": float(ig2.completeness_residual.abs().median()),
        "completeness_abs_max": float(ig2.completeness_residual.abs().max()),
        "explained_mean": float(explained.mean()),
        "gradcf_prediction_mean": float(ig2.counterfactual_predictions.mean()),
        "distance_start_mean": float(ig2.distances[..., 0].mean()),
        "distance_half_mean": float(ig2.distances[..., IG2_STEPS // 2].mean()),
        "distance_end_mean": float(ig2.distances[..., -1].mean()),
    }
    class_maps = {"IG": [], "IG2": []}
    for digit in range(10):
        chosen = (labels == digit) & (predicted == digit)
        class_maps["IG"].append(ig[chosen].mean(dim=0)[0].numpy())
        class_maps["IG2"].append(ig2.attributions[chosen].mean(dim=0)[0].numpy())
    figure, axes = plt.subplots(3, 10, figsize=(16, 5.4))
    for digit in range(10):
        axes[0, digit].imshow(x[labels == digit].mean(dim=0)[0].numpy(), cmap="gray_r", vmin=0, vmax=1)
        axes[0, digit].set_title(f"mean of {digit}", fontsize=9)
        for row, name in ((1, "IG"), (2, "IG2")):
            image = class_maps[name][digit]
            limit = float(np.abs(image).max())
            axes[row, digit].imshow(image, cmap="RdBu_r", vmin=-limit, vmax=limit)
            axes[row, digit].set_title(f"{name}, Σ={image.sum():.2f}", fontsize=9)
    for axis in axes.ravel():
        axis.set_axis_off()
    figure.suptitle("Digits: mean attribution of the predicted class (softmax) per class — IG (zero baseline) "
                    f"vs IG2 ({REFERENCES} other-class references, {IG2_STEPS} steps); each map on its own "
                    "symmetric scale")
    figure.savefig(out / "ig2_class_maps.png", dpi=110, bbox_inches="tight")
    plt.close(figure)

    # 2. deletion and insertion curves
    generator = torch.Generator().manual_seed(SEED)
    rankings = {"IG": ig, "IG2": ig2.attributions, "random": torch.rand(ig.shape, generator=generator)}
    fills = {"blank": torch.zeros_like(x), "reference": references[:, 0]}
    fractions = np.linspace(0, 1, x[0].numel() + 1)
    figure, axes = plt.subplots(2, 2, figsize=(11, 8))
    for row, (fill_name, fill) in enumerate(fills.items()):
        curves = {name: deletion_insertion(model, x, predicted, values, fill) for name, values in rankings.items()}
        numbers[f"deletion_auc_{fill_name}"] = {name: auc(pair[0]) for name, pair in curves.items()}
        numbers[f"insertion_auc_{fill_name}"] = {name: auc(pair[1]) for name, pair in curves.items()}
        for name, (deletion, insertion) in curves.items():
            axes[row, 0].plot(fractions, deletion, label=f"{name} (AUC {auc(deletion):.3f})")
            axes[row, 1].plot(fractions, insertion, label=f"{name} (AUC {auc(insertion):.3f})")
        for axis, title in zip(axes[row], ("deletion (lower is better)", "insertion (higher is better)")):
            axis.set_xlabel(f"fraction of pixels replaced by the {fill_name} image" if title.startswith("deletion")
                            else f"fraction of pixels restored into the {fill_name} image")
            axis.set_ylabel("mean probability of the predicted class")
            axis.set_title(f"{title}, fill = {fill_name}")
            axis.legend()
            axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out / "ig2_deletion_insertion.png", dpi=110, bbox_inches="tight")
    plt.close(figure)

    # 3. dataset-wise: IGC of one class on IG and on IG2 attributions
    clock = time.perf_counter()
    igc = igcorr.IGC(model, score="softmax").attribute((x, labels), n_steps=IG_STEPS, outputs=[CLASS], seed=SEED,
                                                        progress=False)
    igc2 = igcorr.IGC(model, score="softmax").attribute(
        (x, labels), baselines=REFERENCES, outputs=[CLASS], seed=SEED, progress=False,
        path=igcorr.IG2Path(representation=LAYER, steps=IG2_STEPS, clip=(0.0, 1.0)))
    numbers["igc_seconds"] = time.perf_counter() - clock
    for name, result in (("igc_ig", igc), ("igc_ig2", igc2)):
        numbers[name] = {"class": CLASS, "correlation": float(result.correlation[0]),
                         "baseline_term": float(result.baseline_term[0]), "map_sum": float(result.map_sums[0]),
                         "completeness_mean": float(result.diagnostics["completeness_mean"][0]),
                         "region_share": float(result.maps[0, 0, ROWS].sum())}

    # 4. internal neurons: which hidden units carry the IG of the region, and what ablating them does
    region = torch.zeros(1, 8, 8, dtype=torch.bool)
    region[:, ROWS] = True
    # raw logits: a softmax probability saturates, so after a few ablations every attribution would vanish
    neurons = igcorr.InternalNeurons(model, NEURON_LAYER)
    chosen = (labels == CLASS) & (predicted == CLASS)
    samples = x[chosen]
    logit_ig = igcorr.IntegratedGradients(model).attribute(samples, None, target=CLASS, n_steps=IG_STEPS)
    region_scores = neurons.region_attribution(samples, region, target=CLASS, n_steps=IG_STEPS)
    conductance = neurons.conductance(samples, target=CLASS, n_steps=IG_STEPS)
    counts = [0, 16, 32, 48, 64, 96, 128]
    curves_ablation = {ranking: neurons.ablation_curve(samples, region, target=CLASS, counts=counts, ranking=ranking,
                                                       n_steps=IG_STEPS) for ranking in ("region", "conductance")}
    mean_region = region_scores.double().mean(dim=0).reshape(-1)
    numbers["neurons"] = {
        "class": CLASS, "layer": NEURON_LAYER, "score": "logit", "n_units": int(mean_region.numel()),
        "n_samples": int(chosen.sum()),
        "region_ig_mean": float((logit_ig * region).flatten(1).sum(dim=1).mean()),
        "ig_total_mean": float(logit_ig.flatten(1).sum(dim=1).mean()),
        "sum_of_region_scores_mean": float(mean_region.sum()),
        "conductance_sum_mean": float(conductance.double().mean(dim=0).sum()),
        "top5_share_of_region_scores": float(mean_region.sort(descending=True).values[:5].sum() / mean_region.sum()),
        "top_units_by_region": curves_ablation["region"].order[:5].tolist(),
        "top_units_by_conductance": curves_ablation["conductance"].order[:5].tolist(),
        "ablation": {ranking: {"counts": curve.counts.tolist(), "inside": curve.inside.tolist(),
                               "outside": curve.outside.tolist()} for ranking, curve in curves_ablation.items()},
    }
    share = neurons.region_correlation((x, labels), region[0:1], outputs=[CLASS], n_steps=IG_STEPS, seed=SEED)
    logit_igc = igcorr.IGC(model).attribute((x, labels), n_steps=IG_STEPS, outputs=[CLASS], progress=False)
    unit_map = share.maps[0].reshape(-1)
    top = np.argsort(-unit_map)[:5]
    numbers["neurons"]["region_igc"] = {"map_sum": float(share.map_sums[0]),
                                        "igc_region_share": float(logit_igc.maps[0, 0, ROWS].sum()),
                                        "igc_correlation": float(logit_igc.correlation[0]),
                                        "top_units": top.tolist(), "top_values": unit_map[top].tolist()}
    figure, axes = plt.subplots(1, 4, figsize=(19, 4), gridspec_kw={"width_ratios": [1, 1, 1, 0.6]})
    for ranking, curve in curves_ablation.items():
        axes[0].plot(curve.counts, curve.inside, marker="o", label=f"ranked by {ranking}")
        axes[1].plot(curve.counts, curve.outside, marker="o", label=f"ranked by {ranking}")
    for axis, title in zip(axes[:2], ("IG mass inside the region (bottom rows)", "IG mass outside the region")):
        axis.set_xlabel(f"units of {NEURON_LAYER} zeroed (of {mean_region.numel()})")
        axis.set_ylabel(f"mean over the {int(chosen.sum())} test '{CLASS}'s (logit IG)")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend()
    order = np.argsort(-mean_region.numpy())
    axes[2].bar(np.arange(len(order)), mean_region.numpy()[order], label="region-to-neuron A^S")
    axes[2].bar(np.arange(len(order)), conductance.double().mean(dim=0).reshape(-1).numpy()[order], alpha=0.5,
                label="conductance")
    axes[2].set_xlabel("units, sorted by A^S")
    axes[2].set_xlim(-1, 129)
    axes[2].set_title("mean unit scores of the 128 units with the largest A^S", fontsize=10)
    positions = share.maps[0].sum(axis=0)  # (4, 4): the region's IGC share carried at each pooled position
    numbers["neurons"]["region_igc"]["by_position"] = positions.tolist()
    limit = float(np.abs(positions).max())
    shown = axes[3].imshow(positions, cmap="RdBu_r", vmin=-limit, vmax=limit)
    axes[3].set_title("region's IGC share by pooled\nposition (32 channels summed)", fontsize=10)
    axes[3].set_axis_off()
    figure.colorbar(shown, ax=axes[3], shrink=0.8, pad=0.08)
    axes[2].legend()
    figure.tight_layout()
    figure.savefig(out / "ig2_region_ablation.png", dpi=110, bbox_inches="tight")
    plt.close(figure)

    numbers["seconds"] = time.perf_counter() - started
    (out / "ig2_digits.json").write_text(json.dumps(numbers, indent=1))
    return numbers


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "figures")
    summary = main(parser.parse_args().out)
    print(json.dumps(summary, indent=1))
