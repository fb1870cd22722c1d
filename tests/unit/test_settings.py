"""Settings: YAML plus RETRAINER_* variables, one-line errors."""
import pytest

from retrainer.errors import ConfigError
from retrainer.settings import load_settings


def test_bad_settings_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRAINER_GATE__MIN_AUC", "1.7")
    with pytest.raises(ConfigError, match="bad setting gate.min_auc"):
        load_settings()
    monkeypatch.delenv("RETRAINER_GATE__MIN_AUC")
    cfg = tmp_path / "r.yaml"
    cfg.write_text("gate:\n  min_auc: 0.75\ncanary:\n  traffic: 0.2\n")
    monkeypatch.setenv("RETRAINER_CONFIG", str(cfg))
    s = load_settings()
    assert s.gate.min_auc == 0.75 and s.canary.traffic == 0.2 and s.drift.psi_threshold == 0.20
    cfg.write_text("gate: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read settings"):
        load_settings()
    cfg.write_text("gaet:\n  min_auc: 0.75\n")
    with pytest.raises(ConfigError, match="bad setting gaet"):
        load_settings()
    monkeypatch.setenv("RETRAINER_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()
