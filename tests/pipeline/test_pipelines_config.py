"""Pipeline configs (``astroembed run CONFIG.toml``): the shipped examples load, unknown and
pipeline-owned keys are refused with a useful message, relative paths follow the file."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from astroembed.config import from_mapping, load_run_config
from astroembed.errors import ConfigError
from astroembed.training.trainer import TrainConfig

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
# TOML files in pipelines/ that are not `astroembed run` configs: the default model's
# training recipe (read by `astroembed train --config`).
NOT_RUN_CONFIGS = {"default-model.toml"}
RUN_CONFIGS = sorted(p for p in PIPELINES.glob("*.toml") if p.name not in NOT_RUN_CONFIGS)

MINIMAL = 'images = "img"\nspectra = "spec"\ncatalog = "cat"\n'


def write(tmp_path: Path, text: str, name: str = "pipeline.toml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_shipped_pipelines_are_found():
    names = {p.name for p in RUN_CONFIGS}
    assert {"demo.toml", "datacentre.example.toml"} <= names


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_every_pipeline_loads(path):
    cfg = load_run_config(path)  # the paths in it need not exist
    assert cfg.images and cfg.spectra and cfg.catalog
    for p in cfg.images + cfg.spectra + [cfg.catalog]:
        assert Path(p).is_absolute()
    assert cfg.crossmatch.out == cfg.catalog
    assert cfg.embed.catalog == cfg.catalog
    if cfg.probe is not None:
        assert cfg.probe.catalog == cfg.catalog and cfg.probe_targets
    assert cfg.source == str(path.resolve())


def test_demo_pipeline_reads_the_demo_survey():
    cfg = load_run_config(PIPELINES / "demo.toml")
    root = PIPELINES.parent
    assert cfg.images == [str(root / "demo-output/survey/legacysurvey")]
    assert cfg.spectra == [str(root / "demo-output/survey/desi")]
    assert cfg.catalog == str(root / "demo-output/run/matched")
    assert (cfg.crossmatch.radius, cfg.crossmatch.mode) == (1.0, "best")
    assert cfg.embed.model is None  # the default model
    assert cfg.probe_targets == ("redshift",)
    assert cfg.probe.method == ("knn", "linear")
    assert cfg.probe.out == str(root / "demo-output/run/probe")
    assert cfg.predict is None
    assert cfg.compute.scheduler is None


def test_datacentre_example_uses_the_cluster_everywhere():
    cfg = load_run_config(PIPELINES / "datacentre.example.toml")
    assert len(cfg.images) == 2 and len(cfg.spectra) == 2
    assert any(p.endswith("zpix-main-bright.fits") for p in cfg.spectra)
    assert any(p.endswith("/dr10/south") for p in cfg.images)  # the brick coadds' root
    assert cfg.crossmatch.cutout_size == 152
    assert cfg.embed.model and Path(cfg.embed.model).is_absolute()
    scheduler = "tcp://scheduler.example.org:8786"
    assert cfg.compute.scheduler == cfg.crossmatch.scheduler == cfg.embed.scheduler == scheduler


def test_unknown_top_level_key_suggests(tmp_path):
    path = write(tmp_path, 'images = "img"\nspectra = "spec"\ncatalogue = "cat"\n')
    with pytest.raises(ConfigError, match=r"unknown key 'catalogue'\. Did you mean 'catalog'\?"):
        load_run_config(path)


@pytest.mark.parametrize("table, key, suggestion", [
    ("crossmatch", "raduis = 2.0", "radius"),
    ("embed", 'modelity = "image"', "modality"),
    ("probe", 'methods = ["knn"]', "method"),
    ("probe", 'targts = ["redshift"]', "targets"),
    ("compute", 'schedular = "tcp://x:8786"', "scheduler"),
])
def test_unknown_key_in_table_suggests(tmp_path, table, key, suggestion):
    path = write(tmp_path, f"{MINIMAL}[{table}]\n{key}\n")
    wrong = key.split(" ", 1)[0]
    with pytest.raises(ConfigError, match=rf"\[{table}\]: unknown key '{wrong}'\. "
                                          rf"Did you mean '{suggestion}'\?"):
        load_run_config(path)


@pytest.mark.parametrize("table, key", [
    ("embed", 'catalog = "elsewhere"'),
    ("embed", "force = true"),
    ("embed", 'tiles = ["5/123"]'),
    ("crossmatch", 'out = "elsewhere"'),
    ("crossmatch", 'images = ["a"]'),
    ("crossmatch", 'scheduler = "tcp://x:8786"'),
    ("probe", 'catalog = "elsewhere"'),
    ("probe", 'target = "redshift"'),
])
def test_pipeline_owned_keys_are_refused(tmp_path, table, key):
    path = write(tmp_path, f"{MINIMAL}[{table}]\n{key}\n")
    name = key.split(" ", 1)[0]
    with pytest.raises(ConfigError, match=rf"\[{table}\] {name} is set by the pipeline"):
        load_run_config(path)


def test_missing_required_key(tmp_path):
    path = write(tmp_path, 'images = "img"\ncatalog = "cat"\n')
    with pytest.raises(ConfigError, match="'spectra' is required"):
        load_run_config(path)


def test_relative_paths_resolve_against_the_config_file(tmp_path, monkeypatch):
    conf_dir = tmp_path / "conf" / "sub"
    write(conf_dir, """
images = ["img", "../other/img2", "/abs/images"]
spectra = "spec"
catalog = "out/cat"

[embed]
model = "models/m"

[probe]
out = "probe-out"
save = "saved-probe"

[predict]
probe = "../saved-probe"
column = "Z_PRED"
""")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_run_config(Path("..") / "conf" / "sub" / "pipeline.toml")  # a relative path, too

    def at(rel: str) -> str:
        return str((conf_dir / rel).resolve())

    assert cfg.images == [at("img"), at("../other/img2"), "/abs/images"]
    assert cfg.spectra == [at("spec")]
    assert cfg.catalog == at("out/cat")
    assert cfg.crossmatch.out == cfg.embed.catalog == cfg.probe.catalog == at("out/cat")
    assert cfg.embed.model == at("models/m")
    assert cfg.probe.out == at("probe-out")
    assert cfg.probe.save == at("saved-probe")
    assert (cfg.predict.probe, cfg.predict.column) == (at("../saved-probe"), "Z_PRED")
    assert not any(str(elsewhere) in p for p in cfg.images + cfg.spectra)


def test_home_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = write(tmp_path, 'images = "~/img"\nspectra = "spec"\ncatalog = "cat"\n')
    assert load_run_config(path).images == [str((tmp_path / "home" / "img").resolve())]


def test_targets_and_methods_as_strings_become_tuples(tmp_path):
    path = write(tmp_path, f'{MINIMAL}[probe]\ntargets = "redshift"\nmethod = "linear"\n')
    cfg = load_run_config(path)
    assert cfg.probe_targets == ("redshift",)
    assert cfg.probe.method == ("linear",)
    assert cfg.probe.target == "redshift"


def test_probe_is_optional_and_defaults_to_redshift(tmp_path):
    cfg = load_run_config(write(tmp_path, MINIMAL))
    assert cfg.probe is None and cfg.probe_targets == () and cfg.predict is None
    cfg = load_run_config(write(tmp_path, MINIMAL + "[probe]\n", "with-probe.toml"))
    assert cfg.probe is not None and cfg.probe_targets == ("redshift",)


def test_values_are_validated(tmp_path):
    path = write(tmp_path, f'{MINIMAL}[crossmatch]\nmode = "nearest"\n')
    with pytest.raises(ConfigError, match=r"pipeline.toml \[crossmatch\]: 'mode' must be one of"):
        load_run_config(path)
    path = write(tmp_path, f'{MINIMAL}[probe]\nmethod = ["knn", "forest"]\n', "p2.toml")
    with pytest.raises(ConfigError, match=r"p2.toml \[probe\]: 'method' must be one of"):
        load_run_config(path)


def test_default_model_recipe_is_the_training_defaults():
    """`astroembed train` without --config trains the shipped model's recipe, and the recipe
    file is a valid training config (every key known, every value the default)."""
    path = PIPELINES / "default-model.toml"
    recipe = {**tomllib.loads(path.read_text()), "catalog": "CAT", "out": "OUT"}
    loaded = from_mapping(TrainConfig, recipe, source=str(path))
    defaults = TrainConfig(catalog="CAT", out="OUT")
    differ = {f.name: (getattr(loaded, f.name), getattr(defaults, f.name))
              for f in dataclasses.fields(TrainConfig)
              if getattr(loaded, f.name) != getattr(defaults, f.name)}
    assert differ == {}


def test_encoder_defaults_are_the_shipped_models_architecture():
    """The encoders' config defaults, the training defaults and the shipped model's own record
    of how it was trained (its model.json) describe one architecture."""
    import json

    from astroembed.runtime.modelfile import DEFAULT_MODEL_DIR
    from astroembed.training.recipe import SPECTRUM_BIN, ImageEncoderConfig, SpectrumEncoderConfig

    shipped = json.loads((DEFAULT_MODEL_DIR / "model.json").read_text())["training"]["config"]
    spectrum, image = SpectrumEncoderConfig(), ImageEncoderConfig()
    assert {k: shipped["spectrum"][k] for k in ("patch", "width", "depth", "heads", "mlp_ratio")} \
        == {k: getattr(spectrum, k) for k in ("patch", "width", "depth", "heads", "mlp_ratio")}
    assert [tuple(layer) for layer in shipped["spectrum"]["stem"]] == list(spectrum.stem)
    assert shipped["image"] == {"widths": list(image.widths), "heads": image.heads}
    assert (shipped["crop"], shipped["embed_dim"], shipped["spectrum_bin"]) == \
        (image.crop, spectrum.embed_dim, SPECTRUM_BIN)
    defaults = json.loads(json.dumps(dataclasses.asdict(TrainConfig(catalog="CAT", out="OUT"))))
    assert (defaults["spectrum"], defaults["image"]) == (shipped["spectrum"], shipped["image"])


def test_interval_levels_and_protocol_in_a_pipeline(tmp_path):
    path = write(tmp_path, MINIMAL + '[probe]\nlevels = [0.5, 0.9]\nprotocol = "astroclip"\n'
                 '[predict]\nprobe = "p"\nlevels = [0.9]\n')
    cfg = load_run_config(path)
    assert cfg.probe.levels == (0.5, 0.9) and cfg.probe.protocol == "astroclip"
    assert cfg.predict.levels == (0.9,)
    cfg.probe.validate()


@pytest.mark.parametrize("text, words", [
    ("[predict]\nprobe = \"p\"\nlevels = [1.5]\n", "--level 1.5"),
    ("[predict]\nprobe = \"p\"\nlevel = [0.9]\n", "Did you mean 'levels'?"),
])
def test_bad_predict_levels_are_refused(tmp_path, text, words):
    with pytest.raises(ConfigError, match=words.replace("?", r"\?")):
        load_run_config(write(tmp_path, MINIMAL + text))


@pytest.mark.parametrize("options, words", [
    ({"levels": (0.68, 1.0)}, "--level 1.0"), ({"levels": ()}, "at least one"),
    ({"protocol": "paper"}, "protocol"),
])
def test_bad_probe_levels_and_protocol_are_refused(options, words):
    from astroembed.config import ProbeConfig

    with pytest.raises(ConfigError, match=words):
        ProbeConfig(catalog="c", **options).validate()
