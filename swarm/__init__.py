"""swarm: a coordination bus for fleets of agents over Redis Streams.

The layers, inner to outer: `protocol` (models, encode/decode) <- `keys` + `lua` (names, scripts)
<- `bus` (streams, consumer groups, dead letters) <- board, captain, discovery, agents <- `cli`.
"""

from swarm.board import Board, Task, TaskSpec
from swarm.bus import Bus, Consumer, DeadLetter, Delivery
from swarm.connection import open_redis
from swarm.errors import SwarmError
from swarm.keys import Keys
from swarm.protocol import (
    AssignedTask,
    AssignmentBody,
    ChatBody,
    CommandBody,
    HeartbeatBody,
    Message,
    SignalBody,
    StatusBody,
    TaskEventBody,
    decode,
    encode,
    message,
)
from swarm.settings import Settings

__all__ = [
    "AssignedTask",
    "AssignmentBody",
    "Board",
    "Bus",
    "ChatBody",
    "CommandBody",
    "Consumer",
    "DeadLetter",
    "Delivery",
    "HeartbeatBody",
    "Keys",
    "Message",
    "Settings",
    "SignalBody",
    "StatusBody",
    "SwarmError",
    "Task",
    "TaskEventBody",
    "TaskSpec",
    "decode",
    "encode",
    "message",
    "open_redis",
]
