"""The unsupervised lesion categorizer: deep features, k-means with model selection, agreement."""
