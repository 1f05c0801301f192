"""The event hub and WS /api/events: order, bounded queues that drop the oldest, one job's events."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from sdflow.serve.events import EventHub
from tests.serve_helpers import FAST, TXT2IMG, client


def test_events_from_another_thread_arrive_in_order() -> None:
    async def main() -> list[int]:
        hub = EventHub(buffer=1000)
        with hub.subscribe() as subscription:
            thread = threading.Thread(target=lambda: [hub.publish("step", step=i) for i in range(200)])
            thread.start()
            got = [(await subscription.get())["step"] for _ in range(200)]
            thread.join()
        return got

    assert asyncio.run(main()) == list(range(200))


def test_a_slow_subscriber_loses_the_oldest_events_and_the_publisher_never_waits() -> None:
    async def main() -> tuple[list[int], int]:
        hub = EventHub(buffer=5)
        with hub.subscribe() as subscription:
            for i in range(50):
                hub.publish("step", step=i)  # nobody reads meanwhile
            await asyncio.sleep(0)  # the deliveries run on the loop
            await asyncio.sleep(0)
            got = [(await subscription.get())["step"] for _ in range(subscription.pending())]
            return got, subscription.dropped

    got, dropped = asyncio.run(main())
    assert got == list(range(45, 50)) and dropped == 45


def test_since_replays_kept_events_then_live_ones_without_gap() -> None:
    async def main() -> list[int]:
        hub = EventHub()
        first = hub.publish("queued", job="a")
        hub.publish("started", job="a")
        with hub.subscribe(since=first["seq"] - 1, job="a") as subscription:
            hub.publish("started", job="b")  # another job's: filtered out
            hub.publish("finished", job="a")
            return [(await subscription.get())["seq"] for _ in range(3)]

    assert asyncio.run(main()) == [1, 2, 4]


def test_closing_the_hub_ends_subscriptions() -> None:
    async def main() -> list[dict]:
        hub = EventHub()
        with hub.subscribe() as subscription:
            hub.publish("queued", job="a")
            hub.close()
            return [event async for event in subscription]

    assert [e["type"] for e in asyncio.run(main())] == ["queued"]


def test_one_jobs_events_over_the_websocket_in_order(tmp_path: Path) -> None:
    with client(tmp_path, worker=True) as http:
        job_id = http.post("/api/jobs", json={"workflow": TXT2IMG, "inputs": FAST}).json()["id"]
        events = []
        with http.websocket_connect(f"/api/events?since=0&job={job_id}") as socket:
            while not events or events[-1]["type"] not in ("finished", "failed", "cancelled"):
                events.append(socket.receive_json())
    types = [e["type"] for e in events]
    assert types[:2] == ["queued", "started"] and types[-1] == "finished", types
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert all(e["job"] == job_id for e in events)
    steps = [(e["node"], e["step"], e["total"]) for e in events if e["type"] == "step"]
    assert steps == [("denoised", 1, 2), ("denoised", 2, 2)]
    started = [e["node"] for e in events if e["type"] == "node_started"]
    done = [e["node"] for e in events if e["type"] in ("node_finished", "node_cached")]
    assert started == done and {"ckpt", "denoised", "save"} <= set(started)
    # a node's steps come between its start and its end
    denoise = [i for i, e in enumerate(events) if e.get("node") == "denoised"]
    assert events[denoise[0]]["type"] == "node_started" and events[denoise[-1]]["type"] == "node_finished"
    [output] = [e for e in events if e["type"] == "output"]
    assert output["node"] == "save" and output["url"].startswith("/api/outputs/txt2img_")
    assert types.index("output") < types.index("finished")
    with client(tmp_path) as http:
        assert http.get(output["url"]).content[:4] == b"\x89PNG"


def test_websocket_needs_the_token(tmp_path: Path) -> None:
    from starlette.websockets import WebSocketDisconnect

    with client(tmp_path, token="s3cret") as http:
        with pytest.raises(WebSocketDisconnect), http.websocket_connect("/api/events") as socket:
            socket.receive_json()
        with http.websocket_connect("/api/events?token=s3cret") as socket:
            http.post("/api/queue/pause", headers={"Authorization": "Bearer s3cret"})
            assert socket.receive_json()["type"] == "queue"


def test_preview_pictures_every_k_steps(tmp_path: Path) -> None:
    import base64
    import io

    from PIL import Image

    with client(tmp_path, worker=True, preview_every=2) as http:
        job_id = http.post("/api/jobs", json={"workflow": TXT2IMG, "inputs": {"steps": 5, "seed": 2}}).json()[
            "id"
        ]
        events = []
        with http.websocket_connect(f"/api/events?since=0&job={job_id}") as socket:
            while not events or events[-1]["type"] != "finished":
                events.append(socket.receive_json())
    previews = [e for e in events if e["type"] == "preview"]
    assert [e["step"] for e in previews] == [2, 4, 5]  # every 2 steps, and the last
    picture = Image.open(io.BytesIO(base64.b64decode(previews[-1]["image"])))
    assert picture.format == "JPEG" and picture.size == (64, 64)  # the latent (8x8) at pixel size
    # each preview follows its step's event
    for preview in previews:
        index = events.index(preview)
        assert events[index - 1]["type"] == "step" and events[index - 1]["step"] == preview["step"]


def test_latent_to_rgb_follows_the_familys_factors() -> None:
    import torch

    from sdflow.models.families import SD15, SDXL
    from sdflow.serve.preview import latent_to_rgb

    latent = torch.zeros(1, 4, 2, 2)
    latent[0, 0] = 1.0
    assert torch.allclose(latent_to_rgb(latent, SD15)[:, 0, 0], (torch.tensor(SD15.latent_rgb[0]) + 1) / 2)
    sdxl = (torch.tensor(SDXL.latent_rgb[0]) + torch.tensor(SDXL.latent_rgb_bias) + 1) / 2
    assert torch.allclose(latent_to_rgb(latent, SDXL)[:, 1, 1], sdxl)
