"""Trainable models for the synthetic benchmark and a small, reproducible training loop.

The paper attributes, besides the statistic itself (:func:`igcorr_examples.synthetic.function_model`), a
network trained to predict it. :class:`SmallConvNeXt` is the paper's network, :class:`SyntheticMLP` a lighter
alternative, :func:`trainable_model` builds either with a seeded initialisation, and :func:`train_model`
fits one to a :class:`~igcorr_examples.synthetic.SyntheticDataset` (or any map-style dataset of
``(x, y)`` pairs).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from igcorr_examples.synthetic import IMAGE_SIZE, num_outputs
from igcorr.errors import InputError, NonFiniteError, ShapeError
from igcorr.seeding import generator_for, keyed_uint64

__all__ = ["ConvNeXtBlock", "SmallConvNeXt", "SyntheticMLP", "train_model", "trainable_model"]

logger = logging.getLogger(__name__)

MODEL_KINDS = ("convnext", "mlp")

# Stream keys that separate the training randomness (shuffling, dropout) from everything else of a seed.
_SHUFFLE_STREAM = 0x7EA1_0001
_DROPOUT_STREAM = 0x7EA1_0002


class _ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of (n, C, H, W) feature maps (channels-last normalisation)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, C, H, W) -> (n, C, H, W)."""
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block: depthwise 7×7 conv, LayerNorm, pointwise MLP (×4, GELU), residual.

    Parameters
    ----------
    channels : int
        Number of channels C (kept).
    expansion : int
        Width factor of the pointwise MLP.

    Shapes
    ------
    (n, C, H, W) -> (n, C, H, W).
    """

    def __init__(self, channels: int, expansion: int = 4) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, kernel_size=7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.expand = nn.Linear(channels, expansion * channels)
        self.activation = nn.GELU()
        self.project = nn.Linear(expansion * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, C, H, W) -> (n, C, H, W)."""
        h = self.depthwise(x).permute(0, 2, 3, 1)  # channels last for the norm and the pointwise MLP
        h = self.project(self.activation(self.expand(self.norm(h))))
        return x + h.permute(0, 3, 1, 2)


class SmallConvNeXt(nn.Module):
    """The paper's small ConvNeXt for the synthetic benchmark.

    Stem: conv k2 s2 (1 → 16 channels) + LayerNorm. Four stages of widths 16/32/64/128 with ``depths`` blocks
    each (:class:`ConvNeXtBlock`); between stages and after the last one a LayerNorm + conv k2 s2
    downsampling, the last to ``final_width`` channels. For 64×64 inputs the feature maps are
    16×32×32 → 32×16×16 → 64×8×8 → 128×4×4 → 256×2×2 = 1024 features. Head: linear 1024 → 128 → 16 →
    ``outputs`` with BatchNorm1d, Mish and dropout after each hidden linear layer.

    Parameters
    ----------
    outputs : int
        Number of outputs (1 for experiments A–C, 4 logits for D).
    image_size : int
        Input side in pixels; must be divisible by 32.
    in_channels : int
        Input channels.
    widths : sequence of int
        Stage widths.
    depths : int or sequence of int
        Blocks per stage (an int is used for every stage); the paper uses 3.
    final_width : int
        Channels after the last downsampling.
    head : sequence of int
        Hidden sizes of the head.
    dropout : float
        Dropout probability in the head.

    Shapes
    ------
    (n, in_channels, image_size, image_size) -> (n, outputs). Contains BatchNorm: call ``.eval()`` before
    attributing it (the training routine returns it in eval mode).
    """

    def __init__(
        self,
        outputs: int,
        *,
        image_size: int = IMAGE_SIZE,
        in_channels: int = 1,
        widths: Sequence[int] = (16, 32, 64, 128),
        depths: int | Sequence[int] = 3,
        final_width: int = 256,
        head: Sequence[int] = (128, 16),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        _check_positive_int("outputs", outputs)
        _check_positive_int("in_channels", in_channels)
        widths = [_check_positive_int("widths", w) for w in widths]
        if not widths:
            raise InputError("widths must name at least one stage width")
        depths_list = [depths] * len(widths) if isinstance(depths, (int, np.integer)) else list(depths)
        if len(depths_list) != len(widths) or any(int(d) < 0 for d in depths_list):
            raise InputError(
                f"depths must be a non-negative int or one per stage ({len(widths)}), got {depths!r}"
            )
        factor = 2 ** (len(widths) + 1)  # stem + one downsampling after each stage
        if image_size % factor != 0 or image_size < factor:
            raise InputError(
                f"image_size must be a positive multiple of {factor} for {len(widths)} stages, got {image_size}"
            )
        if not 0.0 <= dropout < 1.0:
            raise InputError(f"dropout must lie in [0, 1), got {dropout}")

        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], kernel_size=2, stride=2),
                                  _ChannelLayerNorm(widths[0]))
        stages: list[nn.Module] = []
        targets = widths[1:] + [_check_positive_int("final_width", final_width)]
        for width, depth, next_width in zip(widths, depths_list, targets):
            stages.append(nn.Sequential(*(ConvNeXtBlock(width) for _ in range(int(depth)))))
            stages.append(nn.Sequential(_ChannelLayerNorm(width),
                                        nn.Conv2d(width, next_width, kernel_size=2, stride=2)))
        self.stages = nn.Sequential(*stages)
        features = final_width * (image_size // factor) ** 2
        layers: list[nn.Module] = [nn.Flatten()]
        previous = features
        for hidden in head:
            hidden = _check_positive_int("head", hidden)
            layers += [nn.Linear(previous, hidden), nn.BatchNorm1d(hidden), nn.Mish(), nn.Dropout(dropout)]
            previous = hidden
        layers.append(nn.Linear(previous, outputs))
        self.head = nn.Sequential(*layers)
        self.in_features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, in_channels, image_size, image_size) -> (n, outputs)."""
        return self.head(self.stages(self.stem(x)))


class SyntheticMLP(nn.Module):
    """A plain MLP on the flattened image: the lighter alternative to :class:`SmallConvNeXt`.

    Parameters
    ----------
    outputs : int
        Number of outputs.
    image_size : int
        Input side in pixels.
    in_channels : int
        Input channels.
    hidden : sequence of int
        Hidden layer sizes, each followed by Mish (and dropout when ``dropout > 0``).
    dropout : float
        Dropout probability after each hidden layer.

    Shapes
    ------
    (n, in_channels, image_size, image_size) -> (n, outputs).
    """

    def __init__(
        self,
        outputs: int,
        *,
        image_size: int = IMAGE_SIZE,
        in_channels: int = 1,
        hidden: Sequence[int] = (256, 64),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_positive_int("outputs", outputs)
        if not 0.0 <= dropout < 1.0:
            raise InputError(f"dropout must lie in [0, 1), got {dropout}")
        previous = _check_positive_int("in_channels", in_channels) * _check_positive_int("image_size", image_size) ** 2
        layers: list[nn.Module] = [nn.Flatten()]
        for width in hidden:
            width = _check_positive_int("hidden", width)
            layers += [nn.Linear(previous, width), nn.Mish()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            previous = width
        layers.append(nn.Linear(previous, outputs))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, in_channels, image_size, image_size) -> (n, outputs)."""
        return self.layers(x)


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def trainable_model(kind: str, experiment: str, *, seed: int = 0, image_size: int = IMAGE_SIZE,
                    **options: Any) -> nn.Module:
    """Build a trainable model for an experiment with a seeded, reproducible initialisation.

    The global torch RNG is used for the initialisation inside ``torch.random.fork_rng``, so the caller's
    random state is left untouched.

    Parameters
    ----------
    kind : {"convnext", "mlp"}
        :class:`SmallConvNeXt` or :class:`SyntheticMLP`.
    experiment : {"A", "B", "C", "D"}
        Sets the number of outputs (1, or 4 logits for D).
    seed : int
        Initialisation seed.
    image_size : int
        Input side in pixels.
    **options
        Passed to the model class (e.g. ``depths=1`` or ``hidden=(128,)``).

    Returns
    -------
    torch.nn.Module
        Maps (n, 1, image_size, image_size) to (n, 1) or (n, 4); in training mode.
    """
    if kind not in MODEL_KINDS:
        raise InputError(f"unknown model kind {kind!r}; choose one of {', '.join(MODEL_KINDS)}")
    outputs = num_outputs(experiment)
    model_class = SmallConvNeXt if kind == "convnext" else SyntheticMLP
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(keyed_uint64(int(seed), 0)) & ((1 << 63) - 1))
        return model_class(outputs, image_size=image_size, **options)


def _fetch(dataset: Dataset, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch (x, y) of a dataset: its ``get_batch`` when it has one, else stacked items."""
    get_batch = getattr(dataset, "get_batch", None)
    if callable(get_batch):
        return get_batch(indices)
    items = [dataset[int(i)] for i in indices]
    try:
        return torch.stack([torch.as_tensor(x) for x, _ in items]), torch.stack([torch.as_tensor(y) for _, y in items])
    except (TypeError, ValueError) as error:
        raise InputError(
            "the dataset must yield (x, y) pairs of tensors with the same shape for every item"
        ) from error


def _batches(n: int, batch_size: int, generator: torch.Generator | None) -> list[torch.Tensor]:
    """Index batches over n samples (shuffled when a generator is given); a trailing batch of one sample is
    merged into the previous batch so that BatchNorm always sees at least two samples."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    batches = list(torch.split(order, batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2] = torch.cat([batches[-2], batches.pop()])
    return batches


def _loss(kind: str, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if kind == "cross_entropy":
        if target.ndim == 2 and target.shape == prediction.shape:
            target = target.argmax(dim=1)
        if target.ndim != 1 or target.shape[0] != prediction.shape[0]:
            raise ShapeError(
                f"cross-entropy needs one-hot targets of shape {tuple(prediction.shape)} or class numbers of "
                f"shape ({prediction.shape[0]},), got {tuple(target.shape)}"
            )
        return F.cross_entropy(prediction, target.long())
    if target.shape != prediction.shape:
        raise ShapeError(
            f"the model predicts shape {tuple(prediction.shape)} but the targets have shape {tuple(target.shape)}; "
            "build the model with the experiment's number of outputs"
        )
    return F.mse_loss(prediction, target.to(prediction.dtype))


def _mean_loss(model: nn.Module, dataset: Dataset, kind: str, batch_size: int, device: torch.device,
               dtype: torch.dtype) -> float:
    """Mean per-sample loss of the model (in its current mode) over a dataset, without gradients."""
    total, count = 0.0, 0
    with torch.no_grad():
        for indices in _batches(len(dataset), batch_size, None):
            x, y = _fetch(dataset, indices)
            loss = _loss(kind, model(x.to(device=device, dtype=dtype)), y.to(device))
            total += float(loss) * len(indices)
            count += len(indices)
    return total / count


def train_model(
    model: nn.Module,
    dataset: Dataset,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    *,
    weight_decay: float = 0.01,
    loss: str | None = None,
    validation: Dataset | None = None,
) -> dict[str, list[float]]:
    """Fit a model to a dataset with AdamW; the model is trained in place and left in eval mode.

    Every epoch visits every sample once in an order drawn from a ``torch.Generator`` keyed by ``seed``;
    dropout uses the global RNG seeded from ``seed`` inside ``torch.random.fork_rng`` (the caller's random
    state is restored afterwards). A run with the same seed is therefore repeatable on the same machine.
    A trailing batch of a single sample is merged into the previous batch (BatchNorm needs two samples).

    On a CPU an epoch of :class:`SmallConvNeXt` (3 blocks per stage, 0.87 M parameters) costs tens of times
    more than one of :class:`SyntheticMLP` (hidden 256, 64; 1.07 M parameters); ``depths=1`` roughly halves
    the ConvNeXt's cost. When other processes share the cores, several torch threads can be much slower than
    one; use ``torch.set_num_threads(1)`` there. The paper's schedule (100,000 images, 50 epochs, lr 5e-5)
    takes hours for the ConvNeXt on a CPU; the CPU-sized defaults here are a few thousand images, tens of
    epochs and lr 1e-3. Losses do not depend on the number of threads beyond float rounding.

    Parameters
    ----------
    model : torch.nn.Module
        Maps (b, ...) inputs to (b, k) outputs; must have trainable parameters.
    dataset : torch.utils.data.Dataset
        Map-style dataset of ``(x, y)`` pairs; :class:`~igcorr_examples.synthetic.SyntheticDataset` is read
        through its fast ``get_batch``. y has shape (k,) (MSE) or is one-hot (k,) / a class number (cross
        entropy).
    epochs : int
        Passes over the data.
    batch_size : int
        Samples per optimiser step.
    lr : float
        AdamW learning rate (the paper used 5e-5 with 100,000 images and 50 epochs).
    seed : int
        Seed of the shuffling and of dropout.
    progress : bool
        Show a tqdm progress bar over the epochs.
    weight_decay : float
        AdamW weight decay.
    loss : {"mse", "cross_entropy"}, optional
        Default: cross entropy when ``dataset.experiment == "D"``, MSE otherwise.
    validation : torch.utils.data.Dataset, optional
        Evaluated (in eval mode) after every epoch.

    Returns
    -------
    dict of str to list of float
        ``"train_loss"`` (mean training loss of each epoch, in training mode), ``"epoch_seconds"``, and with
        ``validation`` also ``"val_loss"``; one entry per epoch.

    Raises
    ------
    InputError
        Bad arguments, a model without trainable parameters, or fewer than two samples.
    NonFiniteError
        The loss became NaN or infinite (lower ``lr``).
    """
    epochs = _check_positive_int("epochs", epochs)
    batch_size = _check_positive_int("batch_size", batch_size)
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise InputError(f"lr must be a positive finite number, got {lr!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed must be an integer, got {type(seed).__name__}")
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise InputError("the model has no trainable parameters: there is nothing to train")
    try:
        n = len(dataset)  # type: ignore[arg-type]
    except TypeError as error:
        raise InputError("dataset must be a map-style dataset with a length") from error
    if n < 2:
        raise InputError(f"training needs at least 2 samples, got {n}")
    if loss is None:
        loss = "cross_entropy" if getattr(dataset, "experiment", None) == "D" else "mse"
    if loss not in ("mse", "cross_entropy"):
        raise InputError(f"loss must be 'mse' or 'cross_entropy', got {loss!r}")
    device, dtype = parameters[0].device, parameters[0].dtype

    optimizer = torch.optim.AdamW(parameters, lr=float(lr), weight_decay=float(weight_decay))
    shuffle = generator_for(int(seed), _SHUFFLE_STREAM)
    history: dict[str, list[float]] = {"train_loss": [], "epoch_seconds": []}
    if validation is not None:
        history["val_loss"] = []

    epoch_range: Any = range(epochs)
    if progress:
        from tqdm.auto import tqdm

        epoch_range = tqdm(epoch_range, desc=f"training {type(model).__name__}", unit="epoch")
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
        torch.manual_seed(int(keyed_uint64(int(seed), _DROPOUT_STREAM)) & ((1 << 63) - 1))
        for epoch in epoch_range:
            start = time.perf_counter()
            model.train()
            total = 0.0
            for indices in _batches(n, batch_size, shuffle):
                x, y = _fetch(dataset, indices)
                batch_loss = _loss(loss, model(x.to(device=device, dtype=dtype)), y.to(device))
                if not torch.isfinite(batch_loss):
                    raise NonFiniteError(
                        f"the training loss became {float(batch_loss)} in epoch {epoch + 1}; lower lr "
                        f"(now {lr}) or check the targets for NaN/Inf"
                    )
                optimizer.zero_grad(set_to_none=True)
                batch_loss.backward()
                optimizer.step()
                total += float(batch_loss.detach()) * len(indices)
            history["train_loss"].append(total / n)
            message = f"epoch {epoch + 1}/{epochs}: train loss {total / n:.5g}"
            if validation is not None:
                model.eval()
                history["val_loss"].append(_mean_loss(model, validation, loss, max(batch_size, 256), device, dtype))
                message += f", validation loss {history['val_loss'][-1]:.5g}"
            history["epoch_seconds"].append(time.perf_counter() - start)
            logger.info("%s (%.2f s)", message, history["epoch_seconds"][-1])
            if progress:
                epoch_range.set_postfix_str(message.split(": ", 1)[1])
    model.eval()
    return history
