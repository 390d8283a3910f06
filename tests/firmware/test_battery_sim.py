"""The battery model describes what the firmware really does: the same usage profile, run on
the virtual board (real firmware, a day of device time), costs about what the model says."""

from __future__ import annotations

import pytest

from tests.conftest import requires_node
from tools.sim import battery_model

pytestmark = requires_node
ROWS = {r.profile.role: r for r in battery_model.table()}


@pytest.mark.parametrize("role", sorted(ROWS))
def test_simulated_day_matches_the_model(role: str) -> None:
    sim, figures = battery_model.simulate(role)
    model = ROWS[role].rail_ua - battery_model.sensor_and_floor_ua(role)
    # The model may be conservative (it is for evenly spaced PIR triggers), never optimistic
    # by more than a few percent: that would overstate the battery life.
    assert 0.7 * model <= sim <= 1.08 * model, (sim, model, figures)
    assert figures["boots"] >= 1
