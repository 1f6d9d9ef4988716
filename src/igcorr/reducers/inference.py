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

from igcorr.reducers.base import Computed, Reducer, SampleBatch

#: names of the per-component maps taken from each inference reducer (its key → the Result's extra map)
_PERMUTATION_MAPS = {"p_value": "p_value", "p_fwe": "p_fwe", "q_value": "q_value"}
_BOOTSTRAP_MAPS = {"map_low": "ci_low", "map_high": "ci_high", "map_se": "bootstrap_se"}
_PERMUTATION_REGIONS = {"region_p_value": "p_value", "region_p_fwe": "p_fwe", "region_q_value": "q_value"}
_BOOTSTRAP_REGIONS = {"region_low": "low", "region_high": "high", "region_se": "se"}


class WithInference(Reducer):
    """``main`` plus an optional permutation reducer and an optional bootstrap reducer.

    Parameters
    ----------
    main : Reducer
        The map's reducer (a :class:`~igcorr.reducers.correlation.CorrelationReducer`).
    permutation, bootstrap : Reducer, optional
        :class:`~igcorr.reducers.permutation.PermutationReducer` and
        :class:`~igcorr.reducers.bootstrap.BootstrapReducer` configured for the same outputs and regions.
    """

    def __init__(self, main: Reducer, permutation: Reducer | None = None, bootstrap: Reducer | None = None) -> None:
        self.parts = {"main": main, "permutation": permutation, "bootstrap": bootstrap}

    def _present(self) -> dict[str, Reducer]:
        return {name: part for name, part in self.parts.items() if part is not None}

    def update(self, batch: SampleBatch) -> None:
        for part in self._present().values():
            part.update(batch)

    def merge(self, other: "WithInference") -> None:
        for name, part in self._present().items():
            part.merge(other.parts[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{name}/{key}": value for name, part in self._present().items()
                for key, value in part.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, part in self._present().items():
            prefix = f"{name}/"
            part.load_state_dict({key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)})

    def compute(self) -> Computed:
        computed = self.parts["main"].compute()
        n_outputs = len(computed.maps)
        if self.parts["permutation"] is not None:
            tested = self.parts["permutation"].compute()
            for key, name in _PERMUTATION_MAPS.items():
                if key in tested:
                    computed.extra_maps[name] = torch.as_tensor(tested[key]).reshape(n_outputs, -1)
            computed.regions.update({name: tested[key] for key, name in _PERMUTATION_REGIONS.items() if key in tested})
        if self.parts["bootstrap"] is not None:
            resampled = self.parts["bootstrap"].compute()
            for key, name in _BOOTSTRAP_MAPS.items():
                if key in resampled:
                    computed.extra_maps[name] = torch.as_tensor(resampled[key]).reshape(n_outputs, -1)
            computed.regions.update({name: resampled[key] for key, name in _BOOTSTRAP_REGIONS.items()
                                     if key in resampled})
            for bound in ("low", "high", "se"):
                computed.diagnostics[f"correlation_{bound}"] = torch.as_tensor(np.asarray(resampled[f"correlation_{bound}"]))
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
        from igcorr.errors import InputError

        for name, value in (("permutations", permutations), ("bootstrap", bootstrap)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise InputError(f"{name} must be a non-negative integer, got {value!r}")
        if regions_only and regions is None:
            raise InputError("regions_only=True needs regions=...")
        if bootstrap == 1:
            raise InputError("bootstrap needs at least 2 replicates (0 turns it off)")
        self.permutations, self.bootstrap = int(permutations), int(bootstrap)
        self.regions, self.regions_only, self.level = regions, bool(regions_only), float(level)
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

    def describe(self) -> dict:
        """JSON-serialisable description for result metadata."""
        masks = None if self.masks is None else hashlib.sha256(np.ascontiguousarray(self.masks)).hexdigest()
        return {"permutations": self.permutations, "bootstrap": self.bootstrap, "level": self.level,
                "regions": self.names, "regions_only": self.regions_only, "region_masks_sha256": masks}
