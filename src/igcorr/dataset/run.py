"""The one dataset run loop: every dataset-wise method streams its data through :class:`DatasetRun`.

A run probes the data (input layout, shapes, number of outputs, batch independence), resolves the outputs,
configures a path integrator and the baselines, sizes its batches under the memory budget, then streams this
process's shard of the samples (or what a checkpoint left) through the estimator into a reducer, saving
checkpoints as it goes, and merges the reducers of all processes of a torch.distributed run. What differs
between methods is given to it as typed objects: the :class:`~igcorr.dataset.estimators.Estimator` (what is
computed per sample), a reducer factory (what is accumulated) and the inference plan (permutations,
bootstrap, regions).
"""

from __future__ import annotations

import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from igcorr import baselines as baseline_forms
from igcorr import distributed
from igcorr._validation import check_bool, check_optional_positive_int, check_seed
from igcorr.data import Batch, DataSource
from igcorr.dataset.checkpoint import DEFAULT_EVERY_SECONDS, Checkpoint, DataDigest, model_fingerprint
from igcorr.dataset.estimators import Estimator, MonteCarlo, RunSetup, SampleReader
from igcorr.dataset.targets import all_targets, encode_targets
from igcorr.errors import InputError, ShapeError
from igcorr.inputs import InputLayout, choose_layout
from igcorr.model import ModelAdapter, resolve_outputs
from igcorr.paths.budget import CHUNK_CANDIDATES, MemoryBudget
from igcorr.paths.integrator import PathIntegrator
from igcorr.reducers import Reducer, SampleBatch
from igcorr.reducers.base import Computed
from igcorr.reducers.correlation import BLOCK_BYTES
from igcorr.reducers.inference import InferencePlan

logger = logging.getLogger(__name__)

#: share of the memory budget that one batch of per-sample buffers (float64 attributions, baselines) may take
_BATCH_SHARE = 0.25
#: upper bound of that share when the budget is large: larger batches do not run faster, once a batch's path
#: holds ``_BATCH_POINTS`` points
_BATCH_BYTES = 128 * 2**20
_MAX_DEFAULT_BATCH = 256
#: path points a batch's paths should hold together when the budget allows (more than the 128 MiB above may then
#: be used): with many outputs behind a linear readout, one sample's attributions are K·D float64 values, and a
#: batch of one or two samples gives the path integrals chunks too short to amortise their forward and
#: backward passes
_BATCH_POINTS = 512
#: bytes per attributed value that a batch holds at once (measured): the float64 attributions (the integrator's
#: sums, projected through the readout and averaged over the paths in place) and a boolean (the finiteness check)
_BYTES_PER_ATTRIBUTION = 8 + 1
#: float64 copies of a batch's attributions that reducers other than the block-wise correlation reducer may make
#: while they fold a batch in (squares, weighted copies, Monte-Carlo variances)
_REDUCER_COPIES = 1
#: bytes per output that a batch holds per sample beside its attributions: targets, predictions and baseline
#: predictions, and the temporaries of their co-moments and completeness residuals (about 120 at 100,000 outputs,
#: from the peak of a run that did not count them)
_BYTES_PER_OUTPUT = 160


def _disk_working_bytes(budget: MemoryBudget) -> int:
    """Memory the map state stored on disk keeps: the block of outputs being updated, with its temporaries (see
    MapMoment), at most an eighth of the budget."""
    return max(1, min(BLOCK_BYTES, budget.bytes // 8))


@dataclass(frozen=True)
class RunOptions:
    """How a run streams: batch size (None: from the memory budget), seed, progress bar, checkpoint file and
    seconds between checkpoint writes."""

    batch_size: int | None = None
    seed: int = 0
    progress: bool = True
    checkpoint: str | os.PathLike | None = None
    checkpoint_every: float = DEFAULT_EVERY_SECONDS

    def __post_init__(self) -> None:
        check_optional_positive_int(self.batch_size, "batch_size")
        check_seed(self.seed)
        check_bool(self.progress, "progress")


@dataclass(frozen=True)
class EngineOptions:
    """How path integrals are evaluated: the memory budget, a fixed chunk size (None: tuned), the output
    strategy, and the model's input layout (None: chosen from the data)."""

    max_memory: int | None = None
    chunk_points: int | None = None
    output_strategy: str = "auto"
    inputs: InputLayout | None = None


@dataclass
class RunOutcome:
    """What a run produced, for the method to turn into a Result."""

    computed: Computed
    outputs: list[int]
    n_model_outputs: int
    n_samples: int
    x_shape: tuple[int, ...]
    map_shape: tuple[int, ...]
    layout: InputLayout
    metadata: dict[str, Any] = field(default_factory=dict)


class DatasetRun:
    """One dataset-wise computation: ``run`` streams the data and returns the reduced state.

    Parameters
    ----------
    name : str
        The method's name (progress bar, metadata, checkpoint fingerprint).
    adapter : ModelAdapter
        The model.
    engine : EngineOptions
        Memory budget, chunking and input layout.
    """

    def __init__(self, name: str, adapter: ModelAdapter, engine: EngineOptions) -> None:
        self.name = name
        self.adapter = adapter
        self.engine = engine

    def run(self, data: Any, *, estimator: Estimator, baselines: baseline_forms.BaselineSpec | None,
            make_reducer: Callable[[list[int]], Reducer], outputs: Any, options: RunOptions,
            inference: InferencePlan | None = None, parameters: dict[str, Any] | None = None,
            check_targets: Callable[[DataSource, int, list[int]], None] | None = None,
            prepare: Callable[[DataSource, int, list[int], dict[str, Any]], None] | None = None) -> RunOutcome:
        """Stream ``data`` through ``estimator`` into reducers from ``make_reducer(outputs)``.

        ``check_targets`` is called before any model call on the targets (e.g. constant targets), ``prepare``
        once the outputs are known (it may add entries to ``parameters``, which go into the metadata).
        """
        parameters = dict(parameters or {})
        started = time.perf_counter()
        source = DataSource(data, 1 if options.batch_size is None else options.batch_size)
        if source.has_length and len(source) < 2:
            raise InputError(
                "the dataset is empty: there is nothing to attribute" if len(source) == 0 else
                "the dataset has a single sample: a correlation over samples needs at least two"
            )
        saver = self._checkpoint(options, source)
        try:
            return self._run(source, saver, started, estimator=estimator, baselines=baselines,
                             make_reducer=make_reducer, outputs=outputs, options=options, inference=inference,
                             parameters=parameters, check_targets=check_targets, prepare=prepare)
        finally:
            if saver is not None:
                saver.release()

    @staticmethod
    def _checkpoint(options: RunOptions, source: DataSource) -> Checkpoint | None:
        """The run's checkpoint, its folder test-written and its lock taken, before any model call."""
        if options.checkpoint is None:
            return None
        if not source.resumable:
            raise InputError(
                "this DataLoader's sampler draws another set of samples at every pass (with replacement, weighted "
                "or custom), so a checkpoint could not be resumed; use shuffle=True or a SubsetRandomSampler, or "
                "run without checkpoint"
            )
        rank, world_size = distributed.world()
        path = Path(options.checkpoint)
        if world_size > 1:
            path = path.with_name(f"{path.name}.rank{rank}-of-{world_size}")
        saver = Checkpoint(path, every_seconds=options.checkpoint_every)
        saver.acquire()
        return saver

    def _run(self, source: DataSource, saver: Checkpoint | None, started: float, *, estimator: Estimator,
             baselines: baseline_forms.BaselineSpec | None, make_reducer: Callable[[list[int]], Reducer],
             outputs: Any, options: RunOptions, inference: InferencePlan | None, parameters: dict[str, Any],
             check_targets: Callable[[DataSource, int, list[int]], None] | None,
             prepare: Callable[[DataSource, int, list[int], dict[str, Any]], None] | None) -> RunOutcome:
        with self.adapter.frozen():
            raw_probe = source.raw_head(4)
            layout = choose_layout(raw_probe, self.engine.inputs)
            layout.fit(raw_probe, self.adapter.model)
            source.layout = layout
            adapter = self.adapter.with_forward(layout.wrap(self.adapter.model))
            probe = adapter.prepare_inputs(source.head(4))
            probe_extras = _on(source.extras(raw_probe), probe.device)
            x_shape = tuple(probe.shape[1:])
            map_shape = tuple(layout.reduce(torch.zeros((1, 1) + x_shape, dtype=probe.dtype)).shape[2:])
            n_model_outputs = adapter.n_outputs(probe, probe_extras)
            adapter.check_batch_independence(probe, probe_extras)
            selected = resolve_outputs(outputs, n_model_outputs)
            output_index = torch.as_tensor(selected, dtype=torch.int64, device=probe.device)
            integrator = PathIntegrator(adapter, max_memory=self.engine.max_memory,
                                        chunk_points=self.engine.chunk_points,
                                        output_strategy=self.engine.output_strategy)
            integrator.configure(probe, output_index, probe_extras)
            spec = baselines if baselines is not None and estimator.uses_baselines else _NoBaselines()
            if check_targets is not None:
                check_targets(source, n_model_outputs, selected)
            if prepare is not None:
                prepare(source, n_model_outputs, selected, parameters)
            # whether the maps' K·D state can be kept on disk (see _check_state_memory); after prepare, which
            # some reducers need (the t-test's thresholds)
            main_reducer = make_reducer(selected)
            disk = callable(getattr(main_reducer, "store_maps_on_disk", None)) and not isinstance(
                estimator, MonteCarlo)
            # the correlation reducer alone folds a batch in block by block, without copies of its attributions
            block_wise = disk and not (inference is not None and inference.active)
            # and, behind a linear readout, projects the integrals over the readout's inputs one block of outputs
            # at a time: a batch then holds H·D values per sample instead of K·D (plain inputs only: other layouts
            # reduce the attributions before the reducer sees them)
            integrator.defer_projection = (
                block_wise and integrator.readout is not None and estimator.integrals_go_to_reducer
                and main_reducer.projects_readout and type(layout).reduce is InputLayout.reduce)
            held = integrator.readout.width if integrator.defer_projection else None
            point_bytes = integrator.bytes_per_point(probe, integrator.width, probe_extras)
            chunk_bytes = integrator.chunk_points * point_bytes  # the largest chunk the integrator may use
            if options.batch_size is None:
                source.batch_size = self._batch_size(integrator.budget, len(selected), x_shape, spec, probe,
                                                     _points_per_sample(estimator, spec), chunk_bytes,
                                                     map_shape, disk, block_wise, held)
            seed = int(options.seed)
            spec.prepare(x_shape, source, seed)
            setup = RunSetup(adapter, integrator, output_index, n_model_outputs, seed, spec, probe, probe_extras,
                             SampleReader(source, adapter.prepare_inputs, n_model_outputs, selected))
            estimator = estimator.resolve(setup)  # e.g. a pilot that chooses the number of nodes
            per_batch = estimator.bind(setup)
            parameters = {**estimator.describe(), **parameters}
            recorded_shape: list[tuple[int, ...]] = []

            def step(batch: Batch) -> SampleBatch:
                x = adapter.prepare_inputs(batch.x)
                if tuple(x.shape[1:]) != x_shape:
                    raise ShapeError(
                        f"sample {batch.start} has shape {tuple(x.shape[1:])} but earlier samples have {x_shape}"
                    )
                indices = np.arange(batch.start, batch.start + len(x))
                targets = encode_targets(batch.y, n_model_outputs, selected).to(x.device)
                integrals = per_batch(x, indices, _on(batch.extras, x.device))
                attributions = None if integrals is None else layout.reduce(integrals.attributions, batch.extras)
                if attributions is not None and not recorded_shape:
                    recorded_shape.append(tuple(attributions.shape[2:]))
                return SampleBatch(
                    indices=torch.as_tensor(indices, device=x.device), inputs=x, targets=targets,
                    attributions=attributions,
                    predictions=None if integrals is None else integrals.predictions,
                    baseline_predictions=None if integrals is None else integrals.baseline_predictions,
                    attribution_variance=None if integrals is None else integrals.attribution_variance,
                    steps=None if integrals is None else integrals.steps,
                    projection=None if integrals is None else integrals.projection,
                )

            plan = inference if inference is not None and inference.active else None
            if plan is not None:
                plan.prepare(map_shape, None)
            # with the K·D state in memory, what it leaves beside the batch is the chunks' room
            batch_samples = min(source.batch_size, len(source)) if source.has_length else source.batch_size
            beside_state = _room_beside_state(integrator.budget, len(selected), map_shape, batch_samples,
                                              _per_sample_bytes(len(selected), x_shape, spec, probe,
                                                                block_wise, held)) if disk else 0
            smallest_chunk = min(CHUNK_CANDIDATES[0], integrator.chunk_points) * point_bytes
            maps_on_disk = self._check_state_memory(
                integrator.budget, estimator, plan, len(selected), map_shape, spec, disk=disk,
                prefer_disk=options.batch_size is None and (beside_state < smallest_chunk or _maps_belong_on_disk(
                    integrator.budget, len(selected), x_shape, spec, probe, chunk_bytes, map_shape, block_wise,
                    held)))
            if disk and not maps_on_disk and beside_state >= smallest_chunk:
                integrator.limit_chunks(MemoryBudget(beside_state), probe, probe_extras)
            if plan is not None and plan.permutations:
                plan.prepare(map_shape, all_targets(source, n_model_outputs, selected).to(probe.device))
            describe_baselines = spec.describe()
            if saver is not None:
                saver.fingerprint = {
                    "method": self.name, "model": model_fingerprint(self.adapter.model),
                    "score": adapter.describe_score(), "n_samples": len(source) if source.has_length else None,
                    "x_shape": list(x_shape), "outputs": selected, "seed": seed, "baselines": describe_baselines,
                    **parameters, "inference": plan.describe() if plan is not None else None,
                }
                saver.probe_inputs = probe.detach().cpu()
                saver.probe_extras = {name: value.cpu() for name, value in probe_extras.items()}
                saver.score_probe = lambda inputs, extras: adapter.evaluate(
                    inputs.to(device=probe.device, dtype=probe.dtype), output_index,
                    extras=_on(extras, probe.device)).cpu()

            def reducer_factory() -> Reducer:
                main = make_reducer(selected)
                if maps_on_disk:
                    main.store_maps_on_disk(_disk_working_bytes(integrator.budget))
                return plan.wrap(main, selected, seed) if plan is not None else main

            reducer, seen = run_reduction(source, reducer_factory, step, progress=options.progress,
                                          description=self.name.upper(), device=probe.device, checkpoint=saver)
        computed = reducer.compute()
        estimator.finish(computed, parameters)
        if recorded_shape and recorded_shape[0] != map_shape:
            map_shape = recorded_shape[0]  # attributions of an internal layer, not of the inputs
        metadata = {
            "method": self.name,
            "outputs": selected,
            "n_model_outputs": n_model_outputs,
            "n_samples": seen,
            "x_shape": list(x_shape),
            "inputs": layout.describe(),
            "score": adapter.describe_score(),
            "seed": seed,
            "batch_size": source.batch_size,
            "maps_storage": "disk" if maps_on_disk else "memory",
            "world_size": distributed.world()[1],
            "engine": integrator.describe(),
            "model_sha256": model_fingerprint(self.adapter.model),
            "parameters": parameters,
            "baselines": describe_baselines,
            "inference": plan.describe() if plan is not None else None,
            "seconds": time.perf_counter() - started,
            "versions": {"igcorr": _version(), "torch": torch.__version__, "numpy": np.__version__,
                         "python": platform.python_version()},
        }
        logger.info("%s on %d samples took %.1f s", self.name, seen, metadata["seconds"])
        return RunOutcome(computed, selected, n_model_outputs, seen, x_shape, map_shape, layout, metadata)

    @staticmethod
    def _check_state_memory(budget: MemoryBudget, estimator: Estimator, plan: InferencePlan | None, n_outputs: int,
                            map_shape: tuple[int, ...], spec: baseline_forms.BaselineSpec, disk: bool = False,
                            prefer_disk: bool = False) -> bool:
        """Refuse, before any path integral, a run whose accumulated state would not fit the memory budget:
        the maps' co-moments (three K·D float64 arrays, three more for Monte-Carlo variances) and the
        permutation and bootstrap accumulators.

        The maps' K·D state goes to disk (when the reducer can keep it there, ``disk``) if it does not fit the
        budget, or if it fits but leaves no room for one sample's attributions or for the smallest chunk of path
        points beside the batch (``prefer_disk``, see :func:`_maps_belong_on_disk` and :func:`_room_beside_state`);
        then only what stays in memory is counted: the blocks of outputs being
        updated and the inference accumulators. Returns whether the maps are stored on disk.
        """
        features = max(1, int(np.prod(map_shape, dtype=np.int64)))
        main = (6 if isinstance(estimator, MonteCarlo) else 3) * 8 * n_outputs * features
        inference = plan.planned_bytes(n_outputs, features) if plan is not None else 0
        on_disk = disk and not isinstance(estimator, MonteCarlo)
        if main + inference <= budget.bytes and not (on_disk and prefer_disk):
            return False
        kept = min(main, _disk_working_bytes(budget)) if on_disk else main
        if on_disk and kept + inference <= budget.bytes:
            logger.info("the maps' state (%.1f MiB) is kept on disk, in %s", main / 2**20, tempfile.gettempdir())
            return True
        parts = f"maps {kept / 2**20:.1f} MiB" + (" in memory, their K·D state on disk" if on_disk else "") + (
            f", permutations/bootstrap {inference / 2**20:.1f} MiB" if inference else "")
        raise InputError(
            f"the run's accumulated state needs about {(kept + inference) / 2**20:.1f} MiB ({parts}) for "
            f"{n_outputs} outputs × {features} components, more than max_memory={budget.bytes} bytes "
            f"({budget.bytes / 2**20:.1f} MiB). Raise max_memory, attribute fewer outputs, or keep region "
            "statistics only (regions_only=True)"
        )

    @staticmethod
    def _batch_size(budget: MemoryBudget, n_outputs: int, x_shape: tuple[int, ...],
                    spec: baseline_forms.BaselineSpec, probe: torch.Tensor, points_per_sample: int | None = None,
                    chunk_bytes: int | None = None, map_shape: tuple[int, ...] | None = None,
                    disk: bool = False, block_wise: bool = False, held_outputs: int | None = None) -> int:
        """Samples per batch such that the batch's attributions (see :func:`_per_sample_bytes`: one float64
        copy and a boolean, and one more copy unless ``block_wise``) and its baselines (Monte-Carlo draws
        included, with the temporaries of drawing them) fit their share of the budget. ``held_outputs`` is the
        number of columns a sample's attributions hold when it is not ``n_outputs`` (the readout's width, when the
        reducer projects them block by block of outputs).

        The room is a quarter of the budget, or what the path integrator's largest chunk (``chunk_bytes``) and
        the maps' state leave if that is more (with the state on disk, which the reducer allows when ``disk``,
        only its working blocks count; see :func:`_maps_belong_on_disk`). Of it, at most 128 MiB is used, or
        what the batch's paths need to hold ``_BATCH_POINTS`` points (``points_per_sample`` path points per
        sample, when the estimator fixes them) up to a quarter of the budget, or what one sample needs.

        With K outputs behind a linear readout, a sample's attributions are K·D values although its path
        integrals run over the readout's H inputs only: a batch sized by the 128 MiB alone would hold one or
        two samples, whose paths are too short for chunks that amortise the passes through the model.
        """
        per_sample = _per_sample_bytes(n_outputs, x_shape, spec, probe, block_wise, held_outputs)
        room = budget.fraction(_BATCH_SHARE).bytes
        if chunk_bytes is not None:
            features = max(1, int(np.prod(map_shape or x_shape, dtype=np.int64)))
            on_disk = disk and _maps_belong_on_disk(budget, n_outputs, x_shape, spec, probe, chunk_bytes, map_shape,
                                                    block_wise, held_outputs)
            kept = _disk_working_bytes(budget) if on_disk else 3 * 8 * n_outputs * features + BLOCK_BYTES
            room = _batch_room(budget, chunk_bytes, kept)
        wanted = _BATCH_BYTES
        if points_per_sample:  # enough samples for _BATCH_POINTS points, within a quarter of the budget
            wanted = max(wanted, min(-(-_BATCH_POINTS // points_per_sample) * per_sample,
                                     budget.fraction(_BATCH_SHARE).bytes))
        wanted = max(wanted, per_sample)  # never fewer than one sample that the room holds
        share = MemoryBudget(max(1, min(wanted, room)))
        fitting = share.count(per_sample, "one sample's attributions and baselines (the budget's share of a "
                                          "batch)")
        return int(min(fitting, _MAX_DEFAULT_BATCH))


def _per_sample_bytes(n_outputs: int, x_shape: tuple[int, ...], spec: baseline_forms.BaselineSpec,
                      probe: torch.Tensor, block_wise: bool = False, held_outputs: int | None = None) -> int:
    """Memory of one sample in a batch: its attributions (``_BYTES_PER_ATTRIBUTION`` bytes per value of its
    ``held_outputs`` columns, by default the ``n_outputs``, and ``_REDUCER_COPIES`` float64 copies unless
    ``block_wise``: the correlation reducer alone, which folds a batch in block by block of outputs), its
    per-output scalars (``_BYTES_PER_OUTPUT``) and its baselines (Monte-Carlo draws included, with the
    temporaries of drawing them)."""
    features = max(1, int(np.prod(x_shape, dtype=np.int64)))
    draws = int(getattr(spec, "count", 1))
    per_value = _BYTES_PER_ATTRIBUTION + (0 if block_wise else 8 * _REDUCER_COPIES)
    return (per_value * (held_outputs or n_outputs) * features + _BYTES_PER_OUTPUT * n_outputs
            + 3 * draws * features * max(probe.element_size(), 8))


def _batch_room(budget: MemoryBudget, chunk_bytes: int, kept: int) -> int:
    """Bytes a batch's buffers may take: what the largest chunk (at most three quarters of the budget) and the
    state kept in memory leave, and at least a quarter of the budget."""
    chunks = min(int(chunk_bytes), budget.fraction(1 - _BATCH_SHARE).bytes)
    return max(budget.fraction(_BATCH_SHARE).bytes, budget.bytes - chunks - kept)


def _maps_belong_on_disk(budget: MemoryBudget, n_outputs: int, x_shape: tuple[int, ...],
                         spec: baseline_forms.BaselineSpec, probe: torch.Tensor, chunk_bytes: int,
                         map_shape: tuple[int, ...] | None = None, block_wise: bool = False,
                         held_outputs: int | None = None) -> bool:
    """Whether the maps' K·D state should go to disk: it does not fit the budget, or it fits but leaves no room
    for one sample's attributions, which the state's absence would leave (many outputs behind a readout: the
    state is 3·K·D float64 values and one sample's buffers up to two K·D copies). See also
    :func:`_room_beside_state`."""
    features = max(1, int(np.prod(map_shape or x_shape, dtype=np.int64)))
    state = 3 * 8 * n_outputs * features
    if state > budget.bytes:
        return True
    per_sample = _per_sample_bytes(n_outputs, x_shape, spec, probe, block_wise, held_outputs)
    return (_batch_room(budget, chunk_bytes, state + BLOCK_BYTES) < per_sample
            <= _batch_room(budget, chunk_bytes, _disk_working_bytes(budget)))


def _room_beside_state(budget: MemoryBudget, n_outputs: int, map_shape: tuple[int, ...], batch_size: int,
                       per_sample: int) -> int:
    """Bytes the path integrator's chunks may take beside the maps' K·D state kept in memory (three float64
    K·D arrays at the end), the update's working block (``BLOCK_BYTES``, or less for small budgets, whose
    states are small blocks anyway) and one batch."""
    features = max(1, int(np.prod(map_shape, dtype=np.int64)))
    return (budget.bytes - 3 * 8 * n_outputs * features - _disk_working_bytes(budget)
            - int(batch_size) * int(per_sample))


def _points_per_sample(estimator: Estimator, spec: baseline_forms.BaselineSpec) -> int | None:
    """Path points of one sample for the estimators that fix them (quadrature nodes × baselines, or Monte-Carlo
    points); None for the others."""
    if isinstance(estimator, MonteCarlo):
        return max(1, int(estimator.points))
    nodes = getattr(getattr(estimator, "rule", None), "nodes", None)
    if nodes is None:
        return None
    return max(1, len(nodes)) * max(1, int(getattr(spec, "count", 1) or 1))


class _NoBaselines(baseline_forms.BaselineSpec):
    """Baseline spec of the estimators that use none."""

    count = 0

    def for_samples(self, indices: np.ndarray, x: torch.Tensor) -> torch.Tensor:
        raise InputError("this method uses no baselines")

    def describe(self) -> dict[str, Any]:
        return {"kind": "none"}


def stream(source: DataSource, reducer: Reducer, step: Callable[[Batch], SampleBatch], *, progress: bool,
           description: str, start: int = 0, stop: int | None = None, seen: int = 0,
           checkpoint: Checkpoint | None = None, digest: DataDigest | None = None) -> int:
    """Feed the batches of samples ``start`` to ``stop`` − 1 through ``step`` into ``reducer``.

    Parameters
    ----------
    seen : int
        Samples already folded into ``reducer`` (when resuming).
    checkpoint : Checkpoint, optional
        Saved whenever due, and once more at the end.
    digest : DataDigest, optional
        Hash of the samples read so far (continued here; saved with the checkpoint).

    Returns
    -------
    int
        Samples folded into ``reducer`` in total.
    """
    end = stop if stop is not None else (len(source) if source.has_length else None)
    total = end - start if end is not None else None
    position = start
    digest = digest if digest is not None else DataDigest()
    with tqdm(total=total, desc=description, unit="sample", disable=not progress, leave=False) as bar:
        for batch in source.batches(start, stop):
            reducer.update(step(batch))
            if checkpoint is not None:
                digest.update(batch)
            seen += len(batch.x)
            position = batch.start + len(batch.x)
            bar.update(len(batch.x))
            if checkpoint is not None and checkpoint.due():
                checkpoint.save(reducer, position, seen, digest)
    if checkpoint is not None:
        checkpoint.save(reducer, position, seen, digest, complete=True)
    return seen


def run_reduction(source: DataSource, make_reducer: Callable[[], Reducer], step: Callable[[Batch], SampleBatch], *,
                  progress: bool, description: str, device: torch.device,
                  checkpoint: Checkpoint | None = None) -> tuple[Reducer, int]:
    """Stream this process's share of ``source`` into a reducer, resuming from and writing ``checkpoint``, and
    merge the reducers of all processes of a torch.distributed run.

    Returns
    -------
    (Reducer, int)
        The reducer covering all samples of all processes, and the number of samples it holds.
    """
    rank, world_size = distributed.world()
    start, stop = 0, None
    if world_size > 1:
        distributed.require_length(source.has_length)
        start, stop = distributed.shard_bounds(len(source), rank, world_size)
    reducer, seen, complete = make_reducer(), 0, False
    digest = DataDigest()
    if checkpoint is not None:
        saved = checkpoint.load(start, stop)
        if saved is not None:
            # the samples already folded in are read again (no model call) and must hash the same
            for batch in source.batches(start, saved["next"]):
                digest.update(batch)
            checkpoint.verify_data(saved, digest)
            reducer.load_state_dict(_to_device(saved["state"], device))
            start, seen, complete = saved["next"], saved["seen"], saved["complete"]
    if not complete:
        seen = stream(source, reducer, step, progress=progress, description=description, start=start, stop=stop,
                      seen=seen, checkpoint=checkpoint, digest=digest)
    if world_size == 1:
        return reducer, seen
    states = distributed.all_gather(({k: v.detach().cpu() for k, v in reducer.state_dict().items()}, seen))
    merged = make_reducer()
    for state, _ in states:
        part = make_reducer()
        part.load_state_dict(_to_device(state, device))
        merged.merge(part)
    return merged, sum(count for _, count in states)


def _on(extras: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {name: value.to(device) for name, value in extras.items()}


def _to_device(state: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {name: tensor.to(device) for name, tensor in state.items()}


def _version() -> str:
    from igcorr import __version__

    return __version__
