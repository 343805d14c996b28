import pytest

from engine import config
from engine.errors import ConfigError


def test_defaults_file_cli_precedence(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[sim]\nnants = 12\nnobs = 3\n")
    cfg = config.load(f, {"sim.nobs": "5"})
    assert cfg.sim.nants == 12  # file beats default
    assert cfg.sim.nobs == 5  # command line beats file
    assert cfg.band.nsubbands == 16  # default kept


@pytest.mark.parametrize("text, key", [("[sim]\nnantz = 3\n", "sim.nantz"),
                                       ("[sim]\nnants = 'many'\n", "sim.nants"),
                                       ("[convert]\nphasing = 'zenith'\n", "convert.phasing"),
                                       ("[sim]\nnants = 1\n", "sim.nants")])
def test_bad_values_name_the_key(tmp_path, text, key):
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config.load(f)


def test_shipped_configs_load_and_describe():
    for name in ("default.toml", "dsa110.toml", "ci.toml"):
        cfg = config.load(config.CONFIG_DIR / name)
        text = config.describe(cfg)
        assert "[site]" in text and "latitude_deg = 37.2339" in text


def test_digest_changes_with_values():
    assert config.load(None).digest() != config.load(None, {"sim.nants": 3}).digest()
