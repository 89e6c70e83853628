"""The script loader (`swarm.lua.source`): an included library comes without the functions the script
never calls, and comes whole when it is not in the shape the loader knows."""

from __future__ import annotations

import re
from importlib.resources import files

from swarm.lua import shake, source

LIB = """\
-- a library
local PREFIX = ARGV[1]
local function key(name)
  return PREFIX .. name
end

local function used(x)
  return key(x)
end

local function helper(x)
  return x
end

-- unused(x) is named here, in a comment: that does not keep it
local function unused(x)
  return helper(x)
end
"""


def test_a_library_keeps_only_what_the_script_calls_and_what_that_calls() -> None:
    shaken = shake(LIB, "return used('a')")
    assert re.findall(r"^local function (\w+)", shaken, re.M) == ["key", "used"]
    assert "local PREFIX = ARGV[1]" in shaken
    assert "-- unused(x) is named here" in shaken  # lines outside functions stay, in order
    kept = shake(LIB, "return unused('a')")
    assert re.findall(r"^local function (\w+)", kept, re.M) == ["helper", "unused"]


def test_a_library_in_another_shape_comes_whole() -> None:
    for odd in (LIB.replace("  return x\n", "return x\n"),  # a body not indented
                LIB + "local function one_line(x) return x end\n"):
        assert shake(odd, "return used('a')") == odd


def test_every_board_script_defines_every_library_function_it_names() -> None:
    library = files("swarm.lua").joinpath("board_lib.lua").read_text(encoding="utf-8")
    functions = set(re.findall(r"^local function (\w+)\(", library, re.M))
    for entry in files("swarm.lua").iterdir():
        if not entry.name.endswith(".lua") or "--!include board_lib" not in entry.read_text(encoding="utf-8"):
            continue
        text = source(entry.name.removesuffix(".lua"))
        defined = set(re.findall(r"^local function (\w+)\(", text, re.M))
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
        named = functions & set(re.findall(r"[A-Za-z_]\w*", code))
        assert named <= defined, f"{entry.name}: {sorted(named - defined)} named but not defined"
