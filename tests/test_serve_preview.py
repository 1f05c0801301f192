"""Previews by the denoised model: the step event carries its family and checkpoint folder, the
server colours the latent with that family's factors, or decodes it with its tiny autoencoder."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import torch

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from sdflow.graphs import loads
from sdflow.models import resolver, taesd
from sdflow.models.families import SD3, SD15, SDXL
from sdflow.runner import Runner, StepProgress
from sdflow.serve.preview import Previewer, jpeg, latent_to_rgb
from tests.serve_helpers import TXT2IMG, client

FLOW = {"steps": 2, "seed": 3, "sampler": "euler"}  # euler: SD3's flow matching has no ddim


def steps_of(checkpoint: str) -> list[StepProgress]:
    runner = Runner(device="cpu", dtype="fp32")
    got: list[StepProgress] = []
    runner.subscribe(lambda event: got.append(event) if isinstance(event, StepProgress) else None)
    runner.run(loads(TXT2IMG, "t.yaml"), {**FLOW, "checkpoint": checkpoint}, outputs=["denoised"])
    return got


def event(latent: torch.Tensor, family=None, source=None) -> StepProgress:
    return StepProgress("loop", 1, 1, latent, family, source)


def test_step_events_carry_the_denoised_models_family_and_folder() -> None:
    for name, family in (("tiny-sdxl", SDXL), ("tiny-sd3", SD3)):
        steps = steps_of(f"builtin:{name}")
        assert [s.index for s in steps] == [1, 2]
        assert {s.family for s in steps} == {family}
        assert {s.source for s in steps} == {str(resolver.builtin("checkpoints", f"builtin:{name}"))}


def test_a_16_channel_latent_previews_with_sd3s_factors_not_sd1s() -> None:
    latent = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    preview = Previewer()(event(latent, SD3))
    assert preview == jpeg(latent_to_rgb(latent, SD3), 8)
    assert preview != jpeg(latent_to_rgb(latent, SD15), 8)
    # SDXL's factors for SDXL, SD 1.x's when the step has no model
    sdxl = latent[:, :4]
    assert Previewer()(event(sdxl, SDXL)) == jpeg(latent_to_rgb(sdxl, SDXL), 8)
    unknown = Previewer()(event(sdxl))
    assert unknown == jpeg(latent_to_rgb(sdxl, SD15), 8) != jpeg(latent_to_rgb(sdxl, SDXL), 8)


def test_a_builtin_model_previews_through_the_tiny_vae_distilled_from_its_vae() -> None:
    folder = resolver.builtin("checkpoints", "builtin:shapes")
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    previewer = Previewer()
    tiny = previewer.tiny_vae(SD15, str(folder), latent.device)
    assert tiny is not None and tiny is previewer.tiny_vae(SD15, str(folder), latent.device)  # loaded once
    expected = jpeg(taesd.decode_preview(tiny, latent)[0], 1)
    assert previewer(event(latent, SD15, str(folder))) == expected
    assert expected != jpeg(latent_to_rgb(latent, SD15), 8)
    assert previewer.tiny_vae(SD15, None, latent.device) is None  # no vae_approx files here


def test_the_users_taesdxl_in_vae_approx_previews_sdxl_latents(tmp_path: Path, model_folders) -> None:
    from diffusers import AutoencoderTiny

    torch.manual_seed(4)
    AutoencoderTiny().save_pretrained(tmp_path / "taesdxl")
    for file in (tmp_path / "taesdxl").iterdir():
        model_folders(f"ComfyUI/models/vae_approx/taesdxl/{file.name}", file)
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    previewer = Previewer()
    assert previewer.tiny_vae(SD15, None, latent.device) is None  # SD 1.x needs taesd, not taesdxl
    tiny = previewer.tiny_vae(SDXL, None, latent.device)
    assert tiny is not None
    assert previewer(event(latent, SDXL)) == jpeg(taesd.decode_preview(tiny, latent)[0], 1)


def test_the_servers_sd3_previews_are_the_sd3_factor_pictures_of_the_run(tmp_path: Path) -> None:
    inputs = {**FLOW, "checkpoint": "builtin:tiny-sd3"}
    expected = [jpeg(latent_to_rgb(s.latent, SD3), 8)["image"] for s in steps_of(inputs["checkpoint"])]
    with client(tmp_path, worker=True, preview_every=1) as http:
        job_id = http.post("/api/jobs", json={"workflow": TXT2IMG, "inputs": inputs}).json()["id"]
        events = []
        with http.websocket_connect(f"/api/events?since=0&job={job_id}") as socket:
            while not events or events[-1]["type"] not in ("finished", "failed"):
                events.append(socket.receive_json())
    assert events[-1]["type"] == "finished", events[-1]
    previews = [e["image"] for e in events if e["type"] == "preview"]
    assert previews == expected and base64.b64decode(previews[0])[:2] == b"\xff\xd8"
