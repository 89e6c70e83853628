from swarm.bus import Bus
from swarm.protocol import ChatBody, message


async def test_publish_and_consume_round_trip(bus: Bus) -> None:
    consumer = bus.consumer("g", "c1", [bus.keys.bus], start="0")
    await consumer.setup()
    sent = message(ChatBody(text="hello"), sender="a1")
    await bus.publish(sent)
    got = await consumer.read()
    assert [d.message for d in got] == [sent]
