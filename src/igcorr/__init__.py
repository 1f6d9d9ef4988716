"""igcorr: dataset-wise attribution of deep networks (Integrated Gradient Correlation and its family)."""

from igcorr import baselines
from igcorr.errors import (
    ConstantTargetError,
    IgcorrError,
    InputError,
    ModelError,
    NonFiniteError,
    ResultFileError,
    ShapeError,
)
from igcorr.attribution import IG2, BaselineShapley, IntegratedGradients, InternalNeurons, select_references
from igcorr.dataset import BSC, IGC, IG2Path, IGaC, IGMoments, NaiveCorrelation, NaiveTTest
from igcorr.result import Result, load

__version__ = "0.1.0"

__all__ = [
    "BSC",
    "BaselineShapley",
    "IG2",
    "IG2Path",
    "IGC",
    "IGMoments",
    "IGaC",
    "ConstantTargetError",
    "IgcorrError",
    "InputError",
    "IntegratedGradients",
    "InternalNeurons",
    "ModelError",
    "NaiveCorrelation",
    "NaiveTTest",
    "NonFiniteError",
    "Result",
    "ResultFileError",
    "ShapeError",
    "__version__",
    "baselines",
    "load",
    "select_references",
]
