"""Model pipelines: de-identified volume in, mask, probability map and findings out."""
