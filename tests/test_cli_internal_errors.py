"""A bug (not a user mistake) reaches the user as one 'internal error' line naming the node, exit 1;
the traceback only with --debug or SDFLOW_DEBUG=1."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdflow.cli import main
from sdflow.nodes.library.vae_decode import VAEDecode

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "txt2img.yaml"


@pytest.fixture
def broken_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    def run(self, ctx):
        raise RuntimeError("tensor sizes do not match\nsecond line of detail")

    monkeypatch.setattr(VAEDecode, "run", run)


def _run(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    argv = ["run", str(EXAMPLE), "--set", "steps=1", "--quiet", "--output-dir", str(tmp_path), *extra]
    code = main(argv)
    return code, capsys.readouterr().err


def test_an_internal_error_is_one_line_naming_the_node(broken_decoder, tmp_path: Path, capsys) -> None:
    code, err = _run(tmp_path, capsys)
    assert code == 1
    assert err.splitlines() == [
        "internal error while running node 'decoded' (VAEDecode): RuntimeError: tensor sizes do not "
        "match (this is a bug in sdflow or a library it uses; run again with --debug or SDFLOW_DEBUG=1 "
        "for the traceback)"
    ]
    assert not list(tmp_path.glob("*.png"))


def test_debug_shows_the_traceback(broken_decoder, tmp_path: Path, capsys) -> None:
    code, err = _run(tmp_path, capsys, "--debug")
    assert code == 1
    assert err.startswith("Traceback (most recent call last):")
    assert "RuntimeError: tensor sizes do not match" in err
    assert err.splitlines()[-1].startswith("internal error while running node 'decoded'")


def test_sdflow_debug_environment_variable_shows_the_traceback(
    broken_decoder, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SDFLOW_DEBUG", "1")
    code, err = _run(tmp_path, capsys)
    assert code == 1 and "Traceback" in err


def test_a_user_mistake_is_still_exit_2_with_debug(tmp_path: Path, capsys) -> None:
    code, err = _run(tmp_path, capsys, "--set", "sampler=eulr", "--debug")
    assert code == 2
    assert "Traceback" not in err and "did you mean 'euler'" in err
