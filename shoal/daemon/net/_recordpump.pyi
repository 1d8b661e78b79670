FULL: int
WAITED: int
CLOSED: int
FAILED: int
BAD_TAG: int
SHORT: int
LIMIT: int

def pump(
    fd: int,
    key: bytes,
    nonce: int,
    max_records: int,
    max_bytes: int,
    dst: memoryview,
    wire: bytearray,
    have: int,
    timeout_ms: int,
    /,
) -> tuple[int, int, int, int, int, int]: ...
