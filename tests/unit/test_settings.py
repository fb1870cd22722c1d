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


@pytest.mark.parametrize("value,ok", [("30d", 30 * 86400), ("48h", 48 * 3600), ("90m", 5400), ("1s", 1),
                                      ("0d", None), ("-1d", None), ("soon", None), ("", None)])
def test_label_delay_is_a_positive_duration(monkeypatch, value, ok):
    monkeypatch.delenv("RETRAINER_CONFIG", raising=False)
    monkeypatch.setenv("RETRAINER_LABEL_DELAY", value)
    if ok is None:
        with pytest.raises(ConfigError, match="bad setting label_delay: .*positive duration") as err:
            load_settings()
        assert "\n" not in str(err.value)
    else:
        assert load_settings().label_delay.total_seconds() == ok


def test_the_canary_settings_that_were_replaced_are_refused(monkeypatch):
    # too_few_labels promoted an undecided canary; the inconclusive policy never does
    monkeypatch.delenv("RETRAINER_CONFIG", raising=False)
    monkeypatch.setenv("RETRAINER_CANARY__TOO_FEW_LABELS", "promote")
    with pytest.raises(ConfigError, match="bad setting canary.too_few_labels"):
        load_settings()
    monkeypatch.delenv("RETRAINER_CANARY__TOO_FEW_LABELS")
    monkeypatch.setenv("RETRAINER_CANARY__INCONCLUSIVE", "promote")
    with pytest.raises(ConfigError, match="bad setting canary.inconclusive"):
        load_settings()
