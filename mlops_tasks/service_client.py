"""An HTTP client of the prediction service: deploy verification and demo traffic.

It lives beside the domain, not in `serving/`: the pipeline talks to a running service over
HTTP and never imports the service itself.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from mlops_tasks.errors import DeploymentError
from mlops_tasks.specs import ModelSpec

if TYPE_CHECKING:
    import pandas as pd


def _plain(value: Any) -> Any:
    """A JSON-ready scalar: numpy types unwrapped, NaN as null."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _records(spec: ModelSpec, df: pd.DataFrame) -> list[dict[str, Any]]:
    """Snapshot rows as the service takes them: the columns a request carries (the raw inputs
    of derived features, the keys and time of lookup joins; `rows.required_inputs`), times as
    ISO text."""
    import pandas as pd

    from mlops_tasks.data.rows import required_inputs

    frame = df[required_inputs(spec)]
    for column in frame.columns:
        if pd.api.types.is_datetime64_any_dtype(frame[column].dtype):
            text = frame[column].map(lambda t: None if pd.isna(t) else t.isoformat())
            frame = frame.assign(**{column: text.astype(object)})
    return [{str(k): _plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


class ServiceClient:
    """`token` is the admin token (`/admin/reload`); `api_token` is sent as a bearer token with
    every other request (see `Settings.serving_client_token`)."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 30.0,
        api_token: str | None = None,
    ) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.token = token
        api = api_token
        headers = {"Authorization": f"Bearer {api}"} if api else {}
        self.http = httpx.Client(base_url=self.url, timeout=timeout, headers=headers)

    def reload(self) -> dict[str, Any]:
        resp = self.http.post("/admin/reload", headers={"Authorization": f"Bearer {self.token}"})
        resp.raise_for_status()
        out: dict[str, Any] = resp.json()
        return out

    def model(self, name: str) -> dict[str, Any]:
        resp = self.http.get(f"/v1/models/{name}")
        resp.raise_for_status()
        out: dict[str, Any] = resp.json()
        return out

    def predict(self, spec: ModelSpec, df: pd.DataFrame) -> dict[str, Any]:
        resp = self.http.post(
            f"/v1/models/{spec.name}/predict", json={"records": _records(spec, df)}
        )
        resp.raise_for_status()
        out: dict[str, Any] = resp.json()
        return out

    def feedback(self, model: str, labels: list[dict[str, Any]]) -> dict[str, Any]:
        resp = self.http.post(f"/v1/models/{model}/feedback", json={"labels": labels})
        resp.raise_for_status()
        out: dict[str, Any] = resp.json()
        return out

    def verify_serving(
        self, spec: ModelSpec, version: int, sample: pd.DataFrame, timeout: float = 60.0
    ) -> dict[str, Any]:
        """Ask the service to reload, wait until it serves `version`, and score `sample`."""
        import httpx

        try:
            if self.token:
                self.reload()
            deadline = time.monotonic() + timeout
            while (served := self.model(spec.name)).get("serving_version") != version:
                if time.monotonic() > deadline:
                    raise DeploymentError(
                        f"service at {self.url} serves {spec.name} "
                        f"v{served.get('serving_version')}, not v{version} after {timeout:.0f} s"
                        + (f": {served['error']}" if served.get("error") else ""),
                        model=spec.name,
                        version=version,
                    )
                time.sleep(1)
            out = self.predict(spec, sample)
        except httpx.HTTPError as err:
            raise DeploymentError(
                f"prediction service at {self.url} failed: {err}", model=spec.name, version=version
            ) from err
        if out["version"] != version or len(out["predictions"]) != len(sample):
            raise DeploymentError(
                f"service answered with v{out['version']} and "
                f"{len(out['predictions'])} predictions for {len(sample)} rows"
            )
        return {"served_version": version, "scored_rows": len(sample)}


def send_traffic(
    client: ServiceClient,
    spec: ModelSpec,
    frame: pd.DataFrame,
    batch: int = 50,
    labels: bool = True,
) -> dict[str, Any]:
    """Send `frame`'s rows as prediction requests; then post their true labels as feedback."""
    sent, versions, feedback = 0, set(), []
    for start in range(0, len(frame), batch):
        part = frame.iloc[start : start + batch]
        out = client.predict(spec, part)
        versions.add(out["version"])
        sent += len(part)
        if labels and spec.target in part:
            feedback += [
                {"request_id": out["request_id"], "row": i, "label": _plain(y)}
                for i, y in enumerate(part[spec.target].to_numpy())
            ]
    for start in range(0, len(feedback), 5_000):
        client.feedback(spec.name, feedback[start : start + 5_000])
    return {"rows": sent, "versions": sorted(versions), "labels": len(feedback)}
