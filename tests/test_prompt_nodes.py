"""CLIPEncode, ConditioningConcat/Average and DenoiseLoop with prompts as users write them."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from workflows import DROP, SAVE, denoise_twice, txt2img

import sdflow
from sdflow.errors import SdflowWarning
from sdflow.graphs import loads
from sdflow.runner.core.events import NodeWarning

ENCODE = """
version: 1
inputs:
  a: "a red circle"
  b: "on a blue background"
nodes:
  ckpt: {type: LoadCheckpoint, checkpoint: "builtin:shapes"}
  a: {type: CLIPEncode, clip: !link ckpt.clip, text: !input a}
  b: {type: CLIPEncode, clip: !link ckpt.clip, text: !input b}
  both: {type: CLIPEncode, clip: !link ckpt.clip, text: "a red circle BREAK on a blue background"}
  empty: {type: CLIPEncode, clip: !link ckpt.clip, text: ""}
  concat: {type: ConditioningConcat, first: !link a, second: !link b}
  average: {type: ConditioningAverage, first: !link a, second: !link both, weight: 0.25}
  batch: {type: CLIPEncode, clip: !link ckpt.clip, text: ["a red circle", "x BREAK y", ""]}
"""


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> sdflow.RunResult:
    runner = sdflow.Runner(device="cpu", dtype="fp32", output_dir=str(tmp_path_factory.mktemp("out")))
    nodes = ["a", "b", "both", "empty", "concat", "average", "batch"]
    return runner.run(loads(ENCODE), outputs=nodes)


def test_concat_joins_along_tokens_like_break(encoded):
    concat = encoded.tensor("concat")
    assert concat.shape == (1, 154, 64)
    assert torch.equal(concat, torch.cat([encoded.tensor("a"), encoded.tensor("b")], dim=1))
    torch.testing.assert_close(concat, encoded.tensor("both"), rtol=0, atol=1e-6)


def test_average_pads_the_shorter_with_empty_chunks_and_blends_by_weight(encoded):
    a, both, empty = encoded.tensor("a"), encoded.tensor("both"), encoded.tensor("empty")
    padded_a = torch.cat([a, empty], dim=1)
    expected = 0.25 * padded_a + 0.75 * both
    torch.testing.assert_close(encoded.tensor("average"), expected, rtol=0, atol=1e-6)


def test_a_list_of_prompts_is_a_batch_padded_to_the_longest(encoded):
    batch, empty = encoded.tensor("batch"), encoded.tensor("empty")
    assert batch.shape == (3, 154, 64)
    torch.testing.assert_close(batch[0:1, :77], encoded.tensor("a"), rtol=0, atol=1e-6)
    torch.testing.assert_close(batch[0:1, 77:], empty, rtol=0, atol=1e-6)
    torch.testing.assert_close(batch[2:3], torch.cat([empty, empty], dim=1), rtol=0, atol=1e-6)


def test_the_empty_prompt_travels_with_long_and_empty_conditioning(encoded):
    assert torch.equal(encoded["both"].empty, encoded.tensor("empty"))
    assert torch.equal(encoded["empty"].empty, encoded.tensor("empty"))
    assert encoded["a"].empty is None and encoded["concat"].empty is None  # plain one-chunk prompts


TWICE = {"type": "ConditioningConcat", "first": "!link negative", "second": "!link negative"}
DENOISE = denoise_twice(
    ("short_negative", "padded_negative"),
    "empty2",
    {"positive": '"a red circle on a blue background BREAK red"', "negative": '""', "cfg": 4.0, "batch": 1},
    ckpt={"checkpoint": '"builtin:shapes"'},
    positive={"text": "!input positive"},
    negative={"text": "!input negative"},
    empty2=TWICE,
    empty={"width": 32, "height": 32, "batch_size": "!input batch"},
    schedule={"sampler": "ddim", "steps": 2},
    noised={"seed": 3},
)


def test_denoise_pads_the_shorter_conditioning_with_empty_prompt_chunks(runner):
    result = runner.run(loads(DENOISE), outputs=["short_negative", "padded_negative"])
    assert torch.equal(result.tensor("short_negative"), result.tensor("padded_negative"))


REPEATED = denoise_twice(
    ("short", "repeated"),
    "twice",
    cfg=DROP,
    ckpt={"checkpoint": '"builtin:shapes"'},
    a={"type": "CLIPEncode", "clip": "!link ckpt.clip", "text": '"a red circle"'},
    b={"type": "CLIPEncode", "clip": "!link ckpt.clip", "text": '"on a blue background"'},
    negative={"text": '"blurry"'},
    positive={
        "type": "ConditioningConcat",
        "clip": DROP,
        "text": DROP,
        "first": "!link a",
        "second": "!link b",
    },
    twice=TWICE,
    empty={"width": 32, "height": 32},
    schedule={"sampler": "ddim", "steps": 2},
    noised={"seed": 3},
)


def test_without_empty_chunks_the_shorter_conditioning_is_repeated(runner):
    # Plain one-chunk prompts carry no empty-prompt chunk: the negative is repeated whole, as ComfyUI
    # does (cross-attention over a sequence repeated whole is the same).
    result = runner.run(loads(REPEATED), outputs=["short", "repeated"])
    assert torch.equal(result.tensor("short"), result.tensor("repeated"))


def test_more_prompts_than_the_latent_batch_is_a_located_error(runner):
    workflow = loads(DENOISE.replace("text: !input positive", "text: [a, b, c]"))
    with pytest.raises(sdflow.UserError, match="3 prompts do not divide the latent batch of 2") as caught:
        runner.run(workflow, inputs={"batch": 2}, outputs=["short_negative"])
    assert caught.value.location.field == "positive"


TRUNCATED = """
version: 1
nodes:
  ckpt: {type: LoadCheckpoint, checkpoint: "builtin:shapes"}
  long: {type: CLIPEncode, clip: !link ckpt.clip, text: "%s", truncate: true}
"""
LONG = "a green square on a white background, " * 3 + "a red circle"


def test_truncate_keeps_77_tokens_and_warns_through_the_runner(runner):
    seen = []
    runner.subscribe(seen.append)
    result = runner.run(loads(TRUNCATED % LONG), outputs=["long"])

    assert result.tensor("long").shape == (1, 77, 64)
    warned = [e for e in seen if isinstance(e, NodeWarning)]
    assert len(warned) == 1 and warned[0].node_id == "long"
    assert "node 'long', field 'text'" in warned[0].message and "a red circle'" in warned[0].message
    assert result.report.warnings == [warned[0].message]


def test_without_listeners_truncation_is_a_python_warning(runner):
    with pytest.warns(SdflowWarning, match="dropped"):
        runner.run(loads(TRUNCATED % LONG), outputs=["long"])


def test_truncating_a_short_prompt_says_nothing(runner):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        runner.run(loads(TRUNCATED % "a red circle"), outputs=["long"])


def test_the_cli_prints_the_warning_even_when_quiet(write_workflow, tmp_path, capsys):
    from sdflow.cli import main

    text = txt2img(
        flow=True,
        ckpt={"checkpoint": '"builtin:shapes"'},
        positive=DROP,
        negative=DROP,
        long={"type": "CLIPEncode", "clip": "!link ckpt.clip", "text": f'"{LONG}"', "truncate": True},
        empty={"width": 32, "height": 32},
        schedule={"sampler": "ddim", "steps": 1},
        noised={"seed": 1},
        denoised={"positive": "!link long", "negative": "!link long", "cfg": DROP},
        save={**SAVE, "filename_prefix": "t"},
    )
    path = write_workflow(text)
    code = main(["run", str(path), "--quiet", "--output-dir", str(tmp_path / "out"), "--device", "cpu"])
    assert code == 0
    assert "warning: " in capsys.readouterr().err


# -- embeddings through the node --------------------------------------------------------------------

EMBEDDED = """
version: 1
inputs:
  prompt: "a embedding:style circle"
nodes:
  ckpt: {type: LoadCheckpoint, checkpoint: "builtin:shapes"}
  pos: {type: CLIPEncode, clip: !link ckpt.clip, text: !input prompt}
"""


@pytest.fixture
def embedding_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "ComfyUI" / "models" / "embeddings"
    folder.mkdir(parents=True)
    monkeypatch.setenv("SDFLOW_MODELS", str(tmp_path / "ComfyUI"))
    monkeypatch.setenv("SDFLOW_CONFIG", str(tmp_path / "absent.yaml"))
    return folder


def test_changing_an_embedding_file_changes_the_cache_key(runner, embedding_folder):
    save_file({"emb_params": torch.ones(2, 64)}, embedding_folder / "style.safetensors")
    first = runner.keys(loads(EMBEDDED))["pos"]
    first_run = runner.run(loads(EMBEDDED), outputs=["pos"]).tensor("pos")
    save_file({"emb_params": torch.zeros(2, 64)}, embedding_folder / "style.safetensors")

    assert runner.keys(loads(EMBEDDED))["pos"] != first
    second_run = runner.run(loads(EMBEDDED), outputs=["pos"]).tensor("pos")
    assert not torch.equal(first_run, second_run)


def test_a_missing_embedding_fails_before_running_with_a_suggestion(write_workflow, capsys, embedding_folder):
    from sdflow.cli import main

    save_file({"emb_params": torch.ones(2, 64)}, embedding_folder / "style.safetensors")

    code = main(["run", str(write_workflow(EMBEDDED.replace("embedding:style", "embedding:stlye")))])
    err = capsys.readouterr().err
    assert code == 2
    assert "node 'pos', field 'text'" in err and "embedding:stlye" in err and "'style.safetensors'" in err
    assert "Traceback" not in err


def test_a_pickled_embedding_is_refused_without_the_opt_in(write_workflow, capsys, embedding_folder):
    from sdflow.cli import main

    torch.save({"string_to_param": {"*": torch.ones(2, 64)}}, embedding_folder / "style.pt")
    code = main(["run", str(write_workflow(EMBEDDED))])
    err = capsys.readouterr().err
    assert code == 2 and "pickle file (style.pt)" in err and "allow_pickle: true" in err

    allowed = EMBEDDED.replace("text: !input prompt", "text: !input prompt, allow_pickle: true")
    result = sdflow.Runner(device="cpu", dtype="fp32").run(loads(allowed), outputs=["pos"])
    assert result.tensor("pos").shape == (1, 77, 64)


def test_the_cli_opt_in_allows_pickled_embeddings_too(write_workflow, capsys, embedding_folder):
    from sdflow.cli import main

    torch.save({"string_to_param": {"*": torch.ones(2, 64)}}, embedding_folder / "style.pt")
    path = write_workflow(EMBEDDED)
    assert main(["validate", str(path)]) == 2
    capsys.readouterr()
    assert main(["validate", str(path), "--allow-pickle"]) == 0
