"""Every key name in one place per language: `swarm/keys.py` (Python), the list of key names in
`swarm/lua/board_lib.lua` (Lua) and the key tables of `protocols/PROTOCOL.md` (everyone else) name the
same keys with the same patterns, and the Lua scripts ask board_lib's `key` only for listed keys."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from swarm.keys import Keys

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "swarm" / "lua"
BOARD_LIB = (LUA / "board_lib.lua").read_text(encoding="utf-8").splitlines()
DOC = (ROOT / "protocols" / "PROTOCOL.md").read_text(encoding="utf-8")

NOT_KEYS = {"prefix", "stream_for", "stream", "short", "connection"}
"""Members of `Keys` that name no key: the prefix itself, the helpers that map one name to another, and
the name agents give their connections."""

# An entry of board_lib's list: swarm/keys.py's name, then the key after the prefix, a family of keys
# ending in the placeholder of its part as PROTOCOL.md writes it (`--   task   task:<id>`).
LUA_ENTRY = re.compile(r"^--   (\w+) +([a-z:]+(?:<\w+>)?)$")
# A call of board_lib's `key`: the name (a listed key, or the start of a family's) and whether a part follows.
LUA_KEY_CALL = re.compile(r"(?<![\w.])key\('([^']*)'(,?)")
ANY_KEY_CALL = re.compile(r"(?<![\w.])key\(")
DOC_ROW = re.compile(r"^\| `([^`]+)` \|")
PART = "\x00"  # what the Python side is called with, to see where the part goes


def lua_span() -> range:
    """The line numbers (0-based) of board_lib's list of key names through the end of its function `key`."""
    start = next(i for i, line in enumerate(BOARD_LIB) if line.startswith("-- Every key name of a swarm"))
    key = BOARD_LIB.index("local function key(name, part)", start)
    return range(start, BOARD_LIB.index("end", key) + 1)


def lua_keys() -> dict[str, str]:
    """board_lib's list as swarm/keys.py name -> key after the prefix (`task:<id>`)."""
    table: dict[str, str] = {}
    for line in BOARD_LIB[lua_span()[0] : lua_span()[-1]]:
        if entry := LUA_ENTRY.match(line):
            assert entry[1] not in table, f"board_lib.lua lists {entry[1]} twice"
            table[entry[1]] = entry[2]
    assert table, "board_lib.lua lists no key names (lines `--   <name>   <key>`)"
    return table


def python_keys() -> dict[str, str]:
    """The names of `Keys` as member name -> pattern after the prefix, with `<>` where the part goes."""
    keys = Keys("k")
    table: dict[str, str] = {}
    for name, member in vars(Keys).items():
        if name.startswith("_") or name in NOT_KEYS:
            continue
        if isinstance(member, property):
            full = getattr(keys, name)
        elif inspect.isfunction(member):
            assert len(inspect.signature(member).parameters) == 2, f"Keys.{name} should take one part"
            full = getattr(keys, name)(PART)
        else:
            continue  # the dataclass field `swarm`
        assert isinstance(full, str), f"Keys.{name} is not a key name; if it is a helper, add it to NOT_KEYS"
        assert full.startswith(keys.prefix), f"Keys.{name} = {full!r} lacks the prefix {keys.prefix!r}"
        table[name] = full.removeprefix(keys.prefix).replace(PART, "<>")
    return table


def documented_keys() -> list[str]:
    """The first column of every table of PROTOCOL.md headed `key (after the prefix)`."""
    found: list[str] = []
    rows = False
    for line in DOC.splitlines():
        if line.startswith("| key (after the prefix) |"):
            rows = True
        elif not line.startswith("|"):
            rows = False
        elif rows and (row := DOC_ROW.match(line)):
            found.append(row[1])
    return found


def test_python_and_lua_have_the_same_names() -> None:
    python, lua = python_keys(), lua_keys()
    assert sorted(python.keys() - lua.keys()) == [], "in swarm/keys.py but not in board_lib.lua's list"
    assert sorted(lua.keys() - python.keys()) == [], "in board_lib.lua's list but not in swarm/keys.py"
    for name, pattern in lua.items():
        assert re.sub(r"<\w+>", "<>", pattern) == python[name], f"board_lib.lua's {name} and Keys.{name} differ"


def test_protocol_lists_the_same_keys() -> None:
    # (A key may stand in two tables: `events` is both a stream of section 1 and a board key of 7.1.)
    documented, lua = set(documented_keys()), set(lua_keys().values())
    assert sorted(lua - documented) == [], "PROTOCOL.md does not list these keys"
    assert sorted(documented - lua) == [], "PROTOCOL.md lists keys that swarm does not have"


def test_lua_asks_key_only_for_listed_keys() -> None:
    # Every `key('ready')` asks for a listed key, every `key('task:', id)` for a listed family with its
    # part; no other Lua string spells a key name (`ready`, `task:`, `agents:seen`), and only `key`
    # joins the prefix to one: a script takes its keys from `key` (board scripts) or KEYS (the others).
    patterns = set(lua_keys().values())
    fixed = {p for p in patterns if "<" not in p}
    families = {p[: p.index("<")] for p in patterns if "<" in p}
    literal = re.compile(r"'([^'\\]*)'|\"([^\"\\]*)\"")
    inside = set(lua_span())
    for path in sorted(LUA.glob("*.lua")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if path.name == "board_lib.lua" and number in inside:
                continue
            where = f"{path.name}:{number + 1}: {line.strip()}"
            code = line.split("--", 1)[0]
            calls = LUA_KEY_CALL.findall(code)
            assert len(calls) == len(ANY_KEY_CALL.findall(code)), f"{where} asks key() for a name that is not a literal"
            for name, part in calls:
                assert name in (families if part else fixed), (
                    f"{where} asks for key {name!r}{' with a part' if part else ''}, not in board_lib.lua's list")
            spelled = {a or b for a, b in literal.findall(LUA_KEY_CALL.sub("key(", code))} & (fixed | families)
            assert not spelled, f"{where} spells the key name {sorted(spelled)}; use board_lib.lua's key()"
            if "PREFIX" in code:
                assert code.strip() == "local PREFIX = ARGV[1]", f"{where} builds a name; use board_lib.lua's key()"
