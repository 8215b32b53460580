"""The agent over HTTP, for people and tools (docs/http.md).

- :mod:`~p2psync.http.routes`: the REST endpoints, generated from the local API's op table;
  error type -> HTTP status (sans-IO).
- :mod:`~p2psync.http.auth`: the API key file and the checks of who may call (sans-IO).
- :mod:`~p2psync.http.openapi`: the OpenAPI description, generated from the routes.
- :mod:`~p2psync.http.metrics`: Prometheus metrics of the agent (prometheus_client).
- :mod:`~p2psync.http.page`: the status page (static HTML + JS using the API).
- :mod:`~p2psync.http.server`: the aiohttp shell tying them together.
"""
