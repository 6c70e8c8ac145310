"""The simulated event loop (harness.sim.loop): virtual time, seeded
interleavings that repeat for a seed, the trace hash, pauses, and the
refusals."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any

import pytest

from harness.sim.loop import OWNER, SimLoop, SimulationError, run


async def _interleaved(tasks: int = 12, rounds: int = 4) -> list[int]:
    """Many tasks each appending its number and yielding: the order shows the interleaving."""
    order: list[int] = []

    async def worker(i: int) -> None:
        for _ in range(rounds):
            order.append(i)
            await asyncio.sleep(0)

    await asyncio.gather(*(worker(i) for i in range(tasks)))
    return order


def test_an_hour_of_sleep_takes_no_wall_time_and_advances_virtual_time() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(3600)
        return loop.time() - start

    import time
    wall = time.monotonic()
    elapsed, loop = run(main(), seed=1)
    assert elapsed == 3600
    assert loop.time() == 3600
    assert time.monotonic() - wall < 5  # nothing really slept an hour


def test_timers_fire_in_time_order_whatever_the_seed() -> None:
    async def main() -> list[tuple[float, str]]:
        loop = asyncio.get_running_loop()
        fired: list[tuple[float, str]] = []

        async def at(delay: float, name: str) -> None:
            await asyncio.sleep(delay)
            fired.append((loop.time(), name))

        await asyncio.gather(at(3, "c"), at(1, "a"), at(2, "b"))
        return fired

    for seed in range(5):
        assert run(main(), seed)[0] == [(1, "a"), (2, "b"), (3, "c")]


def test_wait_for_times_out_on_virtual_time() -> None:
    async def main() -> tuple[str, float, str]:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(asyncio.sleep(100), timeout=2.5)
            first = "finished"
        except TimeoutError:
            first = "timed out"
        at = loop.time()
        second = await asyncio.wait_for(asyncio.sleep(1, result="in time"), timeout=5)
        return first, at, second

    assert run(main(), 7)[0] == ("timed out", 2.5, "in time")


def test_asyncio_timeout_context_works() -> None:
    async def main() -> float:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.25):
                await asyncio.Event().wait()
        return asyncio.get_running_loop().time()

    assert run(main(), 3)[0] == 0.25


def test_same_seed_same_order_and_trace_hash() -> None:
    first_order, first = run(_interleaved(), seed=42)
    second_order, second = run(_interleaved(), seed=42)
    assert first_order == second_order
    assert first.trace_hash == second.trace_hash
    assert first.steps == second.steps > 40


def test_different_seeds_give_different_orders_and_hashes() -> None:
    results = {seed: run(_interleaved(), seed) for seed in range(8)}
    orders = {tuple(order) for order, _ in results.values()}
    hashes = {loop.trace_hash for _, loop in results.values()}
    assert len(orders) == 8
    assert len(hashes) == 8


def test_a_set_of_tasks_iterates_in_the_same_order_on_every_run() -> None:
    # asyncio.wait and the node keep tasks in sets: their order must not
    # depend on memory addresses.
    async def main() -> list[str]:
        tasks = {asyncio.ensure_future(asyncio.sleep(0, result=str(i))) for i in range(30)}
        await asyncio.wait(tasks)
        return [t.result() for t in tasks]

    assert run(main(), 5)[0] == run(main(), 5)[0]


def test_deadlock_is_an_error_not_a_hang() -> None:
    async def main() -> None:
        await asyncio.Event().wait()

    with pytest.raises(SimulationError, match="deadlock at virtual time"):
        run(main(), 1)


async def _thread() -> None:
    threading.Thread(target=lambda: None, name="worker").start()


async def _executor() -> None:
    await asyncio.get_running_loop().run_in_executor(None, sum, [1, 2])


async def _to_thread() -> None:
    await asyncio.to_thread(sum, [1, 2])


async def _connection() -> None:
    await asyncio.open_connection("127.0.0.1", 9)


async def _server() -> None:
    await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)


async def _subprocess() -> None:
    await asyncio.create_subprocess_exec("true")


@pytest.mark.parametrize(("main", "what", "seam"), [
    (_thread, r"starting a thread \(worker\)", "InlineOffload"),
    (_executor, r"run_in_executor\(sum\)", "InlineOffload"),
    (_to_thread, r"run_in_executor\(sum\)", "InlineOffload"),
    (_connection, "a real connection to 127.0.0.1:9", "simulated transport"),
    (_server, "a real server on 127.0.0.1:0", "harness.sim.network"),
    (_subprocess, r"a subprocess \(true\)", "harness.sim.world"),
])
def test_refusals_name_what_was_attempted_and_the_seam(main: Any, what: str, seam: str) -> None:
    with pytest.raises(SimulationError, match=what) as caught:
        run(main(), 1)
    assert "not allowed inside the simulated world" in str(caught.value)
    assert seam in str(caught.value)


def test_threads_work_again_once_the_world_stops() -> None:
    with pytest.raises(SimulationError):
        run(_thread(), 1)
    done = threading.Event()
    thread = threading.Thread(target=done.set)
    thread.start()
    thread.join()
    assert done.is_set()


def test_seed_must_be_an_int() -> None:
    with pytest.raises(TypeError, match="seed must be an int"):
        SimLoop("1")  # type: ignore[arg-type]


def test_a_paused_owner_runs_nothing_until_resumed_and_the_rest_runs_on() -> None:
    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, SimLoop)
        seen: list[tuple[str, float]] = []

        async def ticker(name: str) -> None:
            for _ in range(4):
                await asyncio.sleep(1)
                seen.append((name, loop.time()))

        a = contextvars.Context()
        a.run(OWNER.set, "a#1")
        tasks = [loop.create_task(ticker("a"), context=a), loop.create_task(ticker("b"))]
        await asyncio.sleep(1.5)
        loop.pause("a#1")
        assert loop.is_paused("a#1")
        await asyncio.sleep(3)
        loop.resume("a#1")
        await asyncio.gather(*tasks)
        return seen

    seen = run(main(), 7)[0]
    assert [t for n, t in seen if n == "b"] == [1.0, 2.0, 3.0, 4.0]
    # a's tick due at 2.0 waited for the resume at 4.5; its sleeps then went on from there
    assert [t for n, t in seen if n == "a"] == [1.0, 4.5, 5.5, 6.5]
