"""Custom events go out encoded as serde.dumps encodes them, whatever they hold: the executor
encodes a custom event itself (orjson's plain call first, serde.dumps where that refuses), on
both deployments."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.helpers import url_on_each_deployment
from tests.sse import sse_events

ODD_APP = Path(__file__).resolve().parent / "odd_app" / "langgraph.json"


odd_url = url_on_each_deployment("odd_url", ODD_APP)


def test_custom_events_orjson_refuses_at_first_are_sent_as_serde_encodes_them(
    odd_url: str,
) -> None:
    body = {"assistant_id": "odd", "input": {}, "stream_mode": ["custom"]}
    with httpx.Client(base_url=odd_url, timeout=30) as http:
        response = http.post("/runs/stream", json=body)
    assert response.status_code == 200
    custom = [data for event, data in sse_events(response.text) if event == "custom"]
    assert custom == [
        {"plain": 1},
        {"1": "int key", "s": [1, 2.5]},
        {"array": [1.5, 2.5], "scalar": 9},
        ["a", "tuple"],
    ]
    assert "error" not in [event for event, _ in sse_events(response.text)]
