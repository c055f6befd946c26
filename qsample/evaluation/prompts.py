"""Prompt sets: the project's small default set and user files (txt, jsonl)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError


@dataclass(frozen=True)
class Prompt:
    """One prompt; ``answer`` (when given) is checked against the continuation."""

    text: str
    answer: str | None = None
    kind: str = "open"


# Written for this project: story openings, factual questions, arithmetic word problems whose
# answers are checkable (the first number in the continuation).
DEFAULT_PROMPTS: tuple[Prompt, ...] = (
    Prompt("Once upon a time, in a small village by the sea,", kind="story"),
    Prompt("The old lighthouse keeper opened the door and saw", kind="story"),
    Prompt("On the first day of school, the robot", kind="story"),
    Prompt("Deep in the forest there was a river that", kind="story"),
    Prompt("The spaceship landed quietly, and the crew", kind="story"),
    Prompt("My grandmother always told me that the secret to a good soup", kind="story"),
    Prompt("When the storm finally ended, the children ran outside and", kind="story"),
    Prompt("The detective looked at the muddy footprints and said", kind="story"),
    Prompt("The capital of France is", answer="Paris", kind="fact"),
    Prompt("Water freezes at a temperature of", answer="0", kind="fact"),
    Prompt("The largest planet in our solar system is", answer="Jupiter", kind="fact"),
    Prompt("The chemical symbol for gold is", answer="Au", kind="fact"),
    Prompt("The author of Romeo and Juliet is", answer="Shakespeare", kind="fact"),
    Prompt("The number of days in a week is", answer="7", kind="fact"),
    Prompt("The primary language spoken in Brazil is", answer="Portuguese", kind="fact"),
    Prompt("The tallest animal in the world is the", answer="giraffe", kind="fact"),
    Prompt("Question: Tom has 3 apples and buys 4 more. How many apples does he have?\n"
           "Answer:", answer="7", kind="arithmetic"),
    Prompt("Question: A box holds 6 eggs. How many eggs are in 2 boxes?\nAnswer:",
           answer="12", kind="arithmetic"),
    Prompt("Question: Sara had 10 pencils and gave away 3. How many are left?\nAnswer:",
           answer="7", kind="arithmetic"),
    Prompt("Question: There are 5 cars with 4 wheels each. How many wheels in total?\n"
           "Answer:", answer="20", kind="arithmetic"),
    Prompt("Question: A train travels 60 km each hour for 2 hours. How far does it go?\n"
           "Answer:", answer="120", kind="arithmetic"),
    Prompt("Question: Ben reads 8 pages a day. How many pages in 3 days?\nAnswer:",
           answer="24", kind="arithmetic"),
    Prompt("Question: 15 birds sit on a wire and 6 fly away. How many remain?\nAnswer:",
           answer="9", kind="arithmetic"),
    Prompt("Question: A pizza has 8 slices and 2 friends share it equally. How many slices "
           "does each get?\nAnswer:", answer="4", kind="arithmetic"),
)


def load_prompts(spec: str | None) -> list[Prompt]:
    """``None`` or ``"default"``: the default set; a ``.txt`` file: one prompt a line; a
    ``.jsonl`` file: objects with ``prompt`` and optional ``answer``."""
    if spec in (None, "default"):
        return list(DEFAULT_PROMPTS)
    path = Path(spec)
    if not path.exists():
        raise ConfigError("prompts", spec, "'default', a .txt file or a .jsonl file that exists")
    if path.suffix == ".jsonl":
        prompts = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                prompts.append(Prompt(str(row["prompt"]), None if row.get("answer") is None
                                      else str(row["answer"]), str(row.get("kind", "open"))))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ConfigError(f"prompts line {number}", line[:60],
                                  'a JSON object with "prompt" (and optional "answer")') from exc
    else:
        prompts = [Prompt(line) for line in path.read_text(encoding="utf-8").splitlines()
                   if line.strip()]
    if not prompts:
        raise ConfigError("prompts", spec, "a file with at least one prompt")
    return prompts
