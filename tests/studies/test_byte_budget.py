"""The byte budget that bounds how much of the C-STORE files the sync's reader threads hold at once."""

import threading
import time

from saas.studies.services import ByteBudget


def test_holders_wait_until_their_bytes_fit_and_one_larger_than_the_budget_goes_alone():
    budget = ByteBudget(100)
    events: list[str] = []
    first_held, release_first = threading.Event(), threading.Event()

    def hold(name: str, size: int, *, until: threading.Event | None = None, held: threading.Event | None = None):
        with budget.hold(size):
            events.append(f"{name} in ({budget.used})")
            if held:
                held.set()
            if until:
                until.wait(5)
        events.append(f"{name} out")

    # given 60 bytes held
    first = threading.Thread(target=hold, args=("a", 60), kwargs={"until": release_first, "held": first_held})
    first.start()
    assert first_held.wait(5)
    # when 30 more and then 60 and 1,000 more are asked for
    second = threading.Thread(target=hold, args=("b", 30))
    second.start()
    second.join(5)
    third = threading.Thread(target=hold, args=("c", 60))
    huge = threading.Thread(target=hold, args=("d", 1000))
    third.start()
    huge.start()
    time.sleep(0.2)
    # then 30 fitted beside the 60, while the 60 and the 1,000 wait
    assert events == ["a in (60)", "b in (90)", "b out"]
    # when the first 60 are given back, then the others get in, the oversized one alone (as the whole budget)
    release_first.set()
    for thread in (first, third, huge):
        thread.join(5)
    assert "a out" in events and {"c in (60)", "d in (100)"} <= set(events)
    assert budget.used == 0
