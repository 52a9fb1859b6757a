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
