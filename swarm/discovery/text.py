"""Status text, made comparable: normalization, SimHash fingerprints, and the idle/progress classifier.

Pure functions and one small class; no I/O. The repetition detector (`swarm.discovery.repetition`)
feeds every status and chat text through `Classifier.classify` and counts what comes out.

The method, in three steps:

1. `normalize` lowercases (after NFKC), drops possessives ("captain's orders" reads "captain
   orders") and other apostrophes ("I'm" reads "im"), and replaces the parts of a message
   that change on every repeat without changing its meaning — URLs, e-mail addresses, paths and
   file names, UUIDs, ULIDs, git SHAs and other hex ids, timestamps, percentages, numbers,
   @mentions, emoji — with placeholder tokens (`<url>`, `<path>`, `<num>`, ...). Punctuation
   becomes space and whitespace collapses, so "Standing by!! (since 10:42)" and
   "standing by since 11:03" both read `standing by since <ts>`.
2. Paraphrases that share no words ("standing by", "awaiting orders", "idle, no tasks") cannot be
   caught by any bag-of-words method, so idle talk is recognised by *intent*. A text is idle when
   it contains a strong idle phrase (standing by, awaiting orders/instructions, idle, no tasks,
   nothing to do, ready for the next assignment, status unchanged, still here, queue empty, ...)
   and at most `max_residual` content words remain besides; or, with no such phrase, when every
   word in it is an acknowledgement ("ack", "roger that", "ok, thanks"), an idle-talk word
   ("ready", "waiting", "orders", "next", "whenever", ...) or a filler ("for", "the", "captain";
   placeholders count as fillers), e.g. "ready for more" or "waiting for the next job". Every
   idle text belongs to the one canonical family `idle`.
3. Real progress is never idle talk: past-tense accomplishment verbs (committed, pushed, merged,
   fixed, implemented, wrote, refactored, deployed, ...), "opened PR", "tests pass", "all green",
   percentages, claimed/started tasks. A cue does not count when a negation or an intention sits
   in the three words before it ("nothing committed yet", "waiting for PR 12 to be merged",
   "will push") or when the text is a question. Progress wins over idle: "merged PR 42, ready for
   next assignment" is progress.

Two kinds of status are neither chatter nor progress, and are never counted as repeats: an agent
coming or going ("online, ready for work", "offline", "shutting down", or any status with state
`done` that is not progress: stopping twelve agents is not twelve agents repeating themselves), and
an agent saying it is blocked ("Blocked: t-4 needs the API key", or state `blocked`), which the
detector counts on its own, as `blocked`, for the captain to act on.

Everything else is `other`, and near-duplicates of it are one family. Features are the content
words and adjacent content-word pairs of the normalized text (stopwords dropped: otherwise "the" and
"in" dominate one-liners and unrelated lines look alike). Two texts are one family when their 64-bit
SimHashes (Charikar 2002; Manku et al., WWW 2007) differ in few bits, or when their feature sets
overlap: at least two shared features that make up most of the smaller set (overlap coefficient).
SimHash alone is weak on one-line texts: appending "(no ETA)" to a five-word line moves about 15 of
64 bits, as far as some unrelated lines; exact set overlap on such small sets separates them cleanly
and tolerates words appended, dropped or swapped for a placeholder.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

Kind = Literal["idle", "progress", "other", "lifecycle", "blocked"]

IDLE_FAMILY = "idle"
"""The family (and signal fingerprint) of chatter: every idle paraphrase, and (in the detector) any
message an agent repeats with no progress in between."""
BLOCKED_FAMILY = "blocked"
"""The family (and signal fingerprint) of an agent's reports that it is blocked."""

# --- normalization --------------------------------------------------------------------------------

_EXT = (
    "py|pyi|js|jsx|mjs|ts|tsx|go|rs|rb|java|kt|c|h|cc|cpp|hpp|cs|swift|php|lua|sh|bash|zsh|sql|md|rst|txt|"
    "json|jsonl|toml|yaml|yml|ini|cfg|conf|lock|html|css|scss|xml|csv|log|ipynb|proto|tf|dockerfile|mk"
)
_EMOJI = (
    "\U0001f000-\U0001faff\u2600-\u27bf\u2b00-\u2bff\u2300-\u23ff\u2190-\u21ff\u25a0-\u25ff"
    "\ufe0f\u200d\u20e3\U0001f1e6-\U0001f1ff"
)
# One alternation, tried left to right, the more specific shapes first. It is only tried where a
# word starts and only on words holding a character some shape needs (a digit, / \ @ : ; . %):
# the two guards fail fast on plain words, which makes normalizing several times cheaper. Digits
# glued to a word ("py311") and emoji are left to the second, simpler pass.
_TOKENS = re.compile(
    rf"""
    (?<!\w)(?=\S*?[\d/\\@:;.%])(?:
    (?P<url>(?:[a-z][a-z0-9+.-]{{1,15}}://|www\.)\S+)
  | (?P<email>[\w.+-]+@[\w-]+(?:\.[\w-]+)+)
  | (?P<uuid>[0-9a-f]{{8}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{12}}\b)
  | (?P<ts>\d{{4}}-\d{{2}}-\d{{2}}(?:[t\x20]\d{{1,2}}:\d{{2}}(?::\d{{2}}(?:[.,]\d+)?)?(?:z|[+-]\d{{2}}:?\d{{2}})?)?
          |\d{{1,2}}:\d{{2}}(?::\d{{2}}(?:[.,]\d+)?)?(?:\x20?[ap]m\b)?)
  | (?P<path>[a-z]:\\[^\s]*
          |(?<![/.])(?:~|\.{{1,2}})?/[\w.@+~-]+(?:/[\w.@+~-]+)*/?
          |[\w.-]+(?:/[\w.@+~-]+){{2,}}/?
          |(?:[\w.-]+/)*[\w-]+(?:\.[\w-]+)*\.(?:{_EXT})\b)
  | (?P<ulid>[0-7][0-9a-hjkmnp-tv-z]{{25}}\b)
  | (?P<hex>(?:0x)?(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{{7,}}\b)
  | (?P<mention>@[\w.:-]+)
  | (?P<pct>\d+(?:\.\d+)?\x20?%)
  | (?P<num>\d+(?:[.,_]\d+)*)
  | (?P<emoticon>(?<!\S)[:;]-?[()dp](?!\S))
    )""",
    re.VERBOSE,
)
_GLUED = re.compile(rf"(?P<num>\d+)|(?P<emoji>[{_EMOJI}]+)")
_PLACEHOLDER = {name: f" <{name}> " for name in _TOKENS.groupindex} | {"emoticon": " <emoji> ", "emoji": " <emoji> "}
_STRIP = str.maketrans({"<": " ", ">": " ", "'": None, "\u2019": None, "`": " "})
# "captain's orders" reads "captain orders": the possessive goes, so the word is the one the lexicon
# knows. A contraction ("it's", "that's", "what's") keeps its letters as before ("its", "thats").
_POSSESSIVE = re.compile(r"\b(\w+)['\u2019]s\b")
_CONTRACTED = frozenset({
    "it", "that", "what", "there", "here", "let", "he", "she", "who", "where", "how", "when", "why", "nothing",
    "something", "everything", "everyone", "someone", "one",
})
_PUNCT = re.compile(r"[^\w<>\s]+")


def _placeholder(match: re.Match[str]) -> str:
    return _PLACEHOLDER[match.lastgroup or "num"]


def _unpossessive(match: re.Match[str]) -> str:
    word = match.group(1)
    return match.group() if word in _CONTRACTED else word


def normalize(text: str) -> str:
    """Lowercased, whitespace-collapsed `text` with volatile parts replaced by placeholder tokens.

    >>> normalize("Standing by!! (since 10:42, see /tmp/x.log) 🫡")
    'standing by since <ts> see <path> <emoji>'
    """
    text = unicodedata.normalize("NFKC", text).lower()
    if "'" in text or "\u2019" in text:
        text = _POSSESSIVE.sub(_unpossessive, text)
    text = text.translate(_STRIP)
    text = _GLUED.sub(_placeholder, _TOKENS.sub(_placeholder, text))
    return " ".join(_PUNCT.sub(" ", text).split())


# --- fingerprints -------------------------------------------------------------------------------

def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_STOPWORDS = _words(
    "a an the is are was were be been am i im we you it its my our your this that these those to of in "
    "on at for and or but so as by with from still just now also then there here"
)
_MAX_FEATURES = 200
"""Features per text; lane arithmetic below needs fewer than 256."""
_LANE_ONES = int.from_bytes(b"\x01" * 64, "little")
_MAJORITY = bytes(0x31 if b >= 0x80 else 0x30 for b in range(256))
_HASH_CACHE_LIMIT = 1 << 16
_SIGNATURE_FEATURES = 32


class _Hashes(dict[str, tuple[int, str]]):
    """Feature -> (its 64-bit hash "spread" so bit i sits in byte i, its low 32 bits as 8 hex digits).

    Cached, and bounded by clearing: the same words come back in message after message.
    """

    def __missing__(self, feature: str) -> tuple[int, str]:
        if len(self) >= _HASH_CACHE_LIMIT:
            self.clear()
        h = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
        spread = int.from_bytes(bytes((h >> i) & 1 for i in range(64)), "little")
        value = self[feature] = (spread, f"{h & 0xFFFFFFFF:08x}")
        return value


_HASHES = _Hashes()


def features(normalized: str) -> list[str]:
    """SimHash features of a normalized text: its content words and adjacent content-word pairs."""
    words = normalized.split()
    content = [w for w in words if w not in _STOPWORDS] or words
    feats = dict.fromkeys(content)  # ordered set: a word said twice is one feature
    feats.update(dict.fromkeys(f"{a} {b}" for a, b in itertools.pairwise(content)))
    return list(feats)[:_MAX_FEATURES]


def simhash(feats: list[str]) -> int:
    """64-bit SimHash of `feats` (each weighted 1); 0 for no features.

    Instead of 64 Python-level counters, each feature hash is "spread" so bit i sits in byte i of
    a 512-bit integer; summing the spreads counts all 64 bit positions at once in C. Adding
    `127 - n // 2` to every byte makes a byte's top bit set exactly when more than half of the
    features had that bit set, and `bytes.translate` reads the 64 top bits back out.
    """
    n = len(feats)
    if n == 0:
        return 0
    hashes = _HASHES
    total = sum(hashes[f][0] for f in feats) + (127 - n // 2) * _LANE_ONES
    return int(total.to_bytes(64, "little").translate(_MAJORITY)[::-1], 2)


def fingerprint(text: str) -> int:
    """64-bit SimHash of the normalized `text`: near-duplicates differ in few bits."""
    return simhash(features(normalize(text)))


def distance(a: int, b: int) -> int:
    """Hamming distance between two fingerprints."""
    return (a ^ b).bit_count()


def signature(feats: list[str]) -> str:
    """The first 32 features as 32-bit hashes (8 hex digits, space-separated): what `overlap` compares."""
    hashes = _HASHES
    return " ".join(dict.fromkeys(hashes[f][1] for f in feats[:_SIGNATURE_FEATURES]))


def overlap(a: str, b: str) -> tuple[int, float]:
    """Shared features of two signatures, and their share of the smaller one (overlap coefficient).

    The detector's Lua script computes the same on the server; this is the reference.
    """
    sa, sb = set(a.split()), set(b.split())
    if not sa or not sb:
        return 0, 0.0
    shared = len(sa & sb)
    return shared, shared / min(len(sa), len(sb))


# --- intent lexicons ----------------------------------------------------------------------------


def _phrases(*patterns: str) -> re.Pattern[str]:
    """Whole-word alternation over normalized text (placeholders count as words)."""
    return re.compile(r"(?<![\w<])(?:" + "|".join(patterns) + r")(?![\w>])")


_DETS = r"(?:(?:your|further|new|more|next|the|my|an?|any|some|another|other|additional|fresh|incoming) )*"
_WORK = r"(?:orders?|instructions?|assignments?|tasks?|work|input|direction|commands?|jobs?|tickets?|something to do)"
_IDLE_STRONG = _phrases(
    r"stand(?:ing)? ?by", r"on stand ?by",
    rf"await(?:ing)? {_DETS}{_WORK}", rf"wait(?:ing)? (?:for|on) {_DETS}(?:{_WORK}|captain|you)",
    r"idl(?:e|ing)", r"nothing to do", r"no (?:(?:new|more|open|pending|available|current|assigned|further|other) )*"
    r"(?:tasks?|work|assignments?|jobs?|orders|updates?|changes?|news|progress|instructions)",
    r"nothing (?:(?:new|else|much) )?(?:to (?:do|report|work on|pick up)|new|on my plate|assigned|pending|"
    r"happening|yet|changed|in (?:the |my )?(?:queue|inbox))",
    rf"ready (?:for|to (?:take|pick up|receive|accept|start|get)(?: on| up)?) {_DETS}{_WORK}",
    r"ready when you are", r"ready and waiting", r"ready to go", r"^ready$",
    rf"(?:available|free) (?:for|to take|to pick up) {_DETS}{_WORK}",
    r"still (?:here|alive|around|available|waiting|idle|on it|working on it|nothing)",
    r"status (?:unchanged|same|quo|as before)", r"unchanged", r"same as (?:before|last time|earlier)",
    r"all quiet", r"quiet (?:here|on my end)", r"(?:queue|inbox|backlog) (?:is )?(?:empty|clear)",
    r"empty (?:queue|inbox|backlog)", rf"any {_DETS}{_WORK}(?: for me| available)?",
    r"anything (?:for me|to do|i can (?:pick up|help with|do|take))", r"need anything",
    r"let me know if (?:you need|theres|there is) anything", r"(?:checking|reporting) in", r"heartbeat",
    r"bored", r"twiddling (?:my )?thumbs", rf"(?:give|send) me {_DETS}(?:something|{_WORK})",
    rf"send {_DETS}{_WORK} my way", r"(?:i am|im) free", r"at your (?:disposal|service)",
    r"ready (?:for action|to (?:work|help|go|roll))", r"(?:can|may) i help(?: with anything)?", r"help with anything",
    rf"pending {_DETS}(?:orders?|instructions?|assignments?|tasks?)",
    r"nothing (?:(?:on|in) (?:the |my )?(?:board|queue|inbox|plate|list|backlog))",
    r"(?:waiting|hanging|sitting|standing) around", r"just waiting", r"killing time", r"sitting on my hands",
)
_IDLE_WEAK = _phrases(
    r"ack(?:nowledged?)?", r"roger(?: that)?", r"copy(?: that)?", r"noted", r"understood", r"received",
    r"will do", r"waiting", r"ok(?:ay)?", r"sure", r"ping", r"pong", r"alive", r"here", r"yes", r"yep", r"affirmative",
    r"got it", r"on it", r"thanks?", r"thank you", r"ty", r"cool", r"<emoji>", r"still", r"same", r"available",
)
_FILLERS = _words(
    "a an the i im me my we us our you your it its is am are was be been being for to of on in at with from by "
    "and or but so just still now currently right here there this that all any some new further please pls "
    "thanks thank let know if need needed yet again as usual same sir captain boss team everyone hey hi hello "
    "yo status update agent moment time min mins minute minutes sec secs seconds hour hours ago since while "
    "meantime today until told otherwise do get have has got can could would should will whats what when "
    "where there"
)
# Words of idle talk itself: a text made of these and fillers only is idle even without a phrase.
_ANCHORS = _words(
    "standing standby await awaiting waiting wait idle idling ready available free nothing ack acked "
    "acknowledged roger copy noted bored orders order instructions instruction tasking assignment assignments "
    "unassigned task tasks work job jobs ticket tickets quiet empty unchanged alive around whenever next more "
    "pending done anything something else left willing able help queue inbox backlog ok okay zero assigned "
    "take updates news last"
)

_DONE = (
    r"committed|pushed|merged|fixed|resolved|shipped|deployed|released|landed|implemented|added|wrote|written|"
    r"rewrote|refactored|removed|deleted|renamed|migrated|upgraded|updated|documented|tested|benchmarked|"
    r"profiled|optimi[sz]ed|reviewed|approved|completed|finished|finalized|built|generated|created|configured|"
    r"installed|patched|rebased|reverted|bumped|replaced|extracted|consolidated|cleaned up|ported|converted|"
    r"measured|reproduced|published|uploaded|integrated|enabled|disabled|deduplicated|simplified|sped up|"
    r"reduced|improved|drafted|triaged|diagnosed|identified|isolated|verified|validated|submitted|tagged|"
    r"wired|hooked up|set up|restructured|introduced|annotated|expanded|trimmed|split|moved|closed|addressed|"
    r"squashed|landed|cherry picked|backported|instrumented|hardened|vendored|pinned|unpinned|regenerated"
)
_GATE = r"(?:tests?|suite|specs?|ci|build|checks?|lint(?:ing)?|mypy|ruff|pytest|pipeline|benchmarks?|e2e|smoke)"
_NOT_IN_GAP = r"(?!(?:to|not|will|no|never|dont|didnt|wont|cant|cannot|arent|isnt|still|until|if|when)\b)"
_PROGRESS = _phrases(
    _DONE,
    r"(?:opened|raised|filed|sent|submitted) (?:(?:a|an|the|new|draft|my) )*(?:prs?|pull requests?|issues?|tickets?|"
    r"mrs?|bugs?|reports?|patch(?:es)?)",
    rf"{_GATE}(?: {_NOT_IN_GAP}[\w<>]+){{0,5}} "
    r"(?:pass|passes|passed|passing|green|succeeded|succeeds|clean|done|finished|complete)",
    r"all green", r"<num> (?:tests? )?passed", r"<pct>",
    r"(?:claimed|picked up|started|starting on|took|taking) (?:(?:the|a|an|task|issue|ticket|job|pr) )*"
    r"(?:task|issue|ticket|job|pr|assignment|<num>|<ulid>|<hex>|<mention>)",
    r"cut (?:(?:a|the|new) )?(?:release|tag|branch|build)", r"(?:task|issue|ticket|job|pr|<ulid>) (?:<num> )?"
    r"(?:is )?(?:done|complete|completed|finished|closed)",
    r"found (?:(?:the|a|an) )?(?:bug|cause|root cause|issue|leak|race|problem|culprit|regression)",
    r"done (?:with|on) (?!nothing)[\w<>]+", r"(?:is|are) (?:now )?(?:done|complete|merged|fixed|green|up for review)",
    rf"(?:prs?|pull requests?|patch|fix|branch|changes?|draft) (?:{_NOT_IN_GAP}[\w<>]+ ){{0,3}}(?:is |are )?"
    r"(?:up|ready for review|ready to merge|in review|merged|approved|landed)",
)
_BLOCKERS = _words(
    "no not nothing none never havent hasnt hadnt didnt dont doesnt isnt arent wasnt werent wont cant cannot "
    "without yet to will gonna should would could might may must need needs about plan planning going trying "
    "try wanna want if once until when whether"
)
_AFTER_BLOCKERS = _words("nothing none")

# An agent coming or going says so once per start or stop: never chatter, however many agents stop
# at once ("offline" from twelve agents is a shutdown, not a swarm repeating itself). The agent
# runtime's own texts are "online, ready for work" and "offline".
_LIFECYCLE = re.compile(
    r"(?:(?:agent|now|back|going|is|im|i am) )*"
    r"(?:online|offline|ready|starting(?: up)?|started|stopping|stopped|shutting down|shut down|restarting|"
    r"restarted|exiting|signing off)"
    r"(?: (?:and |now )?(?:online|ready(?: for work)?))?(?: now)?"
)
# "Blocked: t-4 needs the API key", "I'm blocked on review", "still blocked by the migration".
_BLOCKED = re.compile(r"(?:(?:i am|im|still|currently|now|agent <num>|<mention>) )*blocked\b")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the classifier made of one text.

    `family` is what repeats are counted under: `idle` for every idle paraphrase, `blocked` for an
    agent's reports that it is blocked, `s:<16 hex>` (the text's own SimHash) for other talk, and `""`
    for progress and lifecycle texts ("online", "offline"), which are never counted. `signature`
    (other talk only) is the feature-hash set that near-duplicate matching compares.
    """

    kind: Kind
    family: str
    fingerprint: int
    normalized: str
    signature: str = ""


class Classifier:
    """Decides idle chatter vs real progress vs other talk; see the module docstring for the method.

    `max_residual` is how many content words beyond a strong idle phrase still leave a text idle
    ("standing by, queue empty since <ts>" is idle; "standing by for review of the lease module
    refactor" is not). Results are cached per (text, state): chatter repeats word for word a lot.
    """

    def __init__(self, max_residual: int = 2, cache_size: int = 16_384) -> None:
        self.max_residual = max_residual
        self.cache_size = cache_size
        self._cache: dict[tuple[str, str | None], Verdict] = {}

    def classify(self, text: str, state: str | None = None) -> Verdict:
        """The verdict for `text`; `state` is a status message's declared state (`idle` is a hint)."""
        key = (text, state)
        verdict = self._cache.get(key)
        if verdict is None:
            if len(self._cache) >= self.cache_size:
                self._cache.clear()
            verdict = self._cache[key] = self._classify(text, state)
        return verdict

    def _classify(self, text: str, state: str | None) -> Verdict:
        norm = normalize(text)
        if state == "blocked" or _BLOCKED.match(norm):
            return Verdict("blocked", BLOCKED_FAMILY, 0, norm)
        if not text.rstrip().endswith("?") and self._progress(norm):
            return Verdict("progress", "", 0, norm)
        if state == "done" or _LIFECYCLE.fullmatch(norm):
            # A "done" status that is not progress is an agent's sign-off ("offline"): never chatter.
            return Verdict("lifecycle", "", 0, norm)
        if state == "idle" or self._idle(norm):
            return Verdict("idle", IDLE_FAMILY, 0, norm)
        feats = features(norm)
        fp = simhash(feats)
        return Verdict("other", f"s:{fp:016x}", fp, norm, signature(feats))

    def _progress(self, norm: str) -> bool:
        for match in _PROGRESS.finditer(norm):
            before = norm[: match.start()].split()[-3:]
            # a bare verb takes its object from the next word: "pushed nothing" is no progress
            after = norm[match.end() :].split()[:1] if " " not in match.group() else []
            if _BLOCKERS.isdisjoint(before) and _AFTER_BLOCKERS.isdisjoint(after):
                return True
        return False

    def _idle(self, norm: str) -> bool:
        rest, strong = _IDLE_STRONG.subn(" ", norm)
        rest = _IDLE_WEAK.sub(" ", rest)
        words = [w for w in rest.split() if w not in _FILLERS and not w.startswith("<")]
        residual = sum(1 for w in words if w not in _ANCHORS)
        if strong:
            return residual <= self.max_residual
        # no idle phrase: idle only when acknowledgements and idle words are all there is
        return residual == 0 and (rest != norm or bool(words))
