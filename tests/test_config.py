"""Config loading: unknown keys fail with the closest valid name; bad TOML names its file."""

from __future__ import annotations

import pytest

from astroembed.config import SimulationConfig, from_mapping, load_toml
from astroembed.errors import ConfigError


def test_from_mapping_builds_and_validates():
    cfg = from_mapping(SimulationConfig, {"n_galaxies": 10, "seed": 3})
    assert cfg == SimulationConfig(n_galaxies=10, seed=3)
    with pytest.raises(ConfigError, match="--n-galaxies"):
        from_mapping(SimulationConfig, {"n_galaxies": 0})


def test_unknown_key_suggests_closest(tmp_path):
    with pytest.raises(ConfigError, match=r"pipeline.toml: unknown key 'n_galaxy'.*'n_galaxies'"):
        from_mapping(SimulationConfig, {"n_galaxy": 10}, source="pipeline.toml")
    with pytest.raises(ConfigError, match="Valid keys: n_galaxies, seed"):
        from_mapping(SimulationConfig, {"zzz": 1})


def test_load_toml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("n_galaxies = = 3\n")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        load_toml(bad)
    with pytest.raises(ConfigError, match="missing.toml: no such config file"):
        load_toml(tmp_path / "missing.toml")
    good = tmp_path / "good.toml"
    good.write_text("n_galaxies = 3\nseed = 1\n")
    assert from_mapping(SimulationConfig, load_toml(good), str(good)).n_galaxies == 3


def test_tables_load_into_nested_dataclasses(tmp_path):
    """A training config's [spectrum] and [image] tables are typed like the top level: unknown
    keys suggest, types are checked, a table overrides single keys of the defaults."""
    import astroembed
    from astroembed.training.recipe import SpectrumEncoderShape
    from astroembed.training.trainer import TrainConfig

    base = {"catalog": "c", "out": "o"}
    cfg = from_mapping(TrainConfig, base | {"spectrum": {"depth": 2}}, source="t.toml")
    assert cfg.spectrum == SpectrumEncoderShape(depth=2)
    assert cfg.spectrum.patch == SpectrumEncoderShape().patch
    with pytest.raises(ConfigError, match=r"t.toml \[spectrum\]: unknown key 'dept'\. "
                                          r"Did you mean 'depth'\?"):
        from_mapping(TrainConfig, base | {"spectrum": {"dept": 2}}, source="t.toml")
    with pytest.raises(ConfigError, match=r"t.toml \[image\]: 'widths' must be a list of integers"):
        from_mapping(TrainConfig, base | {"image": {"widths": "24,48"}}, source="t.toml")
    with pytest.raises(ConfigError, match=r"t.toml: 'spectrum' must be a table \(\[spectrum\]\)"):
        from_mapping(TrainConfig, base | {"spectrum": 3}, source="t.toml")
    with pytest.raises(ConfigError, match=r"t.toml \[image\]: widths must be a non-empty"):
        from_mapping(TrainConfig, base | {"image": {"widths": []}}, source="t.toml")
    # The same through the public API: the error names the file the table came from.
    recipe = tmp_path / "recipe.toml"
    recipe.write_text("[spectrum]\npatch = 3000\n")
    with pytest.raises(ConfigError, match=r"recipe.toml.*\[spectrum\].*patch 3000 is longer"):
        astroembed.train(tmp_path / "cat", tmp_path / "out", config=recipe)
    assert not (tmp_path / "out").exists()
