"""The token bucket behind bandwidth.global_limit and bandwidth.per_peer_limit, on trio's mock clock."""

import pytest
import trio
import trio.testing

from shoal.daemon.net.ratelimit import BURST_SECONDS, TokenBucket, throttle

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
    pay = throttle(fast, slow)

    async def main():
        for _ in range(30):
            await pay(100_000)

    assert run_timed(main) == pytest.approx(3.0, rel=0.01)
