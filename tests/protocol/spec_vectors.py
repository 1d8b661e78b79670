"""Reading the ```vector:<label> blocks of SPEC.md, shared by the protocol tests."""

import re
from pathlib import Path

SPEC = Path(__file__).resolve().parents[2] / "SPEC.md"


def spec_vectors(label: str) -> list[dict[str, str]]:
    """The spec's ```vector:<label> blocks as {key: value}; indented lines continue a value."""
    vectors = []
    for body in re.findall(rf"^```vector:{label}\n(.*?)^```", SPEC.read_text(), re.M | re.S):
        fields: dict[str, str] = {}
        key = ""
        for line in body.splitlines():
            if line.startswith(" "):
                fields[key] += line.strip()
            else:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        vectors.append(fields)
    return vectors
