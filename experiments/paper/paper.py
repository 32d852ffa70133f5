"""The paper's numbers (Jaderberg et al. 2015, arXiv 1506.02025), % test error, and the cells
of each table we reproduce. A cell is (model, transform) with transform None for FCN/CNN."""

from __future__ import annotations

TABLE1_DATASETS = ("r", "rts", "p", "e")
TABLE1_CELLS = (
    ("fcn", None), ("cnn", None),
    ("st-fcn", "affine"), ("st-fcn", "projective"), ("st-fcn", "tps"),
    ("st-cnn", "affine"), ("st-cnn", "projective"), ("st-cnn", "tps"),
)
TABLE1 = {  # dataset -> cell -> error %
    "r": {("fcn", None): 2.1, ("cnn", None): 1.2,
          ("st-fcn", "affine"): 1.2, ("st-fcn", "projective"): 1.3, ("st-fcn", "tps"): 1.1,
          ("st-cnn", "affine"): 0.7, ("st-cnn", "projective"): 0.8, ("st-cnn", "tps"): 0.7},
    "rts": {("fcn", None): 5.2, ("cnn", None): 0.8,
            ("st-fcn", "affine"): 0.8, ("st-fcn", "projective"): 0.9, ("st-fcn", "tps"): 0.8,
            ("st-cnn", "affine"): 0.5, ("st-cnn", "projective"): 0.6, ("st-cnn", "tps"): 0.5},
    "p": {("fcn", None): 3.1, ("cnn", None): 1.5,
          ("st-fcn", "affine"): 1.5, ("st-fcn", "projective"): 1.4, ("st-fcn", "tps"): 1.4,
          ("st-cnn", "affine"): 0.8, ("st-cnn", "projective"): 0.8, ("st-cnn", "tps"): 0.8},
    "e": {("fcn", None): 3.2, ("cnn", None): 1.4,
          ("st-fcn", "affine"): 2.7, ("st-fcn", "projective"): 2.6, ("st-fcn", "tps"): 2.4,
          ("st-cnn", "affine"): 1.2, ("st-cnn", "projective"): 1.3, ("st-cnn", "tps"): 1.1},
}
TC = {("fcn", None): 13.2, ("cnn", None): 3.5, ("st-fcn", "affine"): 2.0, ("st-cnn", "affine"): 1.7}
ADDITION = {("fcn", None): 47.7, ("cnn", None): 14.7, ("st-fcn", "affine"): 18.5,
            ("2st-fcn", "affine"): 5.8}

PAPER_BUDGET = "150k steps, batch 256, SGD lr 0.01 x0.1 every 50k"


def paper_error(dataset: str, model: str, transform: str | None) -> float | None:
    """The paper's % error for a cell, or None if the paper has no such cell."""
    cell = (model, transform if model not in ("fcn", "cnn") else None)
    if dataset in TABLE1:
        return TABLE1[dataset].get(cell)
    if dataset == "tc":
        return TC.get(cell)
    if dataset == "addition":
        return ADDITION.get(cell)
    return None
