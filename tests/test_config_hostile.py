"""Hostile and careless configs: aliases, object tags, huge or non-finite numbers, binary
files, and a preset switched by --set; one-line errors with short echoes."""

from __future__ import annotations

import pytest

from wavediff.cli.main import main
from wavediff.config import Config
from wavediff.errors import ConfigError

BOMB = """a: &a ["x","x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]
train: {max_steps: *g}
"""


def test_alias_bomb_is_refused_before_expanding(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    with pytest.raises(ConfigError, match="aliases") as e:
        Config.load(path)
    assert len(str(e.value)) < 300
    with pytest.raises(ConfigError, match="aliases"):
        Config().override(["train.max_steps=[&a 1, *a]"])


@pytest.mark.parametrize("item, phrase", [
    ("train.learning_rate=.nan", "finite"),
    ("train.learning_rate=.inf", "finite"),
    ("train.max_steps=" + "9" * 5000, "out of range"),
    ("train.seed=!!python/object/apply:os.system ['true']", "not valid YAML"),
    ("audio.fmax=.nan", "finite"),
])
def test_bad_overrides_are_one_short_line(item, phrase):
    with pytest.raises(ConfigError, match=phrase) as e:
        Config().override([item])
    assert len(str(e.value)) < 300 and "\n" not in str(e.value)


def test_binary_config_is_one_line(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    assert main(["train", "--config", str(path), "--train-dumpdir", str(tmp_path), "--outdir",
                 str(tmp_path / "e")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0]


def test_set_preset_brings_the_presets_values():
    cfg = Config().override(["audio.preset=vocos"])
    assert (cfg.audio.preset, cfg.audio.sample_rate, cfg.audio.n_mels) == ("vocos", 24000, 100)
    cfg = Config().override(["audio.preset=espnet", "audio.fmin=60"])
    assert cfg.audio.fmax == 7600.0 and cfg.audio.fmin == 60.0  # parsed literals: exact
