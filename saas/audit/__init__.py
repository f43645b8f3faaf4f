"""Audit: the append-only, hash-chained record of every access to patient data (HIPAA, DICOM PS3.15 A.5)."""
