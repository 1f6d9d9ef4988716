"""Dataset-wise methods: one run loop (:mod:`igcorr.dataset.run`) streaming per-sample attributions, computed
as an estimator says (:mod:`igcorr.dataset.estimators`), into mergeable reducers."""

from igcorr.dataset.estimators import (Adaptive, Estimator, FixedRule, IG2Path, LayerRegion, MonteCarlo,
                                       NoAttribution, ShapleySampling)
from igcorr.dataset.methods import BSC, IGC, DatasetMethod, IGaC, IGMoments, NaiveCorrelation, NaiveTTest

__all__ = ["Adaptive", "BSC", "DatasetMethod", "Estimator", "FixedRule", "IG2Path", "IGC", "IGMoments", "IGaC",
           "LayerRegion", "MonteCarlo", "NaiveCorrelation", "NaiveTTest", "NoAttribution", "ShapleySampling"]
