"""One writer for the party.toml files the `fedveil train` tests run parties with.

Why one: five test modules wrote the same [party] block by hand and drifted apart in
small ways; each now says only what its parties differ in (data, [lora], [recipe], [dp],
rounds).
"""

from __future__ import annotations

from pathlib import Path

TEXT_RECIPE = """
[recipe]
epochs = 1
batch_size = 2
learning_rate = 0.02
"""

TINY_GPT2_LORA = """
[lora]
rank = 2
alpha = 4.0
target_modules = ["c_attn"]
variant = "ffa"
seed = 0
"""


def texts_data(texts: Path) -> str:
    """The [data] body of a party that trains on a JSONL of texts (the tiny GPT-2)."""
    return f'texts = "{texts}"\nmax_length = 16'


def write_party_toml(
    tmp_path: Path,
    cid: str,
    *,
    credentials: Path,
    roster: Path,
    port: int,
    model_dir: Path,
    data: str,
    rounds: int | None = None,
    join_timeout_s: int = 30,
    sections: str = "",
) -> Path:
    """TMP/CID.toml: [party] (out under TMP/out/CID), [data] with `data`, then `sections`
    verbatim; without `rounds` the party takes the count from the federation plan."""
    count = "" if rounds is None else f"rounds = {rounds}\n"
    config = tmp_path / f"{cid}.toml"
    config.write_text(
        f"""
[party]
credentials = "{credentials}"
roster = "{roster}"
server = "localhost:{port}"
model_dir = "{model_dir}"
out = "{tmp_path / "out" / cid}"
{count}join_timeout_s = {join_timeout_s}

[data]
{data}
{sections}"""
    )
    return config
