"""A session's rate: what moved over the last second, and 0 once nothing moves, however seldom it is read."""

from shoal.daemon.net.meter import RateMeter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_steady_stream_reads_its_rate_and_an_idle_one_reads_zero():
    clock = Clock()
    meter = RateMeter(clock)
    for _ in range(35):  # 100 kB every 0.1 s: 1 MB/s
        clock.now += 0.1
        meter.add(100_000)
    assert 900_000 <= meter.rate() <= 1_100_000
    clock.now += 0.5
    assert 0 < meter.rate() < 600_000  # half the last second moved nothing
    clock.now += 1.0
    assert meter.rate() == 0


def test_a_rate_read_long_after_a_burst_is_not_averaged_over_the_silence():
    clock = Clock()
    meter = RateMeter(clock)
    assert meter.rate() == 0
    meter.add(50_000_000)
    clock.now += 60  # nobody asked for a minute; the burst is long over
    assert meter.rate() == 0
    meter.add(1_000)
    assert meter.rate() == 1_000
