"""The "Models" view in the Airflow UI: registry, lineage, drift history, reports, approvals.

Registers a FastAPI app under `/mlops` (the routes are in `mlops_ui_app.py`) and a "Models"
entry in the UI's navigation that shows `/mlops/models` inside the UI. Airflow imports every
plugin file in every process (scheduler, DAG processor, each task), so this one imports nothing
but the plugin base class: the app is built on the API server's first request under `/mlops`,
and nothing reads the store before a request does.
"""

from __future__ import annotations

import importlib
from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/mlops"


class LazyApp:
    """An ASGI app that imports the Models app when the first request reaches it."""

    def __init__(self, module: str) -> None:
        self.module = module
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            self._app = importlib.import_module(self.module).app
        await self._app(scope, receive, send)


class MlopsUiPlugin(AirflowPlugin):
    # Airflow's base class declares these as list attributes that plugins override.
    name = "mlops_models"
    fastapi_apps: list[Any] = [  # noqa: RUF012
        {"app": LazyApp("mlops_ui_app"), "url_prefix": URL_PREFIX, "name": "Models"}
    ]
    external_views: list[Any] = [  # noqa: RUF012
        {
            "name": "Models",
            "href": f"{URL_PREFIX}/models",
            "destination": "nav",
            "url_route": "models",
        }
    ]
