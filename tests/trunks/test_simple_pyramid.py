import keras
import numpy as np
import pytest

from keras_mtl.trunks import TokensToGrid, simple_feature_pyramid
from keras_mtl.trunks.simple_pyramid import level_of_stride


def test_tokens_to_grid_drops_leading_tokens_and_keeps_row_major_order():
    tokens = np.arange(2 * 7 * 3, dtype="float32").reshape(2, 7, 3)  # 1 class + 2 registers
    grid = np.asarray(TokensToGrid((2, 2))(tokens))
    np.testing.assert_array_equal(grid, tokens[:, 3:].reshape(2, 2, 2, 3))
    assert grid[0, 0, 1].tolist() == tokens[0, 4].tolist()  # row 0, column 1 = second patch


def test_tokens_to_grid_round_trips_its_config():
    layer = TokensToGrid((3, 5), name="grid")
    again = TokensToGrid.from_config(layer.get_config())
    assert again.grid_size == (3, 5) and again.name == "grid"


def test_simple_pyramid_from_one_level():
    grid = keras.Input((4, 4, 32))  # stride 16 of a 64 px image
    pyramid = simple_feature_pyramid({"P4": grid})
    assert {k: tuple(v.shape) for k, v in pyramid.items()} == {
        "P2": (None, 16, 16, 8), "P3": (None, 8, 8, 16), "P4": (None, 4, 4, 32),
        "P5": (None, 2, 2, 32)}
    assert pyramid["P4"] is grid
    model = keras.Model(grid, pyramid)
    assert [layer.name for layer in model.layers if layer.name.startswith("simple_pyramid_P2")] \
        == ["simple_pyramid_P2_up1", "simple_pyramid_P2_norm1", "simple_pyramid_P2_gelu1",
            "simple_pyramid_P2_up2"]
    values = np.random.default_rng(0).normal(size=(1, 4, 4, 32)).astype("float32")
    out = model(values)
    np.testing.assert_allclose(out["P5"], values.reshape(1, 2, 2, 2, 2, 32).max(axis=(2, 4)))


def test_simple_pyramid_keeps_present_levels_and_fills_the_missing_coarse_one():
    maps = {level: keras.Input((size, size, 8)) for level, size in
            (("P2", 16), ("P3", 8), ("P4", 4))}
    pyramid = simple_feature_pyramid(maps)
    assert all(pyramid[level] is maps[level] for level in maps)
    assert tuple(pyramid["P5"].shape) == (None, 2, 2, 8)


def test_simple_pyramid_needs_a_level():
    with pytest.raises(ValueError, match="needs one of"):
        simple_feature_pyramid({"stem": keras.Input((4, 4, 8))})


@pytest.mark.parametrize("stride, level", [(4, "P2"), (8, "P3"), (14, "P4"), (16, "P4"),
                                           (28, "P5"), (32, "P5")])
def test_level_of_stride(stride, level):
    assert level_of_stride(stride) == level
