"""Evaluation: penalised IoU (model selection), FROC, bootstrap confidence intervals and
the ``--eval-only`` medical evaluation suite.

- :mod:`.penalized_iou`: ``compute``, ``match_image`` (per-image TP/FP/FN/TN), ``sweep``,
  ``PenalizedIoUEvaluator``
- :mod:`.froc`: lesion-level FROC and CPM
- :mod:`.average_precision`: COCO AP recomputable on resamples
- :mod:`.bootstrap`: seeded cluster (patient) bootstrap intervals
- :mod:`.suite`: ``MedicalEvaluationSuite`` and the results JSON schema
"""
from .penalized_iou import PenalizedIoUEvaluator, compute, match_image  # noqa: F401
from .suite import MedicalEvaluationSuite  # noqa: F401
