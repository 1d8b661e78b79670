"""The token bucket behind bandwidth.global_limit and bandwidth.per_peer_limit, on trio's mock clock."""

import pytest
import trio
import trio.testing

from shoal.daemon.net.ratelimit import BURST_SECONDS, MIN_SLICE, SLICE_SECONDS, Throttle, TokenBucket

MB = 1_000_000


def run_timed(main, *args) -> float:
    """Seconds of mock time `main(*args)` takes."""
    clock = trio.testing.MockClock(autojump_threshold=0)
    took: list[float] = []

    async def timed():
        start = trio.current_time()
        await main(*args)
        took.append(trio.current_time() - start)

    trio.run(timed, clock=clock)
    return took[0]


async def pay_in_pieces(bucket: TokenBucket, total: int, piece: int) -> None:
    for _ in range(total // piece):
        await bucket.pay(piece)


def test_a_single_payer_moves_at_the_rate():
    took = run_timed(pay_in_pieces, TokenBucket(lambda: 2 * MB), 10 * MB, 64 * 1024 - 1)
    assert took == pytest.approx(5.0, rel=0.01)


def test_concurrent_payers_share_the_rate():
    bucket = TokenBucket(lambda: MB)

    async def four_at_once():
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(pay_in_pieces, bucket, 2 * MB, 100_000)

    assert run_timed(four_at_once) == pytest.approx(8.0, rel=0.01)


def test_zero_means_no_cap_and_a_new_rate_applies_at_the_next_payment():
    rates = [0]
    bucket = TokenBucket(lambda: rates[0])

    async def change_midway():
        await pay_in_pieces(bucket, 100 * MB, MB)
        assert trio.current_time() == 0, "no cap: no waiting"
        rates[0] = 4 * MB
        await pay_in_pieces(bucket, 8 * MB, MB)

    assert run_timed(change_midway) == pytest.approx(2.0, rel=0.01)


def test_idle_time_saves_at_most_a_short_burst():
    bucket = TokenBucket(lambda: MB)

    async def idle_then_pay():
        await bucket.pay(1)
        await trio.sleep(60)
        start = trio.current_time()
        await bucket.pay(MB)
        return trio.current_time() - start

    async def main():
        waited = await idle_then_pay()
        assert waited == pytest.approx(1.0 - BURST_SECONDS, rel=0.01)

    run_timed(main)


def test_throttle_pays_every_bucket():
    slow, fast = TokenBucket(lambda: MB), TokenBucket(lambda: 10 * MB)
    caps = Throttle(fast, slow)

    async def main():
        for _ in range(30):
            await caps.pay(100_000)

    assert run_timed(main) == pytest.approx(3.0, rel=0.01)


def test_a_slice_is_a_tenth_of_a_second_of_the_tightest_cap_within_its_bounds():
    uncapped = TokenBucket(lambda: 0)
    assert Throttle(uncapped, TokenBucket(lambda: 0)).slice(8 * MB) == 8 * MB
    assert Throttle(uncapped, TokenBucket(lambda: 10 * MB), TokenBucket(lambda: 3 * MB)).slice(8 * MB) == int(
        3 * MB * SLICE_SECONDS
    )
    assert Throttle(TokenBucket(lambda: 10_000)).slice(8 * MB) == MIN_SLICE
    assert Throttle(TokenBucket(lambda: 10_000)).slice(1000) == 1000
    assert Throttle(TokenBucket(lambda: 10**10)).slice(8 * MB) == 8 * MB


def test_a_slice_follows_a_cap_changed_at_run_time():
    rate = [0]
    caps = Throttle(TokenBucket(lambda: rate[0]))
    assert caps.slice(8 * MB) == 8 * MB
    rate[0] = 2 * MB
    assert caps.slice(8 * MB) == 200_000
