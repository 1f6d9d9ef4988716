"""Per-sample attribution methods."""

from igcorr.methods.integrated_gradients import IntegratedGradients

__all__ = ["IntegratedGradients"]
