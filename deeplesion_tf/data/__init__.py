"""Bookmark geometry, DICOM and release readers, the synthetic PACS."""
