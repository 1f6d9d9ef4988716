"""Streaming, mergeable dataset-wise statistics over per-sample quantities."""

from igcorr.reducers.base import CoMoment, Computed, Reducer, SampleBatch
from igcorr.reducers.correlation import CorrelationReducer

__all__ = ["CoMoment", "Computed", "CorrelationReducer", "Reducer", "SampleBatch"]
