"""Model pipelines: de-identified volume in, mask, probability map and findings out."""


class UnsuitableInput(ValueError):
    """The input is readable but not something this model can analyse (wrong shape, too small): refuse the job."""
