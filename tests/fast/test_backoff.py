"""Fast tier: the restart budget with a fake clock."""

from __future__ import annotations

from devsupervisor.backoff import PLATFORM_POLICY, BackoffPolicy, RestartBudget


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_platform_policy_backs_off_then_crashloops_on_fifth_exit() -> None:
    """Platform: 0.5, 1, 2, 4 s after four exits; the fifth within a minute gives up."""
    clock = FakeClock()
    budget = RestartBudget(PLATFORM_POLICY, clock=clock)
    delays = []
    for _ in range(4):
        delays.append(budget.record_failure())
        clock.now += 1
    assert delays == [0.5, 1.0, 2.0, 4.0]
    assert budget.record_failure() is None
    assert budget.count == 5


def test_immediate_first_then_doubles_and_caps() -> None:
    """Services: the first restart at once, then initial doubled per restart, capped at max."""
    clock = FakeClock()
    policy = BackoffPolicy(initial=1.0, max=3.0, restarts=10, within=600.0, immediate_first=True)
    budget = RestartBudget(policy, clock=clock)
    assert [budget.record_failure() for _ in range(5)] == [0.0, 1.0, 2.0, 3.0, 3.0]


def test_failures_outside_the_window_do_not_count() -> None:
    """Failures older than the window are forgotten: the delay and the limit start over."""
    clock = FakeClock()
    policy = BackoffPolicy(initial=1.0, max=30.0, restarts=2, within=60.0)
    budget = RestartBudget(policy, clock=clock)
    assert budget.record_failure() == 1.0
    assert budget.record_failure() == 2.0
    clock.now += 60.0
    assert budget.count == 0
    assert budget.record_failure() == 1.0


def test_exhausted_stays_exhausted_within_the_window() -> None:
    """Once over the limit, further failures inside the window are refused too."""
    clock = FakeClock()
    budget = RestartBudget(BackoffPolicy(1.0, 30.0, restarts=1, within=60.0), clock=clock)
    assert budget.record_failure() == 1.0
    assert budget.record_failure() is None
    clock.now += 10
    assert budget.record_failure() is None


def test_reset_forgets_everything() -> None:
    """reset() gives a fresh budget: count 0, first delay again."""
    clock = FakeClock()
    budget = RestartBudget(PLATFORM_POLICY, clock=clock)
    for _ in range(5):
        budget.record_failure()
    budget.reset()
    assert budget.count == 0
    assert budget.record_failure() == 0.5


def test_unlimited_budget_never_gives_up_and_stays_bounded() -> None:
    """restarts=None (a reconnect loop): never exhausted, the delay stays at max, memory bounded."""
    clock = FakeClock()
    budget = RestartBudget(BackoffPolicy(0.5, 10.0, restarts=None, within=1e9), clock=clock)
    delays = [budget.record_failure() for _ in range(1000)]
    assert delays[:6] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]
    assert all(d == 10.0 for d in delays[5:])
    assert budget.count <= 64
