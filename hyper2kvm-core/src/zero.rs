//! Finding all-zero blocks fast: every byte the pipeline reads passes through here.

/// True when every byte of `buf` is zero.
///
/// Folds 64-byte blocks with OR so the compiler vectorises the loop, and stops at the first
/// non-zero block: data clusters usually fail in the first block, zero clusters cost one pass.
pub fn is_zero(buf: &[u8]) -> bool {
    let mut blocks = buf.chunks_exact(64);
    for block in &mut blocks {
        let mut acc = 0u8;
        for &b in block {
            acc |= b;
        }
        if acc != 0 {
            return false;
        }
    }
    blocks.remainder().iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::is_zero;

    #[test]
    fn detects_any_non_zero_byte() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0; 4097]));
        for pos in [0, 63, 64, 4095, 4096] {
            let mut buf = vec![0u8; 4097];
            buf[pos] = 1;
            assert!(!is_zero(&buf), "byte {pos}");
        }
    }
}
