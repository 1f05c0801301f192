"""Prompts through one text encoder: bit-identical when plain, chunked when long, weighted by formula."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPTextModel, CLIPTokenizer

from sdflow.prompts import embeddings
from sdflow.prompts.chunks import PromptError, overflow, split, text_ids
from sdflow.prompts.encode import Layer, encode
from sdflow.prompts.padding import pad_tokens
from sdflow.prompts.parse import parse

SHAPES = Path(__file__).resolve().parent.parent / "sdflow" / "builtin" / "shapes"


@pytest.fixture(scope="module")
def tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(SHAPES, subfolder="tokenizer")


@pytest.fixture(scope="module")
def encoder() -> CLIPTextModel:
    return CLIPTextModel.from_pretrained(SHAPES, subfolder="text_encoder", torch_dtype=torch.float32).eval()


def plain_path(tokenizer, encoder, text: str, clip_skip: int = 0) -> torch.Tensor:
    """CLIPEncode before prompts were parsed: pad/truncate to 77 with the tokenizer, one forward."""
    ids = tokenizer(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.inference_mode():
        if clip_skip == 0:
            return encoder(ids)[0]
        hidden = encoder(ids, output_hidden_states=True).hidden_states[-(clip_skip + 1)]
        return encoder.final_layer_norm(hidden)  # transformers 5: no text_model wrapper


def wrapped_forward(tokenizer, encoder, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """States and pooled output of start + ids + end, padded to 77, built by hand."""
    full = [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id]
    full += [tokenizer.pad_token_id] * (77 - len(full))
    with torch.inference_mode():
        out = encoder(torch.tensor([full]))
    return out[0], out.pooler_output


def run(tokenizer, encoder, text: str, **kwargs):
    return encode(tokenizer, encoder, parse(text), **kwargs)


PLAIN = [
    "a red circle on a blue background",
    "",
    "blurry, green",
    "  Spaces   and CAPITALS, ünïcödé & punctuation!?",
    "x" * 75,  # exactly one full chunk
]


@pytest.mark.parametrize("text", PLAIN)
@pytest.mark.parametrize("clip_skip", [0, 1, 2])
def test_plain_prompts_are_bit_identical_to_the_tokenizer_path(tokenizer, encoder, text, clip_skip):
    encoded = run(tokenizer, encoder, text, layer=Layer(clip_skip))

    assert encoded.chunks == 1
    assert torch.equal(encoded.hidden, plain_path(tokenizer, encoder, text, clip_skip))


def test_a_weight_of_one_is_bit_identical_to_no_brackets(tokenizer, encoder):
    weighted = run(tokenizer, encoder, "a (red:1.0) circle on a (blue:1) background")
    assert torch.equal(weighted.hidden, plain_path(tokenizer, encoder, "a red circle on a blue background"))


def _red_positions(tokenizer) -> slice:
    start = 1 + len(text_ids(tokenizer, "a "))
    return slice(start, start + len(text_ids(tokenizer, "red")))


def test_comfy_weighting_moves_weighted_tokens_from_the_empty_prompt(tokenizer, encoder):
    z = plain_path(tokenizer, encoder, "a red circle")
    empty = plain_path(tokenizer, encoder, "")
    expected = z.clone()
    red = _red_positions(tokenizer)
    expected[:, red] = empty[:, red] + 1.4 * (z[:, red] - empty[:, red])

    weighted = run(tokenizer, encoder, "a (red:1.4) circle", method="comfy").hidden

    torch.testing.assert_close(weighted, expected, rtol=0, atol=1e-6)
    assert torch.equal(weighted[:, : red.start], z[:, : red.start])  # unweighted tokens untouched
    assert not torch.allclose(weighted, z)


def test_a1111_weighting_scales_and_restores_the_mean(tokenizer, encoder):
    z = plain_path(tokenizer, encoder, "a red circle")
    weights = torch.ones(77)
    weights[_red_positions(tokenizer)] = 1.4
    scaled = z * weights[None, :, None]
    expected = scaled * (z.mean() / scaled.mean())

    weighted = run(tokenizer, encoder, "a (red:1.4) circle", method="a1111").hidden

    torch.testing.assert_close(weighted, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(weighted.mean(), z.mean(), rtol=0, atol=1e-6)


def test_break_makes_chunks_encoded_separately_and_concatenated(tokenizer, encoder):
    encoded = run(tokenizer, encoder, "a red circle BREAK on a blue background")

    assert encoded.chunks == 2 and encoded.hidden.shape == (1, 154, 64)
    assert torch.equal(encoded.hidden[:, :77], plain_path(tokenizer, encoder, "a red circle"))
    torch.testing.assert_close(
        encoded.hidden[:, 77:], plain_path(tokenizer, encoder, "on a blue background"), rtol=0, atol=1e-6
    )


def test_long_prompts_continue_in_a_second_chunk(tokenizer, encoder):
    text = "abcdefghij" * 10  # 100 tokens with the byte-level vocabulary, no comma
    ids = text_ids(tokenizer, text)
    assert len(ids) == 100

    encoded = run(tokenizer, encoder, text)

    first, _ = wrapped_forward(tokenizer, encoder, ids[:75])
    second, _ = wrapped_forward(tokenizer, encoder, ids[75:])
    torch.testing.assert_close(encoded.hidden, torch.cat([first, second], dim=1), rtol=0, atol=1e-6)
    assert encoded.pooled is None  # SD 1.x's encoder projects no pooled embedding


def test_max_chunks_keeps_the_old_cut(tokenizer, encoder):
    text = "abcdefghij" * 10
    encoded = run(tokenizer, encoder, text, max_chunks=1)
    assert torch.equal(encoded.hidden, plain_path(tokenizer, encoder, text))


def test_a_full_chunk_ends_after_a_recent_comma(tokenizer):
    words = "x" * 70 + ", abcdefghij"  # comma at 70, the chunk fills at 75
    chunks = split(parse(words), tokenizer, vectors=lambda name: torch.zeros(0))
    assert [len(c.ids) for c in chunks] == [71, len(text_ids(tokenizer, words)) - 71]
    assert chunks[0].ids[-1] == tokenizer.get_vocab()[",</w>"]


def test_empty_prompt_states_come_along_where_padding_or_weighting_needs_them(tokenizer, encoder):
    empty = plain_path(tokenizer, encoder, "")
    assert torch.equal(run(tokenizer, encoder, "a (red:2) circle").empty, empty)
    assert torch.equal(run(tokenizer, encoder, "a BREAK b").empty, empty)
    assert torch.equal(run(tokenizer, encoder, "").empty, empty)  # its own states, no second forward
    assert run(tokenizer, encoder, "a red circle").empty is None  # never the longer side
    assert run(tokenizer, encoder, "a (red:2) circle", method="a1111").empty is None


def test_padding_appends_empty_chunks_or_repeats_without_them():
    embeds, empty = torch.ones(2, 77, 4), torch.zeros(1, 77, 4)

    padded = pad_tokens(embeds, empty, 231)
    assert padded.shape == (2, 231, 4)
    assert torch.equal(padded[:, :77], embeds) and torch.equal(padded[:, 77:], torch.zeros(2, 154, 4))

    ramp = torch.arange(77.0).reshape(1, 77, 1)
    assert torch.equal(pad_tokens(ramp, None, 154), torch.cat([ramp, ramp], dim=1))
    with pytest.raises(ValueError, match="cannot pad a conditioning of 154 tokens to 77"):
        pad_tokens(torch.ones(1, 154, 4), empty, 77)


# -- textual-inversion embeddings ---------------------------------------------------------------------


@pytest.fixture
def embedding_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "models" / "embeddings"
    folder.mkdir(parents=True)
    monkeypatch.setenv("SDFLOW_MODELS", str(tmp_path))
    monkeypatch.setenv("SDFLOW_CONFIG", str(tmp_path / "absent.yaml"))
    return folder


def _token_vectors(tokenizer, encoder, text: str) -> torch.Tensor:
    with torch.no_grad():
        return encoder.get_input_embeddings()(torch.tensor(text_ids(tokenizer, text))).clone()


def test_an_embedding_of_a_words_vectors_encodes_as_that_word(tokenizer, encoder, embedding_folder):
    red = _token_vectors(tokenizer, encoder, "red")
    save_file({"emb_params": red}, embedding_folder / "redcopy.safetensors")
    library = embeddings.Library()
    vectors = library.vectors_for(64, "clip_l")

    with_embedding = encode(tokenizer, encoder, parse("a embedding:redcopy circle"), vectors=vectors)
    plain = encode(tokenizer, encoder, parse("a red circle"))

    torch.testing.assert_close(with_embedding.hidden, plain.hidden, rtol=0, atol=1e-6)
    torch.testing.assert_close(with_embedding.pooled, plain.pooled, rtol=0, atol=1e-6)
    assert encoder.get_input_embeddings()._forward_hooks == {}  # the cached encoder is left alone


def test_sdxl_embeddings_give_each_encoder_its_own_vectors(embedding_folder):
    save_file(
        {"clip_l": torch.ones(2, 64), "clip_g": torch.full((2, 1280), 2.0)},
        embedding_folder / "xl.safetensors",
    )
    library = embeddings.Library()
    assert torch.equal(library.vectors("xl", 64, "clip_l"), torch.ones(2, 64))
    assert torch.equal(library.vectors("xl", 1280, "clip_g"), torch.full((2, 1280), 2.0))
    with pytest.raises(PromptError, match="64 wide but this text encoder's are 768"):
        library.vectors("xl", 768, "clip_l")


def test_a1111_embeddings_serve_any_encoder_of_their_width(embedding_folder):
    save_file({"emb_params": torch.ones(3, 64)}, embedding_folder / "plain.safetensors")
    library = embeddings.Library()
    assert torch.equal(library.vectors("plain", 64, "clip_l"), torch.ones(3, 64))
    assert torch.equal(library.vectors("plain", 64, "clip_g"), torch.ones(3, 64))


def test_pickled_embeddings_need_the_opt_in(embedding_folder):
    torch.save({"string_to_param": {"*": torch.ones(3, 64)}, "name": "old"}, embedding_folder / "old.pt")

    assert "pickle file (old.pt)" in embeddings.check("embedding:old", allow_pickle=False)[0]
    with pytest.raises(PromptError, match="allow_pickle: true"):
        embeddings.Library(allow_pickle=False).vectors("old", 64)
    assert embeddings.check("embedding:old", allow_pickle=True) == []
    assert torch.equal(embeddings.Library(allow_pickle=True).vectors("old", 64), torch.ones(3, 64))


def test_a_missing_embedding_is_named_with_suggestions(embedding_folder):
    save_file({"emb_params": torch.ones(1, 64)}, embedding_folder / "easynegative.safetensors")
    problems = embeddings.check("nice, embedding:easynegativ", allow_pickle=False)
    assert len(problems) == 1
    assert "embedding:easynegativ" in problems[0] and "did you mean 'easynegative.safetensors'" in problems[0]


def test_the_fingerprint_follows_the_embedding_files(embedding_folder):
    path = embedding_folder / "e.safetensors"
    save_file({"emb_params": torch.ones(1, 64)}, path)
    before = embeddings.fingerprint("a embedding:e")
    save_file({"emb_params": torch.zeros(1, 64)}, path)

    assert embeddings.fingerprint("a embedding:e") not in (before, None)
    assert embeddings.fingerprint("no embeddings here") is None


def test_half_precision_encoders_stay_bit_identical_when_plain_and_weight_in_float32(tokenizer):
    half = CLIPTextModel.from_pretrained(SHAPES, subfolder="text_encoder", torch_dtype=torch.float16).eval()
    text = "a red circle on a blue background"

    plain = run(tokenizer, half, text)
    weighted = run(tokenizer, half, "a (red:1.4) circle on a blue background")

    assert plain.hidden.dtype == torch.float16 and weighted.hidden.dtype == torch.float16
    assert torch.equal(plain.hidden, plain_path(tokenizer, half, text))
    z, empty = plain.hidden.float(), run(tokenizer, half, "").hidden.float()
    red = _red_positions(tokenizer)
    expected = z.clone()
    expected[:, red] = empty[:, red] + 1.4 * (z[:, red] - empty[:, red])
    assert torch.equal(weighted.hidden, expected.half())


def test_overflow_says_what_the_first_chunk_leaves_out(tokenizer, embedding_folder):
    save_file({"emb_params": torch.ones(3, 64)}, embedding_folder / "e.safetensors")
    vectors = embeddings.Library().vectors_for(64, "clip_l")

    said = overflow(parse("x" * 74 + " embedding:e yz"), tokenizer, vectors)

    # the embedding's 3 vectors do not fit after 74 tokens: they move whole to the next chunk
    assert said == "kept the first 74 tokens (at most 75), dropped 5: 'yz' and 3 embedding vectors"
    assert overflow(parse("a red circle"), tokenizer, vectors) is None
