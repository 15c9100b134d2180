"""Model presets (attnbench.presets, presets.yaml): every preset loads and is consistent, apply()
merges with the shape's own keys winning, unknown names suggest the close ones, and a few values
match the models' published configurations."""

from __future__ import annotations

import math
from importlib import resources

import pytest
import yaml

from attnbench import presets

PRESETS = presets.load()


def test_the_yaml_ships_inside_the_package():
    # Loaded as package data (not from the source tree), so it must sit next to presets.py.
    assert resources.files("attnbench").joinpath("presets.yaml").is_file()


def test_the_required_models_are_there():
    assert {
        "llama-3.1-8b",
        "llama-3.1-70b",
        "mistral-7b-v0.1",
        "gemma-2-9b",
        "gemma-2-27b",
        "qwen2.5-7b",
        "deepseek-v3",
    } <= set(presets.names())
    assert presets.names() == sorted(PRESETS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_consistent(name):
    preset = PRESETS[name]
    assert set(preset) <= set(presets.GEOMETRY + presets.META)
    assert preset["heads"] % preset["kv_heads"] == 0
    for key in ("dim", "dim_v"):
        if key in preset:
            assert 0 < preset[key] <= 256
    assert preset["source"].strip() and "https://" in preset["source"]
    if "window" in preset:
        left, right = preset["window"]
        assert left >= 0 and right >= 0
    for key in ("softcap", "scale"):
        if key in preset:
            assert isinstance(preset[key], float) and preset[key] > 0
    if "scale" in preset:
        assert not math.isclose(preset["scale"], preset["dim"] ** -0.5), "scale is set only where it differs"
    if "dim_v" in preset:
        assert preset["dim_v"] != preset["dim"], "dim_v is set only where it differs"


def test_published_values():
    llama = PRESETS["llama-3.1-8b"]
    assert (llama["heads"], llama["kv_heads"], llama["dim"]) == (32, 8, 128)
    assert "window" not in llama and "softcap" not in llama and "scale" not in llama
    assert (PRESETS["llama-3.1-70b"]["heads"], PRESETS["llama-3.1-70b"]["kv_heads"]) == (64, 8)

    assert PRESETS["mistral-7b-v0.1"]["window"] == [4095, 0]  # sliding_window 4096, the diagonal included

    gemma9 = PRESETS["gemma-2-9b"]
    assert (gemma9["heads"], gemma9["kv_heads"], gemma9["dim"]) == (16, 8, 256)
    assert gemma9["softcap"] == 50.0 and gemma9["window"] == [4095, 0]
    assert "scale" not in gemma9  # query_pre_attn_scalar 256 = head_dim: the default 1/sqrt(dim)
    assert "window" not in PRESETS["gemma-2-9b-global"] and PRESETS["gemma-2-9b-global"]["softcap"] == 50.0
    gemma27 = PRESETS["gemma-2-27b"]
    assert (gemma27["heads"], gemma27["kv_heads"], gemma27["dim"]) == (32, 16, 128)
    assert math.isclose(gemma27["scale"], 1 / math.sqrt(144))  # query_pre_attn_scalar 144

    qwen = PRESETS["qwen2.5-7b"]
    assert (qwen["heads"], qwen["kv_heads"], qwen["dim"]) == (28, 4, 128)

    deepseek = PRESETS["deepseek-v3"]
    assert (deepseek["heads"], deepseek["kv_heads"]) == (128, 128)  # MLA, prefill form
    assert (deepseek["dim"], deepseek["dim_v"]) == (128 + 64, 128)
    mscale = 0.1 * 1.0 * math.log(40) + 1.0  # rope_scaling: factor 40, mscale_all_dim 1.0
    assert math.isclose(deepseek["scale"], 192**-0.5 * mscale**2)


def test_load_returns_a_copy():
    first = presets.load()
    first["llama-3.1-8b"]["heads"] = 1
    first["mistral-7b-v0.1"]["window"][0] = 1
    again = presets.load()
    assert again["llama-3.1-8b"]["heads"] == 32 and again["mistral-7b-v0.1"]["window"] == [4095, 0]


def test_apply_replaces_the_preset_by_its_geometry():
    shape = {"name": "llama8b_s8192", "preset": "llama-3.1-8b", "batch": 1, "seq": 8192, "causal": True}
    out = presets.apply(shape)
    assert out == {
        "name": "llama8b_s8192",
        "heads": 32,
        "kv_heads": 8,
        "dim": 128,
        "batch": 1,
        "seq": 8192,
        "causal": True,
    }
    assert list(out)[:4] == ["name", "heads", "kv_heads", "dim"]  # in the place `preset` held
    assert "preset" in shape  # the shape given is left alone


def test_apply_leaves_source_and_notes_out():
    out = presets.apply({"name": "g", "preset": "gemma-2-27b", "batch": 1, "seq": 4096})
    assert "source" not in out and "notes" not in out
    assert out["softcap"] == 50.0 and out["window"] == [4095, 0] and math.isclose(out["scale"], 1 / 12)


def test_the_shapes_own_keys_win():
    out = presets.apply({"name": "mqa", "preset": "llama-3.1-8b", "kv_heads": 1, "dim": 64, "seq": 512})
    assert (out["heads"], out["kv_heads"], out["dim"]) == (32, 1, 64)


def test_a_null_in_the_shape_drops_the_presets_value():
    out = presets.apply({"name": "full", "preset": "mistral-7b-v0.1", "window": None, "seq": 512})
    assert "window" not in out and out["heads"] == 32
    # A null for a field the preset lacks is dropped too: null means "not set", never a value.
    assert "softcap" not in presets.apply({"name": "x", "preset": "llama-3.1-8b", "softcap": None})


def test_apply_returns_fresh_lists():
    out = presets.apply({"name": "m", "preset": "mistral-7b-v0.1"})
    out["window"][0] = 7
    assert presets.apply({"name": "m", "preset": "mistral-7b-v0.1"})["window"] == [4095, 0]


def test_a_shape_without_a_preset_comes_back_as_a_copy():
    shape = {"name": "plain", "batch": 1, "heads": 8, "seq": 128, "dim": 64, "window": None}
    out = presets.apply(shape)
    assert out == shape and out is not shape


@pytest.mark.parametrize(
    ("name", "suggested"),
    [("llama-3.1-8", "llama-3.1-8b"), ("Gemma-2-9B", "gemma-2-9b"), ("deepseek-v2", "deepseek-v3")],
)
def test_an_unknown_preset_suggests_the_close_names(name, suggested):
    with pytest.raises(ValueError, match="unknown preset") as error:
        presets.apply({"name": "s", "preset": name, "batch": 1, "seq": 128})
    message = str(error.value)
    assert f"did you mean {suggested!r}" in message or f"or {suggested!r}" in message
    for known in presets.names():
        assert known in message


@pytest.mark.parametrize("name", ["nothing-like-it", 7, None])
def test_an_unknown_preset_without_close_names_lists_them_all(name):
    with pytest.raises(ValueError) as error:
        presets.apply({"name": "s", "preset": name})
    assert "did you mean" not in str(error.value)
    assert ", ".join(presets.names()) in str(error.value)


GOOD = {"heads": 8, "kv_heads": 2, "dim": 64, "source": "https://example.org/config.json"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"head_dim": 64}, "unknown fields"),
        ({"source": None}, "source"),
        ({"source": "  "}, "source"),
        ({"kv_heads": 3}, "not a multiple"),
        ({"dim": 512}, "over 256"),
        ({"dim_v": 0}, "dim_v must be a positive integer"),
        ({"heads": True}, "heads must be a positive integer"),
        ({"heads": 8.0}, "heads must be a positive integer"),
        ({"window": [4095]}, "window"),
        ({"window": [-1, 0]}, "window"),
        ({"window": None}, "window"),
        ({"softcap": "50"}, "softcap"),
        ({"scale": 0}, "scale"),
        ({"alibi": "yes"}, "alibi"),
        ({"notes": 3}, "notes"),
    ],
)
def test_check_refuses_bad_presets(change, message):
    preset = {**GOOD, **change}
    with pytest.raises(presets.PresetError, match=message):
        presets.check("bad", preset)


def test_check_requires_the_geometry_and_a_source():
    with pytest.raises(presets.PresetError, match="missing kv_heads, source"):
        presets.check("bad", {"heads": 8, "dim": 64})


def test_check_normalises_numbers():
    out = presets.check("ok", {**GOOD, "softcap": 30, "scale": 1, "window": [15, 0], "alibi": False})
    assert out["softcap"] == 30.0 and isinstance(out["softcap"], float) and isinstance(out["scale"], float)


def test_parse_refuses_a_file_that_is_not_a_mapping():
    for data in (None, [], {}, [GOOD]):
        with pytest.raises(presets.PresetError, match="must map preset names"):
            presets.parse(data)
    with pytest.raises(presets.PresetError, match="names are text"):
        presets.parse({3: GOOD})


def test_the_yaml_parses_the_same_as_load():
    text = resources.files("attnbench").joinpath("presets.yaml").read_text(encoding="utf-8")
    assert presets.parse(yaml.safe_load(text)) == PRESETS
