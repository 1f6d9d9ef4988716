"""Streaming, mergeable dataset-wise statistics over per-sample quantities."""

from igcorr.reducers.base import CoMoment, Computed, Reducer, SampleBatch
from igcorr.reducers.correlation import CorrelationReducer
from igcorr.reducers.moments import MomentsReducer
from igcorr.reducers.pearson import PearsonReducer
from igcorr.reducers.ttest import TTestReducer

__all__ = [
    "CoMoment",
    "Computed",
    "CorrelationReducer",
    "MomentsReducer",
    "PearsonReducer",
    "Reducer",
    "SampleBatch",
    "TTestReducer",
]
