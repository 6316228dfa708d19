"""Datasets, class projections, dataset kinds and the DataModule."""
