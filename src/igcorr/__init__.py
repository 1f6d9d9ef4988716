"""igcorr: dataset-wise attribution of deep networks (Integrated Gradient Correlation and its family)."""

from igcorr.errors import (
    ConstantTargetError,
    IgcorrError,
    InputError,
    ModelError,
    NonFiniteError,
    ResultFileError,
    ShapeError,
)

__version__ = "0.1.0"

__all__ = [
    "ConstantTargetError",
    "IgcorrError",
    "InputError",
    "ModelError",
    "NonFiniteError",
    "ResultFileError",
    "ShapeError",
    "__version__",
]
