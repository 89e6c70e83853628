"""Languages discovery understands, and the one lexical pass every source shares.

`lex` turns a file into normalized code lines (names become `I`, string and number literals the
`LITERAL` character, comments and import lines vanish, blank lines are dropped, keywords and
punctuation stay) and a list of comments. It is a handful of regular-expression
substitutions over the whole text rather than a token-by-token Python loop: the work happens in C,
which is what lets a scan cover well over 100,000 lines a second. Line numbers survive because a
multi-line string or comment is replaced by as many newlines as it spanned.
"""

from __future__ import annotations

import itertools
import keyword
import re
from dataclasses import dataclass
from functools import cached_property

LITERAL = "\x01"
"""Stands for a string or number in normalized code: not a word character, so it never reads as a name."""
DATA = "\x02"
"""Starts a line of data kept as written (Python): an element of a literal with no name in it (`(0, 0, 0),`,
`"dots": {"interval": 80},`)."""
BOUNDARY = "\x04"
"""A function signature (Python), whatever its parameters, kept as one line: where a function starts."""
WRITTEN = "\x03"
"""Starts any other line inside brackets kept as written (Python): an argument, an element naming a value."""

# Kept verbatim in normalized code of the non-Python families: a union of their keywords is close
# enough for clone detection, and treating a keyword as a name elsewhere only costs a little precision.
_KEYWORD_LIST = (
    "abstract async await bool boolean break byte case catch char class const continue default defer "
    "delete do double elif else elsif end enum export extends extern false fi final finally float fn for "
    "foreach func function go goto if impl implements import in instanceof int interface let local long "
    "loop match mod module mut namespace new nil not null or package private protected pub public "
    "readonly ref return self short signed sizeof static struct super switch synchronized then this "
    "throw throws trait true try type typedef typeof union unless unsigned until use using val var "
    "virtual void volatile when where while yield"
)
_COMMON_KEYWORDS = tuple(_KEYWORD_LIST.split())

_SINGLE_QUOTED = r"'(?:[^'\\\n]|\\.)*'"
_DOUBLE_QUOTED = r'"(?:[^"\\\n]|\\.)*"'
_TRIPLE_QUOTED = r'"""(?:[^"\\]|\\.|"(?!""))*"""' + r"|'''(?:[^'\\]|\\.|'(?!''))*'''"
_BACKTICK = r"`(?:[^`\\]|\\.)*`"


def _extensions(spaced: str) -> frozenset[str]:
    return frozenset(spaced.split())


@dataclass(frozen=True)
class Language:
    """How to find comments, strings and import lines in one family of languages."""

    name: str
    extensions: frozenset[str]
    line_comment: str
    block_comment: tuple[str, str] | None
    strings: str
    keywords: tuple[str, ...]
    imports: str
    """A regex for import-like statements (what follows the indentation): alike everywhere, never a clone."""

    @cached_property
    def lexer(self) -> re.Pattern[str]:
        """Comments and strings in one alternation, so a `#` inside a string is never a comment."""
        parts = [f"(?P<c>{re.escape(self.line_comment)}[^\n]*)"]
        if self.block_comment:
            start, end = (re.escape(s) for s in self.block_comment)
            parts.append(f"(?P<b>{start}.*?{end})")
        parts.append(f"(?P<s>{self.strings})")
        return re.compile("|".join(parts), re.DOTALL)

    @cached_property
    def identifier(self) -> re.Pattern[str]:
        """A name that is not a keyword of the language."""
        return re.compile(rf"\b(?!{_trie(self.keywords)}\b)[^\W\d]\w*")

    @cached_property
    def import_line(self) -> re.Pattern[str]:
        """The compiled `imports` pattern, anchored on the newline before the statement.

        A literal first character lets the regex engine jump from newline to newline instead of
        trying `^` at every position; `lex` puts a newline before the text so line 1 matches too.
        """
        return re.compile(r"\n[ \t]*(?:" + self.imports + ")")


PYTHON = Language(
    name="python",
    extensions=frozenset({".py", ".pyw"}),
    line_comment="#",
    block_comment=None,
    strings=f"{_TRIPLE_QUOTED}|{_SINGLE_QUOTED}|{_DOUBLE_QUOTED}",
    keywords=tuple(keyword.kwlist),
    # `from x import (a,\n b)` spans lines; the parenthesized form is matched whole.
    imports=r"(?:from[ \t]+[\w.]+[ \t]+)?import[ \t]+(?:\([^)]*\)|[^\n]*)",
)

C_LIKE = Language(
    name="c-like",
    extensions=_extensions(
        ".c .h .cc .cpp .cxx .hpp .hh .hxx .java .js .jsx .mjs .cjs .ts .tsx .mts .cts .go .rs .cs .kt .kts "
        ".swift .scala .php .dart .m .mm .groovy"
    ),
    line_comment="//",
    block_comment=("/*", "*/"),
    strings=f"{_DOUBLE_QUOTED}|{_SINGLE_QUOTED}|{_BACKTICK}",
    keywords=_COMMON_KEYWORDS,
    imports=r"(?:#[ \t]*include|import|using|package|use)\b[^\n]*",
)

HASH_COMMENTED = Language(
    name="hash-commented",
    extensions=_extensions(".sh .bash .zsh .rb .pl .pm .r .tcl .ex .exs .nim .jl .cr .ps1"),
    line_comment="#",
    block_comment=None,
    strings=f"{_DOUBLE_QUOTED}|{_SINGLE_QUOTED}",
    keywords=_COMMON_KEYWORDS,
    imports=r"(?:require|require_relative|use|source|import|library)\b[^\n]*",
)

DASH_COMMENTED = Language(
    name="dash-commented",
    extensions=_extensions(".lua .sql .hs .elm .adb .ads"),
    line_comment="--",
    block_comment=None,
    strings=f"{_DOUBLE_QUOTED}|{_SINGLE_QUOTED}",
    keywords=_COMMON_KEYWORDS,
    imports=r"(?:import|require)\b[^\n]*",
)

LANGUAGES = (PYTHON, C_LIKE, HASH_COMMENTED, DASH_COMMENTED)
_BY_EXTENSION = {ext: lang for lang in LANGUAGES for ext in lang.extensions}

_NUMBER = re.compile(r"\d[\w.]*")
_SPACES = re.compile(r"[ \t\f\r\v]+")
_TOKEN = re.compile(rf"\w+|{LITERAL}|[^\w\s]")


def language_of(filename: str) -> Language | None:
    """The language a file name's extension says, or None for files discovery does not read."""
    dot = filename.rfind(".")
    return _BY_EXTENSION.get(filename[dot:].lower()) if dot > 0 else None


@dataclass(frozen=True, slots=True)
class Comment:
    """A comment's text (marker included) and the 1-based line where it starts."""

    line: int
    text: str


@dataclass(frozen=True, slots=True)
class Lexed:
    """A file after the shared lexical pass."""

    code: list[tuple[int, str]]
    """(1-based line number, normalized code) for every line that holds code."""
    comments: list[Comment]


def lex(text: str, language: Language) -> Lexed:
    """Normalize `text` for clone detection and collect its comments, in one pass of each regex."""
    comments: list[Comment] = []
    # Where the previous comment started, and on which line: counting newlines from there keeps
    # the line numbering of all comments linear in the file size.
    last = [0, 1]

    def replace(match: re.Match[str]) -> str:
        found = match.group()
        if match.lastgroup == "s":
            return LITERAL + "\n" * found.count("\n") if "\n" in found else LITERAL
        start = match.start()
        last[1] += text.count("\n", last[0], start)
        last[0] = start
        comments.append(Comment(last[1], found))
        return "\n" * found.count("\n")

    code = language.lexer.sub(replace, text)
    code = language.import_line.sub(_keep_newlines, "\n" + code)[1:]
    # Names become I; a string prefix (r"", b'', f"") became I too and belongs to its literal.
    code = language.identifier.sub("I", code).replace("I" + LITERAL, LITERAL)
    # With every name gone, a digit can only start a number: no word-boundary test needed, which
    # lets the regex engine skip ahead to the next digit (four times faster than `\b\d`).
    code = _NUMBER.sub(LITERAL, code)
    code = _SPACES.sub(" ", code)
    lines = [(number, line) for number, raw in enumerate(code.split("\n"), 1) if (line := raw.strip())]
    if language is PYTHON:
        lines = _python_lines(lines, _NOT_BRACKET.sub("", code).split("\n"), text, comments)
    return Lexed(code=lines, comments=comments)


_KEYWORD = re.compile(r"\b[a-z]")
"""A keyword in normalized Python (names are `I`; None, True and False, capitalized, are values)."""
_STUB = (":", ": ...", ": pass")
_MAYBE = frozenset("da@p." + LITERAL)
"""First characters of the lines that may be a `def` (`def`, `async def`), a decorator, a stub's body
(`pass`, `...`) or a bare string."""
_STUB_BODY = frozenset({"pass", "..."})


_NOT_BRACKET = re.compile(r"[^()\[\]{}\n]+")


class _Change(dict[str, int]):
    """Brackets opened minus closed, by a line's brackets (`"(()"` -> 1); the same few strings recur."""

    def __missing__(self, brackets: str) -> int:
        value = self[brackets] = len(brackets) - 2 * sum(brackets.count(c) for c in ")]}")
        return value


_CHANGE = _Change()


def _python_lines(
    lines: list[tuple[int, str]], brackets: list[str], text: str, comments: list[Comment]
) -> list[tuple[int, str]]:
    """Python's normalized lines as pylint's duplicate-code reads code, so clones agree with it.

    - Function signatures are not compared (pylint's `ignore-signatures`): the `def` line through the
      line that closes its parameters, and one-line stubs (`def f(x: int) -> int: ...`), become one
      `BOUNDARY` line, the same for every function. A parameter list or an `@overload` stack is never
      a clone; bodies that match under different signatures are, and a clone runs from one function
      into the next only where both copies start a function.
    - `@overload` stubs go whole: decorator, signature and body (`...`, `pass`).
    - Bare string statements (docstrings) go (`ignore-docstrings`).
    - Data is compared as written, not normalized: a line inside brackets with no keyword in it (an
      element of a list, dict or tuple, an argument of a call) keeps its own text, after `DATA` when
      it holds literals only, else after `WRITTEN`. Two tables or two argument lists of the same shape
      are different data; only a copy matches.
    """
    # Depth after each physical line, summed in C; a stray closer can make it negative: read as 0.
    after = list(itertools.accumulate(_CHANGE[b] for b in brackets))
    # Only lines inside brackets, `def`s and bare strings need a look; the rest pass as they are.
    todo = [k for k, (number, line) in enumerate(lines)
            if line[0] in _MAYBE or (number > 1 and after[number - 2] > 0)]
    if not todo:
        return lines
    out = list(lines)
    drop: set[int] = set()
    written = _AsWritten(text, comments)
    signature = overload = stub_signature = False
    stub = -1  # where an overload's body (`...`, `pass`) would be
    for k in todo:
        number, line = lines[k]
        if signature:
            signature = after[number - 1] > 0
            drop.add(k)
            if not signature and stub_signature:
                stub = k + 1
        elif k == stub and line in _STUB_BODY:
            drop.add(k)
        elif number > 1 and after[number - 2] > 0:  # inside brackets
            if not _KEYWORD.search(line):
                out[k] = (number, (WRITTEN if "I" in line else DATA) + written.line(number))
        elif line[0] == "@" and "overload" in written.raw(number):
            overload = True  # `@overload` (`@typing.overload`): the whole stub goes
            drop.add(k)
        elif line.startswith(("def ", "async def ")):
            signature = after[number - 1] > 0
            stub_signature, overload = overload, False
            if stub_signature:
                drop.add(k)
                stub = k + 1 if not signature and line.endswith(":") else -1
            elif signature or line.endswith(_STUB):
                out[k] = (number, BOUNDARY)
        elif line == LITERAL:
            drop.add(k)
    return [line for k, line in enumerate(out) if k not in drop] if drop else out


class _AsWritten:
    """The source's lines as written, split only when one is asked for."""

    def __init__(self, text: str, comments: list[Comment]) -> None:
        self.text = text
        self.comments = comments
        self._lines: list[str] | None = None
        self._comment_at: dict[int, str] | None = None

    def raw(self, number: int) -> str:
        """Line `number` (1-based) exactly as written."""
        if self._lines is None:
            self._lines = self.text.split("\n")
        return self._lines[number - 1]

    def line(self, number: int) -> str:
        """Line `number` without its comment, spaces collapsed: how data lines are compared."""
        if self._comment_at is None:
            self._comment_at = {c.line: c.text for c in self.comments}
        line = self.raw(number)
        comment = self._comment_at.get(number)
        if comment is not None:
            line = line[: line.rfind(comment)]
        return " ".join(line.split())


def _keep_newlines(match: re.Match[str]) -> str:
    return "\n" * match.group().count("\n")


def _trie(words: tuple[str, ...]) -> str:
    """An alternation of `words` factored by prefix (`a(?:nd|s(?:sert|ync)?)`): one branch per
    character instead of one per word, which makes the keyword check in `identifier` cheap."""
    branches: dict[str, list[str]] = {}
    complete = False
    for word in sorted(set(words)):
        if word:
            branches.setdefault(word[0], []).append(word[1:])
        else:
            complete = True
    alternatives = [re.escape(first) + _trie(tuple(rest)) for first, rest in branches.items()]
    if not alternatives:
        return ""
    body = alternatives[0] if len(alternatives) == 1 else "(?:" + "|".join(alternatives) + ")"
    return f"(?:{body})?" if complete else body


def token_count(normalized: str) -> int:
    """Tokens in normalized code: names, literals and each punctuation character."""
    return len(_TOKEN.findall(normalized))
