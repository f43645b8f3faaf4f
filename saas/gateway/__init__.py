"""The edge gateway that runs at a clinic: DICOM in, STOW-RS out. Imports no Django."""
