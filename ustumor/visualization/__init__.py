"""Figures and pages for papers and run reviews: prediction-vs-truth images, training and
evaluation plots, and the per-run HTML report. Grad-CAM is in :mod:`ustumor.interpretation`."""
