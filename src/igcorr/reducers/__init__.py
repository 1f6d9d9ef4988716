"""Streaming, mergeable dataset-wise statistics over per-sample quantities.

Every reducer and accumulator declares its state once (:class:`Accumulator`); merging, resetting, saving and
loading are derived from that declaration. See :mod:`igcorr.reducers.base`.
"""

from igcorr.reducers.base import (Accumulator, CoMoment, Computed, Reducer, SampleBatch, StateDictError,
                                  SumAndMax)
from igcorr.reducers.correlation import CorrelationReducer
from igcorr.reducers.moments import MomentsReducer
from igcorr.reducers.pearson import PearsonReducer
from igcorr.reducers.ttest import TTestReducer

__all__ = [
    "Accumulator",
    "CoMoment",
    "Computed",
    "CorrelationReducer",
    "MomentsReducer",
    "PearsonReducer",
    "Reducer",
    "SampleBatch",
    "StateDictError",
    "SumAndMax",
    "TTestReducer",
]
