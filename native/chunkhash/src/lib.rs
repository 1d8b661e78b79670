//! BLAKE3 in derive-key mode over many buffers in one call, so that Python pays one
//! GIL hand-off per batch of chunks instead of one per chunk (see shoal's bench/JOURNAL.md,
//! "What a small file waits for").
use std::slice;

/// Hash `count` buffers (`ptrs[i]`, `lens[i]`) with the key derived from `context`
/// (`context_len` bytes of UTF-8) and write 32 bytes for each to `out[32 * i..]`.
///
/// # Safety
/// `context` must be valid UTF-8 of `context_len` bytes; `ptrs` and `lens` must hold
/// `count` entries each, every `ptrs[i]` readable for `lens[i]` bytes; `out` writable
/// for `32 * count` bytes. Nothing here is retained after the call.
#[no_mangle]
pub unsafe extern "C" fn shoal_derive_many(
    context: *const u8,
    context_len: usize,
    ptrs: *const *const u8,
    lens: *const usize,
    count: usize,
    out: *mut u8,
) {
    let context = std::str::from_utf8_unchecked(slice::from_raw_parts(context, context_len));
    let base = blake3::Hasher::new_derive_key(context);
    let ptrs = slice::from_raw_parts(ptrs, count);
    let lens = slice::from_raw_parts(lens, count);
    let out = slice::from_raw_parts_mut(out, 32 * count);
    for (i, (&ptr, &len)) in ptrs.iter().zip(lens).enumerate() {
        let data: &[u8] = if len == 0 { &[] } else { slice::from_raw_parts(ptr, len) };
        let mut hasher = base.clone();
        hasher.update(data);
        out[32 * i..32 * i + 32].copy_from_slice(hasher.finalize().as_bytes());
    }
}
