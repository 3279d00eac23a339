"""The embedded engine's batching (serving/batcher.py): compatible requests share a generate call,
answers equal one-at-a-time ones, and a request whose client left stops costing compute."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from llmops_cli.serving.batcher import Batcher


class SlowEngine:
    """Generates one token per 10 ms per row until each row's budget; rows whose client left stop."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()

    def generate_batch(self, jobs):
        self.gate.wait(10)
        self.calls.append([len(j.ids) for j in jobs])
        out = [[] for _ in jobs]
        while any(len(o) < j.max_tokens and not j.cancelled.is_set() for o, j in zip(out, jobs, strict=True)):
            for o, j in zip(out, jobs, strict=True):
                if len(o) < j.max_tokens and not j.cancelled.is_set():
                    o.append(len(o))
            time.sleep(0.01)
        return [(o, None) for o in out]


def test_waiting_jobs_with_the_same_sampling_share_a_batch():
    engine = SlowEngine()
    batcher = Batcher(engine, max_batch=8)

    async def main():
        engine.gate.clear()  # hold the worker so that the jobs queue up behind the first one
        first = asyncio.ensure_future(batcher.submit([1], 2, {"temperature": 0}))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(batcher.submit([1] * (i + 2), 2, {"temperature": 0})) for i in range(5)]
        sampled = asyncio.ensure_future(batcher.submit([9], 2, {"temperature": 0.7}))
        seeded = [asyncio.ensure_future(batcher.submit([7], 2, {"temperature": 0.7, "seed": 1})) for _ in range(2)]
        await asyncio.sleep(0.05)
        engine.gate.set()
        return await asyncio.gather(first, *rest, sampled, *seeded)

    results = asyncio.run(main())
    batcher.close()
    assert all(r == ([0, 1], None) for r in results)
    # the first alone (it was running), then the five greedy ones together, the sampled one, each seeded alone
    assert [len(c) for c in engine.calls] == [1, 5, 1, 1, 1]


def test_a_client_that_leaves_stops_its_row():
    engine = SlowEngine()
    batcher = Batcher(engine, max_batch=4)

    async def main():
        task = asyncio.ensure_future(batcher.submit([1], 500, {}))  # 5 s if nobody stops it
        await asyncio.sleep(0.2)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the worker is free again long before the 5 s the abandoned request would have taken
        assert await batcher.submit([1], 1, {}) == ([0], None)
        return time.monotonic() - started

    assert asyncio.run(main()) < 1.0
    batcher.close()
