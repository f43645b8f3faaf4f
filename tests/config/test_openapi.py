"""The OpenAPI schema and the browsable docs are served, and list the platform's endpoints."""

import pytest
import yaml

pytestmark = pytest.mark.django_db


def test_schema_lists_the_api(client):
    response = client.get("/api/v1/schema/")
    schema = yaml.safe_load(response.content)
    assert response.status_code == 200
    assert {
        "/api/v1/me/",
        "/api/v1/api-tokens/",
        "/api/v1/api-tokens/{id}/",
        "/api/v1/audit/events/",
        "/api/v1/ai/analyses/",
        "/api/v1/ai/analyses/{id}/retry/",
        "/dicomweb/{slug}/studies",
    } <= set(schema["paths"])


def test_docs_page_is_served_without_any_cdn(client):
    response = client.get("/api/v1/docs/")
    body = response.content.decode()
    assert response.status_code == 200
    assert "swagger-ui" in body and "cdn." not in body and "jsdelivr" not in body
