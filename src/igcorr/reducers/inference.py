"""A correlation reducer together with its inference, all fed by the same pass over the data.

The permutation test and the bootstrap are reducers of their own (:mod:`igcorr.reducers.permutation`,
:mod:`igcorr.reducers.bootstrap`); this wrapper feeds them every batch the main reducer sees, merges and
saves them together (so checkpoints and multi-process runs carry the inference too), and folds their results
into one :class:`Computed`: per-component maps of p-values and interval bounds, per-output correlation
intervals, and per-region statistics.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from igcorr._validation import check_bool, check_fraction, check_int
from igcorr.errors import InputError
from igcorr.reducers.base import Computed, Reducer, SampleBatch

#: what the combined result takes from each inference reducer's Computed: {field: {its key: the result's key}}
_TAKEN = {
    "permutation": {"extra_maps": {"p_value": "p_value", "p_fwe": "p_fwe", "q_value": "q_value"},
                    "regions": {"p_value": "p_value", "p_fwe": "p_fwe", "q_value": "q_value"},
                    "diagnostics": {}},
    "bootstrap": {"extra_maps": {"low": "ci_low", "high": "ci_high", "se": "bootstrap_se"},
                  "regions": {"low": "low", "high": "high", "se": "se"},
                  "diagnostics": {"correlation_low": "correlation_low", "correlation_high": "correlation_high",
                                  "correlation_se": "correlation_se"}},
}


class WithInference(Reducer):
    """``main`` plus an optional permutation reducer and an optional bootstrap reducer.

    The parts are nested accumulators of this reducer: merging, resetting and saving (keys ``main.*``,
    ``permutation.*``, ``bootstrap.*``) come from the declaration; :meth:`update` feeds every part and
    :meth:`compute` combines their results.

    Parameters
    ----------
    main : Reducer
        The map's reducer (a :class:`~igcorr.reducers.correlation.CorrelationReducer`).
    permutation, bootstrap : Reducer, optional
        :class:`~igcorr.reducers.permutation.PermutationReducer` and
        :class:`~igcorr.reducers.bootstrap.BootstrapReducer` configured for the same outputs and regions.
    """

    kind = "reducer with inference"

    def __init__(self, main: Reducer, permutation: Reducer | None = None, bootstrap: Reducer | None = None) -> None:
        super().__init__()
        self.parts = {"main": main, "permutation": permutation, "bootstrap": bootstrap}
        # declared with the parts that can refuse a merge (overlapping samples, other input shapes) first, so
        # that a refused merge changes nothing
        for name in ("permutation", "bootstrap", "main"):
            if self.parts[name] is not None:
                self.add_state(name, self.parts[name])

    def _present(self) -> dict[str, Reducer]:
        return {name: part for name, part in self.parts.items() if part is not None}

    def update(self, batch: SampleBatch) -> None:
        for part in self._present().values():
            part.update(batch)

    def compute(self) -> Computed:
        """The main reducer's Computed, with the inference added: per-component maps ``p_value``, ``p_fwe``,
        ``q_value`` (permutations) and ``ci_low``, ``ci_high``, ``bootstrap_se`` (bootstrap), each (K, D) unless
        regions only are kept; per-output diagnostics ``correlation_low``, ``correlation_high``,
        ``correlation_se``; and per-region arrays (K, R) ``p_value``, ``p_fwe``, ``q_value``, ``low``, ``high``,
        ``se`` (numpy) when regions were given."""
        computed = self.parts["main"].compute()
        n_outputs = len(computed.maps)
        for name, taken in _TAKEN.items():
            part = self.parts[name]
            if part is None:
                continue
            result = part.compute()
            for key, target in taken["extra_maps"].items():
                if key in result.extra_maps:
                    computed.extra_maps[target] = torch.as_tensor(result.extra_maps[key]).reshape(n_outputs, -1)
            for key, target in taken["regions"].items():
                if key in result.regions:
                    computed.regions[target] = np.asarray(torch.as_tensor(result.regions[key]).cpu())
            for key, target in taken["diagnostics"].items():
                computed.diagnostics[target] = torch.as_tensor(result.diagnostics[key])
        return computed


class InferencePlan:
    """What inference a run computes, validated up front: permutations, bootstrap replicates and regions.

    Parameters
    ----------
    permutations : int
        Number of target permutations (0: no permutation test).
    bootstrap : int
        Number of Poisson bootstrap replicates (0: no intervals).
    regions : any form accepted by :func:`igcorr.regions.as_region_masks`, optional
        Regions tested and resampled as wholes (their sums).
    regions_only : bool
        Keep only region statistics (memory ∝ regions instead of input components).
    level : float
        Confidence level of the bootstrap intervals.
    """

    def __init__(self, permutations: int = 0, bootstrap: int = 0, regions: object = None, regions_only: bool = False,
                 level: float = 0.95) -> None:
        permutations = check_int(permutations, "permutations", minimum=0, hint="0 turns the permutation test off")
        bootstrap = check_int(bootstrap, "bootstrap", minimum=0, hint="0 turns the bootstrap off")
        regions_only = check_bool(regions_only, "regions_only")
        if regions_only and regions is None:
            raise InputError("regions_only=True needs regions=...")
        if bootstrap == 1:
            raise InputError("bootstrap needs at least 2 replicates (0 turns it off)")
        self.permutations, self.bootstrap = permutations, bootstrap
        self.regions, self.regions_only = regions, regions_only
        self.level = check_fraction(level, "level", hint="the confidence level of the intervals, e.g. 0.95")
        self.names: list[str] = []
        self.masks: np.ndarray | None = None
        self.targets: torch.Tensor | None = None

    @property
    def active(self) -> bool:
        """Whether anything beyond the map is computed."""
        return bool(self.permutations or self.bootstrap)

    def prepare(self, x_shape: tuple[int, ...], targets: "torch.Tensor | None") -> None:
        """Resolve the regions for inputs of ``x_shape``; ``targets`` (N, K) are all encoded targets (needed by
        the permutation test)."""
        from igcorr.regions import as_region_masks

        if self.regions is not None:
            self.names, self.masks = as_region_masks(self.regions, x_shape)
        self.targets = targets

    def wrap(self, main: Reducer, outputs: list[int], seed: int) -> Reducer:
        """``main`` with the planned inference reducers beside it."""
        if not self.active:
            return main
        from igcorr.reducers.bootstrap import BootstrapReducer
        from igcorr.reducers.permutation import PermutationReducer

        permutation = bootstrap = None
        if self.permutations:
            permutation = PermutationReducer(outputs, self.targets, self.permutations, seed, regions=self.masks,
                                             regions_only=self.regions_only)
        if self.bootstrap:
            bootstrap = BootstrapReducer(outputs, self.bootstrap, seed, level=self.level, regions=self.masks,
                                         regions_only=self.regions_only)
        return WithInference(main, permutation, bootstrap)

    def planned_bytes(self, n_outputs: int, n_features: int) -> int:
        """Memory the inference state will hold for K outputs and D input components (after :meth:`prepare`):
        (P + 1) permuted accumulators and 2·B weighted ones of K·F float64 values each (F = D, or the number of
        regions with ``regions_only``), doubled for the temporaries of their updates."""
        width = len(self.names) if self.regions_only else n_features
        if self.masks is not None and not self.regions_only:
            width += len(self.names)
        accumulators = (self.permutations + 1 if self.permutations else 0) + 2 * self.bootstrap
        return 2 * 8 * accumulators * n_outputs * width

    def describe(self) -> dict:
        """JSON-serialisable description for result metadata."""
        masks = None if self.masks is None else hashlib.sha256(np.ascontiguousarray(self.masks)).hexdigest()
        return {"permutations": self.permutations, "bootstrap": self.bootstrap, "level": self.level,
                "regions": self.names, "regions_only": self.regions_only, "region_masks_sha256": masks}
