"""Math answers as strings: find a response's final answer and spell answers canonically.

Pure string code, with no solver and no deadline: cheap and deterministic, so the verifier
(`hacrl.tasks.math_verify`) only sees the pairs that strings cannot settle.

* `extract_answer` finds the final answer in free text: the last top-level `\\boxed{...}` / `\\fbox{...}`
  (braces matched, escaped braces skipped), else GSM8K's `#### X`, else "The (final) answer is X" /
  "Answer: X". A response whose last box is never closed (cut off mid-answer) has no answer. No guessing
  from the last number: an answer the response does not mark is not rewarded.
* `normalize_answer` removes what does not change the value (dollar signs, `\\dfrac`, thousands
  separators, degrees, percent, delimiters), so equal answers written differently compare equal as strings.
* `comparable_pair` / `strings_equal` are the string half of scoring: both sides extracted and normalised
  (units after a number dropped when the gold is a plain number), then equal spellings accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# --------------------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------------------

_BOX_CMD = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_ANSWER_IS = re.compile(
    r"\banswer(?:\s*\*\*)?\s*(?:\bis\b\s*:?|:)(?:\s*\*\*)?\s*",
    re.IGNORECASE,
)
_GSM8K_MARK = re.compile(r"####")
# Words that may join two boxes that together make one answer ("$\boxed{1}$ and $\boxed{9}$").
_BOX_JOINER = re.compile(r"^\s*\$?\s*(?:,|,?\s*and|\\text\{\s*and\s*\}|,?\s*\\text\{\s*and\s*\})\s*\$?\s*$")


def _skip_group(text: str, i: int) -> int | None:
    """Index just past the brace group opening at text[i] == '{', or None if it never closes.

    A backslash escapes the next character, so `\\{`, `\\}` and `\\\\` never count as grouping braces.
    """
    depth = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


@dataclass(frozen=True)
class _Box:
    start: int
    end: int  # index past the box; for an unclosed box, len(text)
    content: str | None  # None: the box was opened but never closed


def _top_level_boxes(text: str) -> list[_Box]:
    """All `\\boxed`/`\\fbox` commands not nested in another box, in order.

    `\\boxed 5` (no braces, seen in MATH solutions) takes the next token up to whitespace or `$`.
    """
    boxes: list[_Box] = []
    pos = 0
    while True:
        m = _BOX_CMD.search(text, pos)
        if m is None:
            return boxes
        i = m.end()
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == "{":
            end = _skip_group(text, i)
            if end is None:
                boxes.append(_Box(m.start(), len(text), None))
                return boxes
            boxes.append(_Box(m.start(), end, text[i + 1 : end - 1]))
            pos = end
        else:
            tok = re.match(r"[^\s$]+", text[i:])
            if tok is None or i == m.end():  # `\boxed` at the end, or `\boxed$`: nothing boxed
                boxes.append(_Box(m.start(), i, ""))
                pos = max(i, m.end())
            else:
                boxes.append(_Box(m.start(), i + tok.end(), tok.group(0)))
                pos = i + tok.end()


def last_boxed(text: str) -> str | None:
    """Content of the last top-level box, joining boxes that only "and"/"," separate; None if none.

    MATH solutions sometimes box a two-part answer separately ("$\\boxed{(-2,18)}$ and $\\boxed{(8,38)}$");
    the answer is then the list "(-2,18), (8,38)". Empty boxes are ignored. If the last box is never
    closed the text was cut off mid-answer and there is no answer (None), rather than an earlier box.
    """
    boxes = _top_level_boxes(text)
    boxes = [b for b in boxes if b.content is None or b.content.strip()]
    if not boxes:
        return None
    last = boxes[-1]
    if last.content is None:
        return None
    parts = [last.content.strip()]
    k = len(boxes) - 1
    while k > 0:
        prev = boxes[k - 1]
        if prev.content is None or not _BOX_JOINER.match(text[prev.end : boxes[k].start]):
            break
        parts.append(prev.content.strip())
        k -= 1
    parts.reverse()
    # The same value boxed twice ("... = \boxed{2}$ and $\boxed{2}") is one answer.
    unique = list(dict.fromkeys(parts))
    return ", ".join(unique)


def _cut_inline_answer(rest: str) -> str:
    """The answer at the start of `rest` (text after "answer is"): a `$...$` / `\\(...\\)` span, else the
    line up to the end of the sentence."""
    rest = rest.lstrip()
    for opener, closer in (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$")):
        if rest.startswith(opener):
            j = rest.find(closer, len(opener))
            while closer == "$" and j > 0 and rest[j - 1] == "\\":  # `\$` inside math is a dollar sign
                j = rest.find(closer, j + 1)
            if j > 0:
                return rest[len(opener) : j]
            break
    line = rest.split("\n", 1)[0]
    # The sentence ends at a period followed by whitespace or the end, unless it is a decimal point.
    m = re.search(r"\.(?=\s|$)", line)
    if m is not None:
        line = line[: m.start()]
    return line


def _tidy_extracted(ans: str) -> str | None:
    ans = ans.strip().strip("*").strip()
    ans = re.sub(r"(?<!\\)[\s.,;:!]+$", "", ans)
    if ans.startswith("$") and ans.endswith("$") and len(ans) >= 2:
        ans = ans.strip("$").strip()
    if not _strip_delimiters(ans).strip("$ "):  # "$\boxed{}$", "\(\)": marks where no answer was given
        return None
    return ans or None


def extract_answer(text: str) -> str | None:
    """The final answer a response commits to, as a string; None when it gives none.

    Order: the last `\\boxed{}`/`\\fbox{}` (see `last_boxed`); else the text after the last GSM8K `####`;
    else the text after the last "answer is" / "answer:" (a `$...$` span, or the rest of the sentence),
    with trailing punctuation and `$` removed. No guessing from the last number: an answer the response
    does not mark is not rewarded.
    """
    if not isinstance(text, str) or not text.strip():
        return None
    if _BOX_CMD.search(text):
        boxes = _top_level_boxes(text)
        if any(b.content is None or b.content.strip() for b in boxes):
            boxed = last_boxed(text)
            return _tidy_extracted(boxed) if boxed is not None else None
    marks = list(_GSM8K_MARK.finditer(text))
    if marks:
        line = text[marks[-1].end() :].strip().split("\n", 1)[0]
        got = _tidy_extracted(line.lstrip("#"))
        if got is not None:
            return got
    hits = list(_ANSWER_IS.finditer(text))
    for hit in reversed(hits):
        got = _tidy_extracted(_cut_inline_answer(text[hit.end() :]))
        if got is not None:
            return got
    return None


# --------------------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"^-?(?:\d+(?:\.\d*)?|\.\d+)$")
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_TEXT_CMDS = ("text", "textbf", "textit", "textrm", "mathrm", "mbox", "mathbf", "textnormal", "operatorname")
_TEXT_WRAP = re.compile(r"\\(?:" + "|".join(_TEXT_CMDS) + r")\s*\{([^{}]*)\}")
# Each token consumes a whole run of letters (the lookaheads), so a failed match cannot backtrack
# through the ways of splitting a long word into "units".
_UNIT_TOKEN = (
    r"(?:\\(?:text|mbox|mathrm|textrm)\s*\{[^{}]*\}|[A-Za-z]{2,}(?![A-Za-z])\.?|\^\s*\{?\d\}?"
    r"|/\s*[A-Za-z]+(?![A-Za-z]))"
)
_UNIT_TAIL = re.compile(
    r"^(?P<num>-?(?:\d+(?:\.\d*)?|\.\d+))(?P<sep>\s*)(?P<unit>" + _UNIT_TOKEN + r"(?:\s*" + _UNIT_TOKEN + r")*)$"
)


def _strip_delimiters(s: str) -> str:
    s = s.strip()
    changed = True
    while changed and s:
        changed = False
        for a, b in (("\\(", "\\)"), ("\\[", "\\]"), ("$$", "$$")):
            if s.startswith(a) and s.endswith(b) and len(s) >= len(a) + len(b):
                s = s[len(a) : -len(b)].strip()
                changed = True
        m = re.fullmatch(r"\\(?:boxed|fbox)\s*\{(.*)\}", s, re.DOTALL)
        if m and _skip_group(s, s.index("{")) == len(s):
            s = m.group(1).strip()
            changed = True
    return s


def normalize_answer(ans: str) -> str:
    """A canonical spelling of an answer string, for string comparison and for math-verify.

    Removes what does not change the value: math delimiters, `$` and `\\$`, `\\left`/`\\right`, spacing
    commands, `^\\circ`, `\\%`, a trailing period; `\\dfrac`/`\\tfrac` -> `\\frac`; `1{,}000` and `1,\\!000`
    -> `1000` anywhere, plain `1,000` -> `1000` only when the whole answer is one number (so a list like
    `1,3` or `(1,200)` is left alone).
    """
    s = _strip_delimiters(ans)
    s = s.replace("\\$", "")
    s = re.sub(r"(?<!\\)\$", "", s)
    s = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", s)
    s = re.sub(r"\\(?:left|right)\s*\.", "", s)
    s = re.sub(r"\\(?:left|right)(?![A-Za-z])\s*", "", s)
    s = re.sub(r"\\(?:bigl|bigr|Bigl|Bigr|big|Big)(?![A-Za-z])\s*", "", s)
    # `,\!` and `{,}` between digits are unambiguous LaTeX thousands separators, wherever they are
    s = re.sub(r"(?<=\d)(?:,\s*\\!|\{,\})\s*(?=\d{3}(?!\d))", "", s)
    s = s.replace("\\!", "").replace("{,}", ",")
    # spacing commands -> a space; a LaTeX line break `\\` (matrix rows) is kept as it is
    s = re.sub(r"\\\\|\\[,;:> ]|~", lambda mt: mt.group(0) if mt.group(0) == "\\\\" else " ", s)
    s = re.sub(r"\\quad|\\qquad", " ", s)
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree", "", s)
    s = re.sub(r"\\?%", "", s)
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"(?<![\\.])\.$", "", s).strip()  # a sentence's period, not "..." or "\."
    s = re.sub(r"(?<!\\)[,;]+$", "", s).strip()
    if _THOUSANDS.match(s.replace(" ", "")):
        s = s.replace(" ", "").replace(",", "")
    return s


def _strip_units(s: str) -> str:
    """`18 dollars`, `5\\text{ cm}^2`, `45 minutes` -> the number; anything else unchanged.

    Only used when the gold answer is a plain number, and a unit must be a `\\text{}`-like group or a
    word of two or more letters, so `2x` is never reduced to `2`.
    """
    m = _UNIT_TAIL.match(s)
    if m is None:
        return s
    unit = m.group("unit")
    if unit.startswith("\\") or (unit[0].isalpha() and m.group("sep")):
        return m.group("num")
    return s


def _is_plain_number(s: str) -> bool:
    return bool(_NUMBER.match(s.replace(" ", "")))


def _text_key(s: str) -> str:
    """Loose key for text answers ("\\text{Evelyn}" == "Evelyn", "\\text{(C)}" == "C")."""
    prev = None
    while prev != s:
        prev = s
        s = _TEXT_WRAP.sub(r"\1", s)
    s = re.sub(r"\s+", "", s).lower().rstrip(".")
    m = re.fullmatch(r"\(([a-z])\)", s)
    return m.group(1) if m else s


def _is_text_answer(gold: str) -> bool:
    return bool(_TEXT_WRAP.search(gold)) or bool(re.fullmatch(r"[A-Za-z][A-Za-z'\- ]*[A-Za-z]", gold))


# --------------------------------------------------------------------------------------------------------
# The string half of scoring
# --------------------------------------------------------------------------------------------------------


def comparable_pair(response: str, gold: str) -> tuple[str, str] | None:
    """(answer, gold), both normalised for comparison; None when the response gives no answer.

    When the gold is a plain number, units after the answer's number are dropped (`18 dollars` -> `18`).
    """
    raw = extract_answer(response) if isinstance(response, str) else None
    if raw is None:
        return None
    gold_n = normalize_answer(gold)
    pred_n = normalize_answer(raw)
    if not pred_n:
        return None
    if _is_plain_number(gold_n):
        pred_n = _strip_units(pred_n)
    return pred_n, gold_n


def strings_equal(pred_n: str, gold_n: str) -> bool:
    """Whether two normalised answers are the same spelling: equal (spaces ignored), or, for a text gold,
    equal ignoring case and `\\text{}`."""
    if pred_n == gold_n or pred_n.replace(" ", "") == gold_n.replace(" ", ""):
        return True
    return _is_text_answer(gold_n) and _text_key(pred_n) == _text_key(gold_n)


__all__ = ["comparable_pair", "extract_answer", "last_boxed", "normalize_answer", "strings_equal"]
