"""The engine's shared link: processor sharing, checked against hand-computed finish times."""

import pytest
import simpy

from simulator.training.reference_engine import Link


def finish_times(jobs):
    """jobs: (arrival s, work s at full rate); returns each job's finish time on one link."""
    env = simpy.Environment()
    link = Link(env)
    done = {}

    def job(i, at, work):
        yield env.timeout(at)
        ev = env.event()
        link.transfer(work, ev)
        yield ev
        done[i] = env.now

    for i, (at, work) in enumerate(jobs):
        env.process(job(i, at, work))
    env.run()
    return [done[i] for i in range(len(jobs))]


def test_single_transfer_takes_its_time():
    assert finish_times([(0.0, 1.5)]) == [pytest.approx(1.5, rel=1e-12)]


def test_two_equal_transfers_share_the_link():
    """Each gets half the bandwidth: both end at 2 x 1 s."""
    assert finish_times([(0.0, 1.0), (0.0, 1.0)]) == [pytest.approx(2.0, rel=1e-12)] * 2


def test_short_transfer_overtakes_a_long_one():
    """Work 0.5 and 2.0 from t=0: the short one ends at 2 x 0.5 = 1.0; the long one has 1.5 left,
    alone from then on, ends at 2.5 (total work 2.5, the link never idles)."""
    short, long_ = finish_times([(0.0, 0.5), (0.0, 2.0)])
    assert (short, long_) == (pytest.approx(1.0, rel=1e-12), pytest.approx(2.5, rel=1e-12))


def test_late_arrival_slows_the_first():
    """Work 1.0 at t=0, work 1.0 at t=0.5: first has 0.5 left at 0.5, shares -> ends at 1.5;
    second then has 0.5 left, alone -> ends at 2.0."""
    assert finish_times([(0.0, 1.0), (0.5, 1.0)]) == [pytest.approx(1.5, rel=1e-12),
                                                     pytest.approx(2.0, rel=1e-12)]


def test_work_is_conserved_on_a_busy_link():
    """Whatever the arrivals, a link that never idles finishes the last job at total work."""
    jobs = [(0.0, 0.3), (0.1, 0.7), (0.2, 0.2), (0.25, 1.1), (0.9, 0.4)]
    assert max(finish_times(jobs)) == pytest.approx(sum(w for _, w in jobs), rel=1e-12)
