"""The prompt parser reads weights, escapes, BREAK and embeddings as A1111 and ComfyUI users write them."""

from __future__ import annotations

import pytest

from sdflow.prompts.parse import Break, Embedding, Text, embedding_names, is_plain, parse


def _weights(text: str) -> list[tuple[str, float]]:
    return [(p.text, round(p.weight, 6)) for p in parse(text) if isinstance(p, Text)]


def test_plain_text_is_one_unweighted_piece_unchanged():
    text = "a red circle on a blue background, 4k: detailed"
    assert parse(text) == [Text(text, 1.0)]
    assert is_plain(parse(text))


def test_explicit_weight_applies_to_the_group_only():
    assert _weights("a (red:1.4) circle") == [("a ", 1.0), ("red", 1.4), (" circle", 1.0)]


def test_round_brackets_multiply_by_1_1_and_nest():
    assert _weights("(red)") == [("red", 1.1)]
    assert _weights("((red))") == [("red", 1.21)]
    assert _weights("(((red)))") == [("red", 1.331)]


def test_square_brackets_divide_by_1_1():
    assert _weights("[red]") == [("red", round(1 / 1.1, 6))]
    assert _weights("[[red]]") == [("red", round(1 / 1.21, 6))]


def test_nested_weights_multiply():
    assert _weights("(a (b:2) [c]:1.5)") == [
        ("a ", 1.5),
        ("b", 3.0),
        (" ", 1.5),
        ("c", round(1.5 / 1.1, 6)),
    ]


def test_weight_allows_spaces_and_signs_and_leading_dot():
    assert _weights("(red : 0.5 )") == [("red ", 0.5)]  # the space before the colon is text, as in A1111
    assert _weights("(red:.5)") == [("red", 0.5)]
    assert _weights("(red:-1)") == [("red", -1.0)]


def test_escaped_brackets_are_literal_text():
    assert parse(r"a \(red\) \[circle\] \\ x") == [Text(r"a (red) [circle] \ x", 1.0)]


def test_unclosed_group_weighs_to_the_end_and_stray_closers_are_text():
    assert _weights("a (red circle") == [("a ", 1.0), ("red circle", 1.1)]
    assert _weights("a ) b ] c") == [("a ) b ] c", 1.0)]


def test_colon_without_a_number_is_text():
    assert _weights("(style: red)") == [("style: red", 1.1)]


def test_break_splits_and_eats_surrounding_spaces():
    assert parse("a red circle BREAK on a blue background") == [
        Text("a red circle"),
        Break(),
        Text("on a blue background"),
    ]


def test_break_must_be_a_capitalised_word():
    assert parse("breakfast, Break, BREAKING") == [Text("breakfast, Break, BREAKING")]


def test_break_inside_a_weighted_group_keeps_the_weight_on_both_sides():
    assert parse("(a BREAK b:2)") == [Text("a", 2.0), Break(), Text("b", 2.0)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("embedding:easy", [Embedding("easy")]),
        ("x embedding:easy, y", [Text("x "), Embedding("easy"), Text(", y")]),
        ("(embedding:easy:1.2)", [Embedding("easy", 1.2)]),
        ("embedding:sub/neg_v2.safetensors.", [Embedding("sub/neg_v2.safetensors"), Text(".")]),
    ],
)
def test_embeddings_are_pieces_with_their_weight(text, expected):
    assert parse(text) == expected


def test_embedding_names_lists_each_name_once():
    assert embedding_names("embedding:a, (embedding:b:1.2) embedding:a") == ["a", "b"]


def test_empty_prompt_is_one_empty_piece():
    assert parse("") == [Text("", 1.0)]


def test_weights_break_and_embeddings_are_not_plain():
    assert not is_plain(parse("(red)"))
    assert not is_plain(parse("a BREAK b"))
    assert not is_plain(parse("embedding:x"))
    assert is_plain(parse("(red:1.0)"))
