"""URL converters of the DICOMweb routes."""

from __future__ import annotations

from django.urls import register_converter
from django.urls.converters import get_converters


class UidConverter:
    """A DICOM UID in a URL: digits and dots, at most 64 characters (PS3.5 9.1), as the index holds them.

    Anything else (a NUL, `?`, an encoded `/`) matches no route and is a 404 before a view, the
    database or Orthanc sees it.
    """

    regex = r"[0-9.]{1,64}"

    def to_python(self, value: str) -> str:
        if value.startswith(".") or value.endswith(".") or ".." in value:
            raise ValueError(value)
        return value

    def to_url(self, value: str) -> str:
        return value


def register() -> None:
    """`<uid:...>` in path(); called by each URL module that uses it, whichever is imported first."""
    if "uid" not in get_converters():
        register_converter(UidConverter, "uid")
