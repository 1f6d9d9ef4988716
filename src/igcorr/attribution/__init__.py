"""Per-sample attribution methods, on one base class (:class:`igcorr.attribution.base.PerSampleMethod`)."""

from igcorr.attribution.baseline_shapley import BaselineShapley
from igcorr.attribution.ig2 import IG2, IG2Attribution, OtherClassReferences, select_references
from igcorr.attribution.integrated_gradients import IntegratedGradients
from igcorr.attribution.neurons import AblationCurve, InternalNeurons

__all__ = [
    "AblationCurve",
    "BaselineShapley",
    "IG2",
    "IG2Attribution",
    "IntegratedGradients",
    "InternalNeurons",
    "OtherClassReferences",
    "select_references",
]
