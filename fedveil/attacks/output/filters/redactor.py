"""Post-generation redactor: the last line of defence, on the finished text.

Why after decoding as well as during: the decode-time filters see a window of tokens and
the top-k candidates; the redactor sees the whole final text, so it catches what they
cannot (matches beyond the window, a secret spelled with tokens nobody listed) -- but
only after the model has already "said" it, so the output may lose its sense around
the redaction. It matches over prompt + continuation (a pattern may need the prompt's
context, e.g. "gate code ... 4719") and replaces only the part inside the continuation.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from fedveil.attacks.output.filters.patterns import BlockList

REDACTION = "[REDACTED]"


@dataclass
class Redactor:
    """Replaces every match of the block list's text patterns with `replacement`."""

    patterns: Sequence[re.Pattern[str]]
    replacement: str = REDACTION
    redactions: int = field(default=0, init=False)

    @classmethod
    def from_block_list(cls, block_list: BlockList, replacement: str = REDACTION) -> Redactor:
        return cls(block_list.compiled(), replacement)

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Merged (start, end) spans of every match, overlapping ones included."""
        found = []
        for pattern in self.patterns:
            pos = 0
            while pos <= len(text):
                m = pattern.search(text, pos)
                if m is None:
                    break
                if m.end() > m.start():
                    found.append((m.start(), m.end()))
                pos = m.start() + 1
        merged: list[tuple[int, int]] = []
        for start, end in sorted(found):
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
            else:
                merged.append((start, end))
        return merged

    def redact(self, text: str, prompt: str = "") -> str:
        """`text` (a continuation of `prompt`) with every match inside it replaced."""
        # A continuation decoded on its own may have lost the space after the prompt
        # ("...is" + "4719"); put one back between two word characters.
        glue = " " if prompt and text and prompt[-1].isalnum() and text[0].isalnum() else ""
        joined = prompt + glue + text
        offset = len(prompt) + len(glue)
        out, last = [], offset
        for start, end in self.spans(joined):
            if end <= offset:
                continue  # entirely inside the prompt: not ours to change
            start = max(start, offset)
            out.append(joined[last:start])
            out.append(self.replacement)
            last = end
            self.redactions += 1
        out.append(joined[last:])
        return "".join(out)

    def __call__(self, prompt: str, text: str) -> str:
        """The postprocess hook of attacks.output.generator.HFGenerator."""
        return self.redact(text, prompt)
