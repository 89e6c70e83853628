"""Every Redis name swarm uses, in one place.

All keys of one swarm share the hash tag `{<swarm name>}` so that, on a Redis Cluster, they live
on one slot and every Lua script that touches several of them stays atomic. `protocols/PROTOCOL.md`
lists the same names for agents written in other languages.
"""

from __future__ import annotations

from dataclasses import dataclass

FIELD = "m"
"""The one stream-entry field that holds a message's JSON."""
FIELD_BYTES = FIELD.encode()
"""`FIELD` as redis-py returns it in entries read without decoding."""

CAPTAIN = "@captain"
ALL = "@all"
ROLE_PREFIX = "@role:"


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names for the swarm called `swarm` (the `SWARM_NAME` setting)."""

    swarm: str

    @property
    def prefix(self) -> str:
        """`swarm:{<name>}:`, the start of every key; the braces are the cluster hash tag."""
        return f"swarm:{{{self.swarm}}}:"

    # --- streams -----------------------------------------------------------------------------
    @property
    def bus(self) -> str:
        """The broadcast stream: messages to `@all`."""
        return self.prefix + "bus"

    @property
    def captain(self) -> str:
        """The captain's inbox: messages to `@captain`."""
        return self.prefix + "captain"

    def inbox(self, agent: str) -> str:
        """One agent's direct inbox."""
        return f"{self.prefix}inbox:{agent}"

    def role(self, role: str) -> str:
        """The stream for `@role:<role>`; every agent with that role reads it in its own group."""
        return f"{self.prefix}role:{role}"

    @property
    def events(self) -> str:
        """The board-event stream: the audit log of every task transition."""
        return self.prefix + "events"

    @property
    def dlq(self) -> str:
        """The dead-letter stream."""
        return self.prefix + "dlq"

    def stream_for(self, recipient: str) -> str:
        """The stream a message to `recipient` is written to."""
        if recipient == ALL:
            return self.bus
        if recipient == CAPTAIN:
            return self.captain
        if recipient.startswith(ROLE_PREFIX):
            return self.role(recipient.removeprefix(ROLE_PREFIX))
        return self.inbox(recipient)

    def stream(self, short: str) -> str:
        """Full stream name from a short one as the CLI takes it: `bus`, `inbox:a1`, `role:x`, ..."""
        return short if short.startswith("swarm:{") else self.prefix + short

    def short(self, stream: str) -> str:
        """Inverse of `stream`: the name without the swarm prefix."""
        return stream.removeprefix(self.prefix)

    @property
    def publish_rate(self) -> str:
        """Hash: sender -> when its publish token bucket is full again (ms; see swarm/lua/publish.lua);
        it expires once every bucket is full."""
        return self.prefix + "publish:rate"

    # --- board (the Lua scripts build the same names from `prefix`; see swarm/lua/board_lib.lua) ---
    def task(self, task_id: str) -> str:
        """Hash: one task's fields."""
        return f"{self.prefix}task:{task_id}"

    def history(self, task_id: str) -> str:
        """List: every event of one task, oldest first (copies of its board-event stream entries)."""
        return f"{self.prefix}history:{task_id}"

    def state(self, state: str) -> str:
        """Sorted set: ids of tasks in `state`, scored by creation time."""
        return f"{self.prefix}state:{state}"

    @property
    def tasks(self) -> str:
        """Sorted set: every task id, scored by creation time."""
        return self.prefix + "tasks"

    @property
    def ready(self) -> str:
        """Sorted set: open tasks whose dependencies are done, in claim order (priority, then age)."""
        return self.prefix + "ready"

    @property
    def delayed(self) -> str:
        """Sorted set: open tasks backing off after a failure, scored by when they become ready."""
        return self.prefix + "delayed"

    @property
    def leases(self) -> str:
        """Sorted set: owned tasks scored by lease expiry (ms)."""
        return self.prefix + "leases"

    def owned(self, agent: str) -> str:
        """Set: ids of the tasks an agent owns (assigned or running)."""
        return f"{self.prefix}owned:{agent}"

    def affinity(self, agent: str) -> str:
        """Set: files an agent finished tasks on (the captain prefers it for tasks on them)."""
        return f"{self.prefix}affinity:{agent}"

    @property
    def seq(self) -> str:
        """Counter: the number in the next task id (`t-<n>`)."""
        return self.prefix + "seq"

    def dependents(self, task_id: str) -> str:
        """Set: ids of the tasks blocked by `task_id` (told when it is done)."""
        return f"{self.prefix}dependents:{task_id}"

    @property
    def dedup(self) -> str:
        """Hash: dedup key -> task id, what makes create idempotent."""
        return self.prefix + "dedup"

    @property
    def idle_until(self) -> str:
        """Sorted set: agents waiting for a hand-off, scored by when their wait ends (ms)."""
        return self.prefix + "idle:until"

    @property
    def idle_ask(self) -> str:
        """Hash: waiting agent -> what it may be handed, `<slots>,<lease ms>,<speak 0|1>,<capabilities>`."""
        return self.prefix + "idle:ask"

    def handoff(self, agent: str) -> str:
        """List: tasks the board claimed for `agent` while it waited (JSON, as a claim returns them);
        the agent pops them (BLMPOP), or its next claim or settle returns them."""
        return f"{self.prefix}handoff:{agent}"

    # --- agents and captain ----------------------------------------------------------------------
    @property
    def agents(self) -> str:
        """Hash: agent name -> its card (JSON)."""
        return self.prefix + "agents"

    @property
    def agent_seen(self) -> str:
        """Sorted set: agent name scored by its last heartbeat (ms)."""
        return self.prefix + "agents:seen"

    def identity(self, agent: str) -> str:
        """Never written: under ACL users (`swarm acl`), who may write it may act as `agent` (the
        board scripts ask the server with `redis.acl_check_cmd`); `@captain` for the captain."""
        return f"{self.prefix}identity:{agent}"

    @property
    def budget(self) -> str:
        """Hash: budgets in USD: `swarm` (SWARM_BUDGET_USD), `agent:<name>` (a card's budget_usd)."""
        return self.prefix + "budget"

    @property
    def spend(self) -> str:
        """Hash: USD and tokens reported spent: `swarm`, `agent:<name>`, `tokens:swarm`, `tokens:agent:<name>`."""
        return self.prefix + "spend"

    @property
    def paused(self) -> str:
        """Set: task kinds no claim or assignment hands out (`swarm pause KIND`)."""
        return self.prefix + "paused"

    @property
    def presence_lock(self) -> str:
        """String with a short TTL: held by whichever process sweeps for dead agents this second."""
        return self.prefix + "presence:lock"

    def connection(self, instance: str) -> str:
        """Not a key: the name (CLIENT SETNAME) of every connection of one agent instance."""
        return self.prefix + instance

    @property
    def leader(self) -> str:
        """String `<epoch>:<instance>` with a TTL: the captain that holds the leader lease."""
        return self.prefix + "captain:leader"

    @property
    def epoch(self) -> str:
        """Counter: the leader epoch, incremented by every captain that takes the lease."""
        return self.prefix + "captain:epoch"

    # --- repetition detection (swarm.discovery.repetition; see swarm/lua/repetition_observe.lua) ---
    @property
    def repetition_seen(self) -> str:
        """Zset: id -> ts of every message the repetition detector counted (redeliveries change nothing)."""
        return self.prefix + "rep:seen"

    @property
    def repetition_fires(self) -> str:
        """Hash: message id -> "<ts> <signal id>..." for the messages that fired a signal."""
        return self.prefix + "rep:fires"

    @property
    def repetition_signals(self) -> str:
        """Hash: per signal id, its fixed fields (JSON) and `<id>|c` count, `|l` last seen, `|o` open, `|e` evidence."""
        return self.prefix + "rep:signals"

    @property
    def repetition_index(self) -> str:
        """Zset: signal id -> last seen ts; newest first is what `swarm signals` lists."""
        return self.prefix + "rep:index"

    @property
    def repetition_swarm(self) -> str:
        """Hash: the swarm-wide repetition counts (`t` clock, `c:<family>` counts, `o:<family>` open signal)."""
        return self.prefix + "rep:swarm"

    @property
    def repetition_swarm_window(self) -> str:
        """Zset: `<family>|<message id>` -> ts, the swarm-wide sliding window."""
        return self.prefix + "rep:swarm:win"

    def repetition_agent(self, agent: str) -> str:
        """Hash: one agent's repetition counts, same fields as `repetition_swarm`."""
        return f"{self.prefix}rep:agent:{agent}"

    def repetition_window(self, agent: str) -> str:
        """Zset: `<family>|<message id>` -> ts, one agent's sliding window."""
        return f"{self.prefix}rep:win:{agent}"

    def repetition_families(self, agent: str) -> str:
        """Hash: one agent's near-duplicate families (`f:<simhash>` signature, `x:<feature>` index)."""
        return f"{self.prefix}rep:fam:{agent}"

    # --- discovery engine (swarm.discovery.engine) ----------------------------------------------------
    def discovered(self, source: str) -> str:
        """Hash: task key -> task id of what `source` found on its last scan (to close obsolete tasks)."""
        return f"{self.prefix}discovery:tasks:{source}"

    @property
    def escalated(self) -> str:
        """Set: ids of the signals already escalated to the captain (one escalation per signal)."""
        return self.prefix + "discovery:escalated"
