"""Are the maps right? Dataset-wise faithfulness, sanity checks and localisation.

* :func:`faithfulness`: deletion and insertion curves of dataset-wise maps, measured on the dataset-wise
  quantity they explain (the model's correlation with the targets), against a random-ranking band.
* :func:`model_randomisation`: cascading and independent randomisation of the model's parameters, layer by
  layer from the output, with the map recomputed each time; a map that does not change is flagged.
* :func:`localisation`: share of the map inside a known truth and the ROC AUC of the map against it.
* :func:`rank_correlation`, :func:`ssim`, :func:`roc_auc`: the comparisons they use.
* :func:`write_table`: rows of these results as CSV and markdown.
"""

from igcorr.evaluation.curves import DEFAULT_FRACTIONS, Faithfulness, faithfulness, removal_counts
from igcorr.evaluation.truth import Localisation, localisation
from igcorr.evaluation.sanity import SanityCheck, model_randomisation, parameter_layers
from igcorr.evaluation.similarity import rank_correlation, roc_auc, ssim
from igcorr.evaluation.table import markdown_table, write_table

__all__ = [
    "DEFAULT_FRACTIONS",
    "Faithfulness",
    "Localisation",
    "SanityCheck",
    "faithfulness",
    "localisation",
    "markdown_table",
    "model_randomisation",
    "parameter_layers",
    "rank_correlation",
    "removal_counts",
    "roc_auc",
    "ssim",
    "write_table",
]
