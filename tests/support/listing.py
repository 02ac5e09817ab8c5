"""Reading the simulated organization's lists as a client does, and checking its error answers."""

from __future__ import annotations

import httpx

from tests.support.keys import KEY

_http = httpx.Client(timeout=10)  # one pool for every test: a client per request costs more than the request


def get(server, path: str, key: str = KEY, **params) -> httpx.Response:
    """A GET of `path`; a parameter given a list goes as repeated keys."""
    return _http.get(server.base_url + path, params=params, headers={"Authorization": f"Bearer {key}"})


def walk(server, path: str, **params) -> tuple[list[dict], list[dict]]:
    """Every item of a list, following `last_id` page by page; and the pages."""
    pages = []
    while True:
        response = get(server, path, **params)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        if not pages[-1]["has_more"]:
            return [item for page in pages for item in page["data"]], pages
        params["after"] = pages[-1]["last_id"]


def assert_error(response: httpx.Response, status: int, param: str | None = None) -> dict:
    """An error in the Admin API's shape, with its request id; the error object."""
    assert response.status_code == status, response.text
    assert response.headers["x-request-id"].startswith("req_")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param
    return error
