from collections.abc import Sequence

def read_uniform(
    entries: Sequence[object], token_key: str, logprob_key: str, top_key: str, alt_key: str, k: int, /
) -> tuple[tuple[object, ...], bytes] | None: ...
