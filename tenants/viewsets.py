"""The tenant-scoped base viewset: subclasses may narrow its queryset but never replace the scoping."""

from __future__ import annotations

from typing import Any, ClassVar

from django.db.models import Model, QuerySet
from django.http import Http404
from rest_framework import viewsets

from tenants.scoping import TenantScopedManager

NOT_FOUND_MESSAGE = "Not found."


class TenantScopedViewSet(viewsets.GenericViewSet):
    model: ClassVar[type[Model]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for forbidden in ("get_queryset", "queryset", "get_object"):
            if forbidden in cls.__dict__:
                raise TypeError(
                    f"{cls.__name__} defines {forbidden}: tenant scoping lives in TenantScopedViewSet; "
                    "narrow the rows with filter_rows() instead."
                )
        model = cls.__dict__.get("model")
        if model is not None and not isinstance(model._default_manager, TenantScopedManager):
            raise TypeError(f"{cls.__name__}.model {model.__name__} is not tenant-scoped.")

    def filter_rows(self, rows: QuerySet) -> QuerySet:
        """Narrow the tenant-scoped rows further (by role, by parent object...)."""
        return rows

    def get_queryset(self) -> QuerySet:
        return self.filter_rows(self.model._default_manager.all())

    def get_object(self) -> Model:
        lookup = self.kwargs[self.lookup_url_kwarg or self.lookup_field]
        # Another tenant's row and a missing row give the same answer.
        try:
            row = self.filter_queryset(self.get_queryset()).get(**{self.lookup_field: lookup})
        except (self.model.DoesNotExist, ValueError, TypeError) as error:
            raise Http404(NOT_FOUND_MESSAGE) from error
        self.check_object_permissions(self.request, row)
        return row


def access_row(model: type[Model], row_id: Any) -> Model:
    """Resolve an outside id to a row of the current tenant context, or the one 404 for all misses."""
    try:
        return model._default_manager.get(pk=row_id)
    except (model.DoesNotExist, ValueError, TypeError) as error:
        raise Http404(NOT_FOUND_MESSAGE) from error
