"""The promotion gate."""
import pytest

from retrainer.evaluation import promotion_gate
from retrainer.settings import GateSettings


@pytest.mark.parametrize("cand,prod,eligible,why", [
    (0.80, None, True, "passes"),
    (0.65, None, False, "below the minimum"),
    (0.78, 0.80, True, "passes"),
    (0.77, 0.80, False, "more than 0.02 below"),
])
def test_promotion_gate(cand, prod, eligible, why):
    d = promotion_gate({"auc": cand}, {"auc": prod} if prod else None, GateSettings())
    assert d.eligible is eligible and why in d.reason
