"""The wire protocol without a server: conformance vectors, schema drift, encode/decode properties."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from swarm.errors import DecodeError, MessageTooLarge
from swarm.protocol import (
    KINDS,
    AssignmentBody,
    Body,
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

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "protocols" / "vectors"
VALID = sorted((VECTORS / "valid").glob("*.json"))
INVALID = sorted((VECTORS / "invalid").glob("*.json"))
# Vectors with `fields` break the entry layout, which only a consumer sees: tests/test_bus.py runs
# every invalid vector through a real stream; here only the ones the decoder itself must refuse.
DECODER_INVALID = [p for p in INVALID if "fields" not in json.loads(p.read_text(encoding="utf-8"))]


def invalid_vector(path: Path) -> dict[str, Any]:
    """One invalid vector; exactly one of raw / raw_base64 / fields, and always a reason."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    assert len({"raw", "raw_base64", "fields"} & data.keys()) == 1, path.name
    assert isinstance(data["reason"], str)
    assert data["reason"], path.name
    return data


def raw_of(vector: dict[str, Any]) -> bytes:
    """The bytes a sender put in field `m` for a raw / raw_base64 vector."""
    if "raw_base64" in vector:
        return base64.b64decode(vector["raw_base64"])
    return str(vector["raw"]).encode("utf-8")


# --- conformance vectors ------------------------------------------------------------------------


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_vector_decodes_and_survives_a_round_trip(path: Path) -> None:
    raw = path.read_bytes()
    msg = decode(raw)
    assert msg.kind == path.stem.split("-")[0]
    again = decode(encode(msg))
    assert again == msg
    assert encode(again) == encode(msg)
    # What the sender wrote is what the reader gets: no field is dropped or rewritten on the way.
    sent = json.loads(raw)
    got = json.loads(encode(msg))
    assert {k: v for k, v in got.items() if k in sent} == sent


@pytest.mark.parametrize("path", DECODER_INVALID, ids=lambda p: p.stem)
def test_invalid_vector_is_refused_with_its_reason(path: Path) -> None:
    vector = invalid_vector(path)
    with pytest.raises(DecodeError) as caught:
        decode(raw_of(vector), vector.get("max_bytes", 64 * 1024))
    assert caught.value.reason == vector["reason"]


def test_vectors_cover_every_kind_and_every_kind_of_mistake() -> None:
    assert {decode(p.read_bytes()).kind for p in VALID} == set(KINDS)
    names = {p.stem for p in INVALID}
    must = {
        "not-json", "json-array", "missing-kind", "unknown-kind", "wrong-type-text-number",
        "wrong-type-integer-as-string", "extra-envelope-field", "extra-body-field", "bad-sender-name",
        "wrong-version", "oversize", "invalid-utf8", "entry-extra-field", "entry-without-m",
    }
    assert must <= names


def test_every_invalid_vector_is_well_formed() -> None:
    for path in INVALID:
        vector = invalid_vector(path)
        assert set(vector) <= {"raw", "raw_base64", "fields", "reason", "max_bytes"}, path.name
        if "fields" in vector:
            assert vector["reason"] == "stream entry must have exactly one field 'm' holding the JSON"


def test_the_examples_in_protocol_md_are_valid() -> None:
    text = (ROOT / "protocols" / "PROTOCOL.md").read_text(encoding="utf-8")
    examples = re.findall(r" \* m '(\{.*\})'", text) + re.findall(r"```json\n(.*?)```", text, flags=re.DOTALL)
    assert len(examples) == 2
    for example in examples:
        decode(example)
    assert decode(examples[1]) == decode((VECTORS / "valid" / "assignment.json").read_bytes())


# --- schemas --------------------------------------------------------------------------------------


def test_schemas_match_the_models() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-schemas"), "--check"],
        capture_output=True, text=True, check=False, timeout=30,
    )
    assert done.returncode == 0, done.stderr


def test_schemas_require_kind_and_forbid_extra_fields() -> None:
    union = json.loads((ROOT / "protocols" / "schemas" / "message.schema.json").read_text())
    assert union["discriminator"]["propertyName"] == "kind"
    assert set(union["discriminator"]["mapping"]) == set(KINDS)
    for kind in KINDS:
        one = json.loads((ROOT / "protocols" / "schemas" / f"{kind}.schema.json").read_text())
        assert one["required"][0] == "kind"
        assert one["properties"]["kind"]["const"] == kind
        assert one["additionalProperties"] is False


# --- encode / decode ----------------------------------------------------------------------------


def test_message_wraps_each_body_in_its_kind() -> None:
    bodies: list[Body] = [
        StatusBody(text="idle"), HeartbeatBody(instance="i"), ChatBody(text="hi"),
        AssignmentBody(task_id="t", token=1, task_kind="audit"),
        TaskEventBody(task_id="t", event="created", state="open"),
        SignalBody(agent="a", fingerprint="f", count=2, first_seen=1, last_seen=2),
        CommandBody(name="ping"),
    ]
    msgs = [message(b, sender="a1", to="a2") for b in bodies]
    assert [m.kind for m in msgs] == list(KINDS)
    assert all(m.to == "a2" and m.sender == "a1" and m.v == 1 for m in msgs)


def test_encode_leaves_out_unset_optional_fields() -> None:
    msg = message(ChatBody(text="hi"), sender="a1", id="01JD7QK6Z8R3N5W2Y4T6V8X0AB", ts=5)
    assert json.loads(encode(msg)) == {
        "v": 1, "id": "01JD7QK6Z8R3N5W2Y4T6V8X0AB", "sender": "a1", "to": "@all", "ts": 5,
        "priority": "normal", "tags": [], "kind": "chat", "body": {"text": "hi"},
    }


def test_encode_refuses_an_oversize_message() -> None:
    msg = message(ChatBody(text="x" * 400), sender="a1")
    size = len(encode(msg))
    with pytest.raises(MessageTooLarge) as caught:
        encode(msg, max_bytes=256)
    assert str(caught.value) == (
        f"message is {size} bytes, over the 256-byte limit; send large payloads by reference"
    )


def test_decode_counts_the_limit_in_bytes_not_characters() -> None:
    raw = json.dumps({"kind": "chat", "sender": "a", "body": {"text": "é" * 200}}, ensure_ascii=False)
    assert len(raw) < 256 < len(raw.encode())
    with pytest.raises(MessageTooLarge):
        decode(raw, max_bytes=256)
    assert decode(raw.encode(), max_bytes=512).kind == "chat"


def test_decode_fills_in_defaults_a_minimal_sender_leaves_out() -> None:
    msg = decode(b'{"kind":"status","sender":"sh","body":{"text":"standing by"}}')
    assert (msg.v, msg.to, msg.priority, msg.tags, msg.ttl) == (1, "@all", "normal", (), None)
    assert msg.id
    assert msg.ts > 0


def test_expired_follows_ttl() -> None:
    msg = message(ChatBody(text="hi"), sender="a1", ts=1_000, ttl=2.5)
    assert not msg.expired(at_ms=3_500)
    assert msg.expired(at_ms=3_501)
    assert not message(ChatBody(text="hi"), sender="a1", ts=0).expired()


# --- properties ---------------------------------------------------------------------------------

# Plain alphabets, not from_regex: regex strategies draw inconsistently inside composites.
NAME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
names = st.text(NAME_CHARS, min_size=1, max_size=64)
texts = st.text(max_size=200)
ids = st.text(min_size=1, max_size=128)
finite = st.floats(allow_nan=False, allow_infinity=False)
bodies: st.SearchStrategy[Body] = st.one_of(
    st.builds(StatusBody, text=texts, state=st.sampled_from([None, "idle", "working", "blocked", "done", "error"]),
              task_id=st.none() | ids),
    st.builds(HeartbeatBody, instance=ids, load=st.integers(0, 2**40), capacity=st.integers(1, 2**40)),
    st.builds(ChatBody, text=texts),
    st.builds(AssignmentBody, task_id=ids, token=st.integers(1, 2**62), task_kind=st.text(min_size=1, max_size=64),
              title=texts),
    st.builds(TaskEventBody, task_id=ids, event=st.text(min_size=1, max_size=32),
              state=st.text(min_size=1, max_size=32), owner=st.none() | names, token=st.integers(0, 2**62)),
    st.builds(SignalBody, agent=names, fingerprint=st.text(min_size=1, max_size=64), count=st.integers(1, 10**6),
              first_seen=st.integers(0, 2**50), last_seen=st.integers(0, 2**50), sample=texts,
              evidence=st.lists(ids, max_size=5).map(tuple)),
    st.builds(CommandBody, name=st.tuples(st.sampled_from("abcxyz"), st.text("abcxyz0189_-", max_size=31)).map("".join),
              args=st.dictionaries(st.text(max_size=64),
                                   st.none() | st.booleans() | st.integers() | finite | st.text(max_size=50),
                                   max_size=5)),
)
recipients = st.one_of(st.sampled_from(["@all", "@captain"]), names, names.map(lambda n: f"@role:{n}"))


@st.composite
def messages(draw: st.DrawFn) -> Message:
    """Any valid message: every kind, every envelope option."""
    return message(
        draw(bodies), sender=draw(names), to=draw(recipients),
        ts=draw(st.integers(0, 2**53)), priority=draw(st.sampled_from(["normal", "urgent"])),
        correlation_id=draw(st.none() | ids), reply_to=draw(st.none() | recipients),
        tags=tuple(draw(st.lists(st.text(NAME_CHARS + ":/=", min_size=1, max_size=64), max_size=4))),
        ttl=draw(st.none() | st.floats(min_value=0.001, max_value=1e9)),
    )


@hsettings(max_examples=200, deadline=None)
@given(messages())
def test_every_valid_message_survives_encode_and_decode(msg: Message) -> None:
    assert decode(encode(msg, max_bytes=1 << 20), max_bytes=1 << 20) == msg


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | finite | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


def mutated(msg: dict[str, Any], key: str, value: object) -> dict[str, Any]:
    """`msg` with `key` (a dotted path) set to `value`."""
    out: dict[str, Any] = json.loads(json.dumps(msg))
    *parents, last = key.split(".")
    target = out
    for p in parents:
        target = target[p]
    target[last] = value
    return out


@hsettings(max_examples=300, deadline=None)
@given(st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(str.encode),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.tuples(st.sampled_from(["kind", "v", "sender", "to", "ts", "body", "body.text", "tags", "ttl", "id"]),
              json_values).map(lambda kv: json.dumps(mutated(
                  {"v": 1, "kind": "chat", "sender": "a", "body": {"text": "hi"}}, *kv)).encode()),
))
def test_decode_of_any_input_is_a_message_or_a_one_line_reason(raw: bytes) -> None:
    try:
        msg = decode(raw)
    except DecodeError as exc:
        reason = exc.reason
    else:  # whatever decodes must encode again, to JSON that decodes to the same message
        assert decode(encode(msg)) == msg
        return
    assert reason
    assert "\n" not in reason
