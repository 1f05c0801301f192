"""SDXL reads the same prompt syntax on both its encoders; pooled from the first chunk; plain prompts
encode exactly as diffusers' SDXL pipelines tokenize them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from workflows import denoise_twice

import sdflow
from sdflow.prompts.chunks import text_ids


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory: pytest.TempPathFactory):
    runner = sdflow.Runner(device="cpu", dtype="fp32", output_dir=str(tmp_path_factory.mktemp("out")))
    graph = sdflow.Graph()
    ckpt = graph.LoadCheckpoint(checkpoint="builtin:tiny-sdxl")
    clip = runner.run(graph, outputs=[ckpt.id])[ckpt.clip]

    def encode(text, **fields) -> sdflow.nodes.types.Conditioning:
        g = sdflow.Graph()
        c = g.LoadCheckpoint(checkpoint="builtin:tiny-sdxl")
        node = g.CLIPEncode(clip=c.clip, text=text, **fields)
        return runner.run(g, outputs=[node.id])[node.conditioning]

    return clip, encode


def plain_sdxl(clip, text: str) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """diffusers' SDXL encoding: each tokenizer pads/truncates to 77, raw penultimate states of each
    encoder joined on the features, pooled = the projecting encoder's text_embeds."""
    states = []
    with torch.inference_mode():
        for tokenizer, encoder in clip.pairs:
            ids = tokenizer(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
            out = encoder(ids.input_ids, output_hidden_states=True)
            states.append(out.hidden_states[-2])
            pooled = out[0]
    return torch.cat(states, dim=-1), pooled, states


def test_plain_prompts_are_bit_identical_to_the_diffusers_path(sdxl):
    clip, encode = sdxl
    for text in ["a red circle on a blue background", ""]:
        conditioning = encode(text)
        hidden, pooled, _ = plain_sdxl(clip, text)
        assert torch.equal(conditioning.embeds, hidden)
        assert torch.equal(conditioning.pooled, pooled)


def test_weights_apply_to_both_encoders_by_the_same_formula(sdxl):
    clip, encode = sdxl
    weighted = encode("a (red:1.5) circle").embeds
    _, _, plain = plain_sdxl(clip, "a red circle")
    _, _, empty = plain_sdxl(clip, "")
    tokenizer = clip.pairs[0][0]
    start = 1 + len(text_ids(tokenizer, "a "))
    red = slice(start, start + len(text_ids(tokenizer, "red")))

    expected = []
    for z, e in zip(plain, empty, strict=True):
        z = z.clone()
        z[:, red] = e[:, red] + 1.5 * (z[:, red] - e[:, red])
        expected.append(z)
    torch.testing.assert_close(weighted, torch.cat(expected, dim=-1), rtol=0, atol=1e-6)


def test_long_prompts_use_the_first_chunks_pooled_embedding(sdxl):
    clip, encode = sdxl
    conditioning = encode("a red circle BREAK on a blue background")
    _, first_pooled, _ = plain_sdxl(clip, "a red circle")

    assert conditioning.embeds.shape[1] == 154
    torch.testing.assert_close(conditioning.pooled, first_pooled, rtol=0, atol=1e-6)
    torch.testing.assert_close(conditioning.empty, plain_sdxl(clip, "")[0], rtol=0, atol=1e-6)


def test_an_sdxl_embedding_gives_each_encoder_its_vectors(sdxl, tmp_path: Path, monkeypatch):
    clip, encode = sdxl
    folder = tmp_path / "models" / "embeddings"
    folder.mkdir(parents=True)
    monkeypatch.setenv("SDFLOW_MODELS", str(tmp_path))
    monkeypatch.setenv("SDFLOW_CONFIG", str(tmp_path / "absent.yaml"))
    ids = torch.tensor(text_ids(clip.pairs[0][0], "red"))
    with torch.no_grad():
        vectors = [encoder.get_input_embeddings()(ids).clone() for _, encoder in clip.pairs]
    save_file({"clip_l": vectors[0], "clip_g": vectors[1]}, folder / "red_xl.safetensors")

    with_embedding = encode("a embedding:red_xl circle")
    hidden, pooled, _ = plain_sdxl(clip, "a red circle")

    torch.testing.assert_close(with_embedding.embeds, hidden, rtol=0, atol=1e-6)
    torch.testing.assert_close(with_embedding.pooled, pooled, rtol=0, atol=1e-6)


def test_the_refiner_reads_the_syntax_on_its_one_encoder(tmp_path):
    graph = sdflow.Graph()
    ckpt = graph.LoadCheckpoint(checkpoint="builtin:tiny-sdxl-refiner")
    plain = graph.CLIPEncode(clip=ckpt.clip, text="a red circle")
    weighted = graph.CLIPEncode(clip=ckpt.clip, text="a (red:1.5) circle BREAK blue")
    result = sdflow.Runner(device="cpu", dtype="fp32").run(graph, outputs=[plain.id, weighted.id])

    assert result[weighted.conditioning].embeds.shape[1] == 154
    assert not torch.allclose(result[weighted.conditioning].embeds[:, :77], result[plain.conditioning].embeds)


DENOISE = denoise_twice(
    ("short", "padded"),
    "empty2",
    cfg=5.0,
    ckpt={"checkpoint": '"builtin:tiny-sdxl"'},
    positive={"text": '"a (red:1.3) circle BREAK on a blue background"'},
    empty2={"type": "ConditioningConcat", "first": "!link negative", "second": "!link negative"},
    schedule={"sampler": "euler", "steps": 2},
    noised={"seed": 5},
)


def test_sdxl_denoises_a_long_positive_against_a_short_negative(runner):
    result = runner.run(sdflow.loads(DENOISE), outputs=["short", "padded"])
    assert torch.equal(result.tensor("short"), result.tensor("padded"))
    assert torch.isfinite(result.tensor("short")).all()
