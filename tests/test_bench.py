"""`sdflow bench`: the latency table on the tiny model at tiny sizes, printed and written as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from sdflow.cli import main as cli

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "txt2img.yaml"
TINY = ["--set", "checkpoint=builtin:tiny-sd15", "--set", "steps=2", "--dtype", "fp32", "--quiet"]


def _bench(tmp_path: Path, *argv: str) -> int:
    return cli(["bench", str(EXAMPLE), "--output", str(tmp_path / "bench.json"), *TINY, *argv])


def test_bench_measures_every_size_and_sampler(tmp_path: Path, capsys) -> None:
    code = _bench(
        tmp_path, "--sizes", "32,48x32", "--samplers", "ddim,euler", "--repeat", "2", "--warmup", "1"
    )

    assert code == 0
    document = json.loads((tmp_path / "bench.json").read_text())
    cells = [(c["size"], c["sampler"]) for c in document["results"]]
    assert cells == [("32x32", "ddim"), ("32x32", "euler"), ("48x32", "ddim"), ("48x32", "euler")]
    assert (document["device"], document["dtype"], document["repeat"]) == ("cpu", "fp32", 2)
    for cell in document["results"]:
        assert len(cell["seconds_per_image"]) == 2
        assert cell["min_s"] <= cell["mean_s"] and cell["min_s"] > 0
        assert set(cell["phases"]) == {"text", "denoise", "decode", "other"}
        assert cell["phases"]["denoise"] > 0 and cell["phases"]["decode"] > 0
        assert cell["peak_memory_bytes"] > 10 * 2**20
    out = capsys.readouterr().out
    assert "mean s/img" in out and "48x32" in out and "euler" in out
    assert not list(tmp_path.glob("*.png")) and not (Path.cwd() / "outputs" / "txt2img_00001.png").exists()


def test_bench_never_overwrites_an_earlier_table(tmp_path: Path, capsys) -> None:
    (tmp_path / "bench.json").write_text("earlier")

    assert _bench(tmp_path, "--repeat", "1", "--warmup", "0") == 0

    assert (tmp_path / "bench.json").read_text() == "earlier"
    [new] = [p for p in tmp_path.glob("bench*.json") if p.name != "bench.json"]
    assert json.loads(new.read_text())["results"][0]["size"] == "64x64"  # the workflow's own size


def test_a_bad_size_or_sampler_is_a_user_error_before_anything_runs(tmp_path: Path, capsys) -> None:
    assert _bench(tmp_path, "--sizes", "big") == 2
    assert "--sizes big" in capsys.readouterr().err
    assert _bench(tmp_path, "--samplers", "eulr") == 2
    err = capsys.readouterr().err
    assert "eulr" in err and "field '--samplers'" in err and "bench.py" not in err
    assert not (tmp_path / "bench.json").exists()
