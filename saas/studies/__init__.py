"""Studies: DICOM ingest, the tenant-scoped study index, and the S3 archive."""
