"""Worked examples and benchmarks built on igcorr: the digits demo, the fMRI decoding example and the
synthetic 1/f benchmark (experiments A–D).

This package uses igcorr's public API and is not part of the library: ``import igcorr`` never imports it.
It ships in the same distribution; its optional needs come with ``pip install "igcorr[examples]"``
(scikit-learn, for the digits) and, for the fMRI example, ``pip install "igcorr[neuro]"`` (nibabel, nilearn).
The ``igcorr demo``, ``igcorr example`` and ``igcorr benchmark`` commands run it.
"""
