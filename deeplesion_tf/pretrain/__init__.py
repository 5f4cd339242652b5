"""Pretraining of the detector's trunk on the project's own unlabelled slices (issue 25)."""
