"""The simulated network (harness.sim.network): latency, loss, one-way and
two-way partitions, healing, packet faults, duplication, a node going down,
on the simulated loop."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import pytest

from harness.sim.loop import run
from harness.sim.network import NetworkSettings, SimNetwork, SimTransport
from kvnode.connection import ConnectionLost
from kvnode.transport import PeerUnreachable


def _net(nodes: int = 3, seed: int = 1, **settings: Any) -> SimNetwork:
    net = SimNetwork(random.Random(seed), NetworkSettings(**settings))
    for i in range(1, nodes + 1):
        name = f"n{i}"
        net.add(name)

        def answer(src: str, m: dict[str, Any], reply: Callable[[dict[str, Any]], None], name: str = name) -> None:
            # A ring_get_ok saying who answered and who asked.
            reply({"type": "ring_get_ok", "id": m["id"], "epoch": 0, "ring": {"asker": src}, "node": name})

        net.attach(name, answer)
    return net


RING_GET = {"type": "ring_get"}


async def _ask(net: SimNetwork, src: str, dst: str, timeout: float = 1.0) -> str:
    try:
        reply = await SimTransport(net, src).request(dst, dict(RING_GET), timeout)
    except TimeoutError:
        return "timeout"
    except PeerUnreachable:
        return "unreachable"
    except ConnectionLost:
        return "lost"
    return f"{reply['node']}<-{reply['ring']['asker']}"


def test_a_request_reaches_its_peer_after_the_links_latency() -> None:
    async def main() -> tuple[str, float]:
        net = _net(latency_min=0.01, latency_max=0.01, jitter=0)
        answer = await _ask(net, "n1", "n2")
        return answer, asyncio.get_running_loop().time()

    answer, elapsed = run(main(), 1)[0]
    assert answer == "n2<-n1"
    assert elapsed == pytest.approx(0.02)  # there and back


def test_latency_is_per_link_and_repeats_for_a_seed() -> None:
    async def main(seed: int) -> list[float]:
        net = _net(seed=seed)
        loop = asyncio.get_running_loop()
        times = []
        for dst in ("n2", "n3"):
            start = loop.time()
            await _ask(net, "n1", dst)
            times.append(loop.time() - start)
        return times

    assert run(main(3), 0)[0] == run(main(3), 0)[0]
    assert run(main(3), 0)[0] != run(main(4), 0)[0]


def test_one_way_cut_times_out_one_direction_only() -> None:
    async def main() -> tuple[str, str, str]:
        net = _net()
        net.cut("n1", "n2")
        return await _ask(net, "n1", "n2"), await _ask(net, "n2", "n1"), await _ask(net, "n1", "n3")

    # n2 -> n1 gets there, but n1's reply back to n2 is what n1 sends n2: cut.
    # Requests n2 -> n1 therefore also time out; n1 -> n3 is untouched.
    assert run(main(), 1)[0] == ("timeout", "timeout", "n3<-n1")


def test_one_way_cut_lets_requests_through_in_the_open_direction() -> None:
    async def main() -> list[str]:
        net = _net()
        seen: list[str] = []

        def record(src: str, m: dict[str, Any], reply: Callable[[dict[str, Any]], None]) -> None:
            seen.append(src)

        net.attach("n2", record)
        net.cut("n2", "n1")
        await _ask(net, "n1", "n2", timeout=0.5)  # arrives; its answer would be cut
        return seen

    assert run(main(), 1)[0] == ["n1"]


def test_two_way_partition_and_heal() -> None:
    async def main() -> list[str]:
        net = _net(nodes=4)
        net.partition([["n1", "n2"], ["n3", "n4"]])
        during = [await _ask(net, "n1", "n3"), await _ask(net, "n4", "n2"), await _ask(net, "n1", "n2"),
                  await _ask(net, "n3", "n4")]
        assert net.cuts == [(a, b) for a in ("n1", "n2", "n3", "n4") for b in ("n1", "n2", "n3", "n4")
                            if {a, b} not in ({"n1", "n2"}, {"n3", "n4"}) and a != b]
        net.heal()
        return [*during, await _ask(net, "n1", "n3")]

    assert run(main(), 2)[0] == ["timeout", "timeout", "n2<-n1", "n4<-n3", "n3<-n1"]


def test_loss_drops_about_the_given_share() -> None:
    async def main() -> tuple[int, dict[str, int]]:
        net = _net(loss=0.3)
        answers = [await _ask(net, "n1", "n2", timeout=0.1) for _ in range(300)]
        return answers.count("timeout"), net.counters

    timeouts, counters = run(main(), 5)[0]
    # a request survives both ways with probability 0.49
    assert 100 < timeouts < 200
    assert counters["lost"] > 0


def test_a_down_node_refuses_and_requests_in_flight_are_lost() -> None:
    async def main() -> tuple[str, str, str]:
        net = _net(latency_min=0.01, latency_max=0.01, jitter=0)
        net.attach("n2", lambda src, m, reply: None)  # never answers
        pending = asyncio.ensure_future(_ask(net, "n1", "n2"))
        await asyncio.sleep(0.05)
        net.detach("n2")
        lost = await pending
        refused = await _ask(net, "n1", "n2")
        assert not await SimTransport(net, "n1").reachable("n2")
        return lost, refused, await _ask(net, "n1", "n9")

    assert run(main(), 1)[0] == ("lost", "unreachable", "unreachable")


def test_bad_settings_and_unknown_nodes_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="loss must be in"):
        NetworkSettings(loss=1.5)
    with pytest.raises(ValueError, match="latency must satisfy"):
        NetworkSettings(latency_min=0.2, latency_max=0.1)
    net = _net()
    with pytest.raises(ValueError, match="unknown node 'n7'"):
        net.cut("n1", "n7")
    with pytest.raises(ValueError, match="already on the network"):
        net.add("n1")


def test_a_request_that_does_not_validate_is_answered_bad_request() -> None:
    # As a real node answers a frame that fails protocol validation.
    async def main() -> dict[str, Any]:
        return await SimTransport(_net(), "n1").request("n2", {"type": "ring_set", "epoch": "x"}, 1.0)

    reply = run(main(), 1)[0]
    assert reply["type"] == "error"
    assert reply["code"] == "bad_request"
    assert "ring_set" in reply["message"]


def test_a_packet_fault_delays_and_loses_messages_of_its_nodes_only() -> None:
    async def main() -> tuple[list[float], float, str, int]:
        loop = asyncio.get_running_loop()
        net = _net(latency_min=0.01, latency_max=0.01, jitter=0)
        net.shape(["n2"], delay=0.5)
        slow = []
        for _ in range(5):
            t = loop.time()
            assert await _ask(net, "n1", "n2", timeout=5) == "n2<-n1"
            slow.append(loop.time() - t)
        t = loop.time()
        await _ask(net, "n1", "n3")
        fast = loop.time() - t
        net.shape(["n3"], loss=1.0)
        lost = await _ask(net, "n1", "n3", timeout=0.5)
        net.unshape()
        return slow, fast, lost, (await _ask(net, "n1", "n3")).count("<-")

    slow, fast, lost, healed = run(main(), 3)[0]
    # there and back, each way 0.5 s plus up to half again of jitter
    assert all(1.0 <= s <= 1.6 for s in slow), slow
    assert fast == pytest.approx(0.02)
    assert lost == "timeout"
    assert healed == 1


def test_duplication_delivers_a_node_request_twice_and_a_client_request_once() -> None:
    async def main() -> tuple[list[str], str]:
        net = SimNetwork(random.Random(1), NetworkSettings(duplicate=1.0))
        seen: list[str] = []
        for name, client in (("n1", False), ("n2", False), ("c1", True)):
            net.add(name, client=client)

            def answer(src: str, m: dict[str, Any], reply: Callable[[dict[str, Any]], None]) -> None:
                seen.append(src)
                reply({"type": "ring_get_ok", "id": m["id"], "epoch": 0, "ring": {"asker": src}, "node": "n2"})

            net.attach(name, answer)
        first = await _ask(net, "n1", "n2")
        await asyncio.sleep(1)  # the duplicate arrives after the original's answer
        await _ask(net, "c1", "n2")
        await asyncio.sleep(1)
        return seen, first

    seen, first = run(main(), 1)[0]
    assert first == "n2<-n1"
    assert seen == ["n1", "n1", "c1"]


def test_a_cut_that_holds_delivers_at_the_heal_and_one_that_drops_never_does() -> None:
    async def main(cuts: str) -> list[str]:
        net = SimNetwork(random.Random(1), NetworkSettings(cuts=cuts, latency_min=0.01, latency_max=0.01, jitter=0))
        seen: list[str] = []
        for name in ("n1", "n2"):
            net.add(name)
            net.attach(name, lambda src, m, reply: seen.append(src))
        net.partition([["n1"], ["n2"]])
        assert await _ask(net, "n1", "n2", timeout=0.5) == "timeout"  # the sender gives up either way
        net.heal()
        await asyncio.sleep(1)
        return seen

    assert run(main("hold"), 1)[0] == ["n1"]
    assert run(main("drop"), 1)[0] == []
