"""OpenAPI description of how ReadRoom's API is authenticated (read by drf-spectacular)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ActorAuthenticationScheme(OpenApiAuthenticationExtension):
    """`tenants.authentication.ActorAuthentication`: an API token as a bearer token, or the browser session."""

    target_class = "tenants.authentication.ActorAuthentication"
    name = ["apiToken", "session"]

    def get_security_definition(self, auto_schema):
        return [
            {"type": "http", "scheme": "bearer", "description": "An API token of one clinic, with named scopes."},
            {"type": "apiKey", "in": "cookie", "name": "sessionid", "description": "A signed-in browser session."},
        ]
