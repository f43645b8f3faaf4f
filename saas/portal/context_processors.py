"""Template context: the current actor, for the header and the tenant switcher."""

from tenants.actors import ANONYMOUS


def actor(request):
    return {"actor": getattr(request, "actor", ANONYMOUS)}
