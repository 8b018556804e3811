//! GUIDs as VHDX stores them: Microsoft's layout, whose first three fields are little-endian.

use std::fmt;

/// A GUID, as its 16 bytes on disk.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The GUID written `{d1-d2-d3-d4[0..2]-d4[2..8]}`, as the spec lists them.
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }

    /// The GUID stored at `off` of `bytes`.
    pub fn read(bytes: &[u8], off: usize) -> Guid {
        Guid(bytes[off..off + 16].try_into().unwrap())
    }

    /// The all-zero GUID, which VHDX uses for "none" (an empty log).
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }

    /// Parses the text form, with or without braces (parent locators store
    /// `{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}`); case is ignored.
    pub fn parse(text: &str) -> Option<Guid> {
        let t = text.trim();
        let t = t
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or(t);
        let parts: Vec<&str> = t.split('-').collect();
        let lens = [8, 4, 4, 4, 12];
        if parts.len() != 5 || parts.iter().zip(lens).any(|(p, n)| p.len() != n) {
            return None;
        }
        let d1 = u32::from_str_radix(parts[0], 16).ok()?;
        let d2 = u16::from_str_radix(parts[1], 16).ok()?;
        let d3 = u16::from_str_radix(parts[2], 16).ok()?;
        let tail = format!("{}{}", parts[3], parts[4]);
        let mut d4 = [0u8; 8];
        for (i, byte) in d4.iter_mut().enumerate() {
            *byte = u8::from_str_radix(tail.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Guid::from_fields(d1, d2, d3, d4))
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        let d1 = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let d2 = u16::from_le_bytes([b[4], b[5]]);
        let d3 = u16::from_le_bytes([b[6], b[7]]);
        write!(f, "{d1:08X}-{d2:04X}-{d3:04X}-{:02X}{:02X}-", b[8], b[9])?;
        for x in &b[10..] {
            write!(f, "{x:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{self}}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_disk_layout_and_text_round_trip() {
        // The BAT region's GUID as the spec writes it, and as qemu-img stores it on disk.
        let bat = Guid::from_fields(
            0x2DC2_7766,
            0xF623,
            0x4200,
            [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08],
        );
        assert_eq!(
            bat.0,
            [
                0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd,
                0x4a, 0x08
            ]
        );
        assert_eq!(bat.to_string(), "2DC27766-F623-4200-9D64-115E9BFD4A08");
        assert_eq!(
            Guid::parse("{2dc27766-f623-4200-9d64-115e9bfd4a08}"),
            Some(bat)
        );
        assert_eq!(
            Guid::parse("2DC27766-F623-4200-9D64-115E9BFD4A08"),
            Some(bat)
        );
        assert_eq!(Guid::parse("{2dc27766-f623-4200-9d64-115e9bfd4a0}"), None);
        assert_eq!(Guid::parse("not a guid"), None);
    }
}
