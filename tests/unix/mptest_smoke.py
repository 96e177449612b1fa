# The runner itself: a sync and an async test pass on the unix port.
import asyncio


def test_sync():
    assert 1 + 1 == 2


async def test_async():
    await asyncio.sleep_ms(1)
