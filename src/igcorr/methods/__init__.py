"""Per-sample attribution methods."""

from igcorr.methods.baseline_shapley import BaselineShapley
from igcorr.methods.ig2 import IG2, IG2Attribution, IG2Path, OtherClassReferences, select_references
from igcorr.methods.integrated_gradients import IntegratedGradients
from igcorr.methods.neurons import AblationCurve, InternalNeurons

__all__ = [
    "AblationCurve",
    "BaselineShapley",
    "IG2",
    "IG2Attribution",
    "IG2Path",
    "IntegratedGradients",
    "InternalNeurons",
    "OtherClassReferences",
    "select_references",
]
