//! CRC-32C (Castagnoli), the checksum of every VHDX header, region table, metadata-free
//! structure and log entry.
//!
//! A 256-entry table built at compile time, one byte per step: VHDX checksums cover a few
//! KiB at open time (headers, region tables, log entries), never payload data, so a faster
//! slicing or SSE4.2 variant would not be measurable.

/// The reflected Castagnoli polynomial.
const POLY: u32 = 0x82F6_3B78;

const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC-32C state, for checksums computed over several pieces (a log entry's sectors).
#[derive(Clone, Copy)]
pub(crate) struct Crc32c(u32);

impl Crc32c {
    pub(crate) fn new() -> Self {
        Crc32c(!0)
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        let mut crc = self.0;
        for &b in bytes {
            crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
        }
        self.0 = crc;
    }

    pub(crate) fn finish(self) -> u32 {
        !self.0
    }
}

/// CRC-32C of `bytes` (the tests check the implementation through it).
#[cfg(test)]
pub(crate) fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = Crc32c::new();
    crc.update(bytes);
    crc.finish()
}

/// CRC-32C of `bytes` with the 4-byte checksum field at `field` taken as zero, as VHDX
/// computes every stored checksum.
pub(crate) fn crc32c_skipping(bytes: &[u8], field: usize) -> u32 {
    let mut crc = Crc32c::new();
    crc.update(&bytes[..field]);
    crc.update(&[0; 4]);
    crc.update(&bytes[field + 4..]);
    crc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value_and_known_vectors() {
        // The CRC catalogue's check value for CRC-32/ISCSI, and RFC 3720's test vectors.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
    }

    #[test]
    fn pieces_equal_whole_and_skipping_zeroes_the_field() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let mut crc = Crc32c::new();
        crc.update(&data[..1234]);
        crc.update(&data[1234..]);
        assert_eq!(crc.finish(), crc32c(&data));
        let mut zeroed = data.clone();
        zeroed[4..8].fill(0);
        assert_eq!(crc32c_skipping(&data, 4), crc32c(&zeroed));
    }
}
