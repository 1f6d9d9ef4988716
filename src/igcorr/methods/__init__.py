"""Per-sample attribution methods."""

from igcorr.methods.baseline_shapley import BaselineShapley
from igcorr.methods.integrated_gradients import IntegratedGradients

__all__ = ["BaselineShapley", "IntegratedGradients"]
