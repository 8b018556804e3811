//! The Windows registry, as the Windows fix-ups see it: keys, typed values, edits.
//!
//! A fix-up reads one key at a time ([`RegKey`]: its values and the names of its subkeys) and
//! plans [`KeyEdit`]s: a key (created with its parents if missing) and the values to set in it.
//! Nothing is ever deleted. The real guest applies edits with hivex on a copy of the hive that
//! libguestfs downloaded, then uploads it back (see [`crate::guestfish`]); this module holds
//! the pure parts: the value types and their encodings, the `.reg` text `hivexregedit --merge`
//! reads, and the parser of `hivexsh`'s `lsval` output.

use std::collections::BTreeMap;
use std::fmt;

/// A registry value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegValue {
    /// `REG_SZ`.
    Sz(String),
    /// `REG_EXPAND_SZ` (`%SystemRoot%` expanded by Windows when read).
    ExpandSz(String),
    /// `REG_MULTI_SZ`.
    MultiSz(Vec<String>),
    /// `REG_DWORD`.
    Dword(u32),
    /// `REG_BINARY`.
    Binary(Vec<u8>),
    /// Any other type, as its number and raw bytes.
    Other(u32, Vec<u8>),
}

impl RegValue {
    /// The registry type number (`REG_SZ` = 1 …).
    pub fn type_number(&self) -> u32 {
        match self {
            RegValue::Sz(_) => 1,
            RegValue::ExpandSz(_) => 2,
            RegValue::Binary(_) => 3,
            RegValue::Dword(_) => 4,
            RegValue::MultiSz(_) => 7,
            RegValue::Other(t, _) => *t,
        }
    }

    /// The value's bytes as stored in a hive (strings UTF-16LE with their terminators).
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            RegValue::Sz(s) | RegValue::ExpandSz(s) => utf16z(s),
            RegValue::MultiSz(items) => {
                let mut out: Vec<u8> = items.iter().flat_map(|i| utf16z(i)).collect();
                out.extend([0, 0]);
                out
            }
            RegValue::Dword(n) => n.to_le_bytes().to_vec(),
            RegValue::Binary(b) | RegValue::Other(_, b) => b.clone(),
        }
    }

    /// Decodes a value from its type number and bytes.
    pub fn from_bytes(kind: u32, bytes: &[u8]) -> RegValue {
        match kind {
            1 => RegValue::Sz(from_utf16z(bytes)),
            2 => RegValue::ExpandSz(from_utf16z(bytes)),
            3 => RegValue::Binary(bytes.to_vec()),
            4 if bytes.len() == 4 => {
                RegValue::Dword(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
            }
            7 => {
                let text = from_utf16(bytes);
                RegValue::MultiSz(
                    text.split('\0')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect(),
                )
            }
            _ => RegValue::Other(kind, bytes.to_vec()),
        }
    }

    /// The value as a string (`REG_SZ`, `REG_EXPAND_SZ`), if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            RegValue::Sz(s) | RegValue::ExpandSz(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a number (`REG_DWORD`), if it is one.
    pub fn as_dword(&self) -> Option<u32> {
        match self {
            RegValue::Dword(n) => Some(*n),
            _ => None,
        }
    }
}

impl fmt::Display for RegValue {
    /// Strings in quotes as Windows shows them (backslashes not escaped), numbers in decimal,
    /// bytes in hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegValue::Sz(s) => write!(f, "\"{s}\""),
            RegValue::ExpandSz(s) => write!(f, "\"{s}\" (expand)"),
            RegValue::MultiSz(items) => {
                let quoted: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
                write!(f, "[{}]", quoted.join(", "))
            }
            RegValue::Dword(n) => write!(f, "{n}"),
            RegValue::Binary(b) | RegValue::Other(_, b) => {
                let hex: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
                write!(f, "hex:{}", hex.join(","))
            }
        }
    }
}

fn utf16z(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain(std::iter::once(0))
        .flat_map(u16::to_le_bytes)
        .collect()
}

fn from_utf16(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

fn from_utf16z(bytes: &[u8]) -> String {
    let text = from_utf16(bytes);
    text.split('\0').next().unwrap_or_default().to_string()
}

/// One key as read: its values by name (`""` is the default value) and its subkeys' names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegKey {
    /// Values by name.
    pub values: BTreeMap<String, RegValue>,
    /// The names of its subkeys, as stored.
    pub subkeys: Vec<String>,
}

impl RegKey {
    /// A value by name, case-insensitively as Windows looks names up.
    pub fn value(&self, name: &str) -> Option<&RegValue> {
        self.values
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Whether a subkey of that name exists (case-insensitively).
    pub fn has_subkey(&self, name: &str) -> bool {
        self.subkeys.iter().any(|k| k.eq_ignore_ascii_case(name))
    }
}

/// A key to create (with its parents) if missing, and values to set in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEdit {
    /// The key's path from the hive's root, `\`-separated, without a leading `\`
    /// (`ControlSet001\Services\viostor`).
    pub key: String,
    /// Values to set, in order.
    pub values: Vec<(String, RegValue)>,
}

impl KeyEdit {
    /// A key edit with its values.
    pub fn new(key: impl Into<String>, values: Vec<(&str, RegValue)>) -> KeyEdit {
        KeyEdit {
            key: key.into(),
            values: values
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect(),
        }
    }
}

/// The `.reg` text that `hivexregedit --merge` applies to a hive: every ancestor of each key
/// listed before it (hivexregedit creates only keys whose parent exists), each value written
/// with its exact type and bytes (`hex(N):…`; `dword:` for numbers), so no encoding is guessed.
pub fn reg_file(edits: &[KeyEdit]) -> String {
    let mut out = String::from("Windows Registry Editor Version 5.00\n\n");
    let mut listed: Vec<String> = Vec::new();
    for edit in edits {
        let parts: Vec<&str> = edit.key.split('\\').filter(|p| !p.is_empty()).collect();
        for i in 1..parts.len() {
            let ancestor = parts[..i].join("\\");
            if !listed.iter().any(|k| k.eq_ignore_ascii_case(&ancestor)) {
                out.push_str(&format!("[\\{ancestor}]\n\n"));
                listed.push(ancestor);
            }
        }
        let key = parts.join("\\");
        out.push_str(&format!("[\\{key}]\n"));
        listed.push(key);
        for (name, value) in &edit.values {
            let name = if name.is_empty() {
                "@".to_string()
            } else {
                format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
            };
            let data = match value {
                RegValue::Dword(n) => format!("dword:{n:08x}"),
                other => {
                    let hex: Vec<String> =
                        other.bytes().iter().map(|b| format!("{b:02x}")).collect();
                    format!("hex({:x}):{}", other.type_number(), hex.join(","))
                }
            };
            out.push_str(&format!("{name}={data}\n"));
        }
        out.push('\n');
    }
    out
}

/// Parses `hivexsh`'s `lsval` output: one `"name"=data` line per value (`@` for the default
/// value), data as `"string"` (REG_SZ), `str(N):"string"`, `dword:XXXXXXXX`, `qword:…` or
/// `hex(N):xx,xx,…`.
pub fn parse_lsval(text: &str) -> Result<BTreeMap<String, RegValue>, String> {
    let mut values = BTreeMap::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let (name, rest) = if let Some(rest) = line.strip_prefix("@=") {
            (String::new(), rest)
        } else {
            let (name, rest) =
                parse_quoted(line).ok_or_else(|| format!("unexpected value line {line:?}"))?;
            let rest = rest
                .strip_prefix('=')
                .ok_or_else(|| format!("no '=' in value line {line:?}"))?;
            // hivexsh prints the default value's name as "@".
            (if name == "@" { String::new() } else { name }, rest)
        };
        let value = parse_data(rest).ok_or_else(|| format!("unexpected value data in {line:?}"))?;
        values.insert(name, value);
    }
    Ok(values)
}

/// A `"…"` string with `\"` and `\\` escapes at the start of `s`, and what follows it.
fn parse_quoted(s: &str) -> Option<(String, &str)> {
    let body = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            '"' => return Some((out, &body[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

fn parse_data(data: &str) -> Option<RegValue> {
    if data.starts_with('"') {
        let (s, rest) = parse_quoted(data)?;
        return rest.is_empty().then_some(RegValue::Sz(s));
    }
    if let Some(hex) = data.strip_prefix("dword:") {
        let hex = hex.trim_start_matches("0x");
        return u32::from_str_radix(hex, 16).ok().map(RegValue::Dword);
    }
    if let Some(rest) = data.strip_prefix("str(") {
        let (kind, rest) = rest.split_once("):")?;
        let kind: u32 = kind.parse().ok()?;
        let (s, tail) = parse_quoted(rest)?;
        if !tail.is_empty() {
            return None;
        }
        return Some(match kind {
            1 => RegValue::Sz(s),
            2 => RegValue::ExpandSz(s),
            other => RegValue::Other(other, utf16z(&s)),
        });
    }
    let (kind, hex) = if let Some(rest) = data.strip_prefix("hex(") {
        let (kind, hex) = rest.split_once("):")?;
        (u32::from_str_radix(kind, 16).ok()?, hex)
    } else if let Some(hex) = data.strip_prefix("hex:") {
        (3, hex)
    } else if let Some(hex) = data.strip_prefix("qword:") {
        let n = u64::from_str_radix(hex.trim_start_matches("0x"), 16).ok()?;
        return Some(RegValue::Other(11, n.to_le_bytes().to_vec()));
    } else {
        return None;
    };
    let bytes: Option<Vec<u8>> = hex
        .split(',')
        .filter(|b| !b.is_empty())
        .map(|b| u8::from_str_radix(b.trim(), 16).ok())
        .collect();
    Some(RegValue::from_bytes(kind, &bytes?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_their_bytes() {
        for value in [
            RegValue::Sz("SCSI miniport".into()),
            RegValue::ExpandSz(r"system32\drivers\viostor.sys".into()),
            RegValue::MultiSz(vec![r"C:\pagefile.sys".into(), "x".into()]),
            RegValue::Dword(0x10),
            RegValue::Binary(vec![1, 0xff, 0, 0]),
        ] {
            assert_eq!(
                RegValue::from_bytes(value.type_number(), &value.bytes()),
                value
            );
        }
        assert_eq!(RegValue::Sz("ab".into()).bytes(), [b'a', 0, b'b', 0, 0, 0]);
        assert_eq!(
            RegValue::MultiSz(vec!["a".into()]).bytes(),
            [b'a', 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn reg_file_lists_parents_first_and_types_exactly() {
        let text = reg_file(&[
            KeyEdit::new(
                r"ControlSet001\Services\viostor",
                vec![
                    ("Start", RegValue::Dword(0)),
                    ("Group", RegValue::Sz("SCSI".into())),
                ],
            ),
            KeyEdit::new(
                r"ControlSet001\Services\vioscsi",
                vec![("", RegValue::MultiSz(vec!["a".into()]))],
            ),
        ]);
        assert_eq!(
            text,
            "Windows Registry Editor Version 5.00\n\n\
             [\\ControlSet001]\n\n\
             [\\ControlSet001\\Services]\n\n\
             [\\ControlSet001\\Services\\viostor]\n\
             \"Start\"=dword:00000000\n\
             \"Group\"=hex(1):53,00,43,00,53,00,49,00,00,00\n\n\
             [\\ControlSet001\\Services\\vioscsi]\n\
             @=hex(7):61,00,00,00,00,00\n\n"
        );
    }

    #[test]
    fn parses_hivexsh_lsval() {
        // As hivexsh 1.3.23 prints them.
        let text = "\"PagingFiles\"=hex(7):44,00,3a,00,5c,00,70,00,00,00,00,00\n\
                    \"X\"=\"hello \\\"q\\\" \\\\ back\"\n\
                    \"E\"=str(2):\"%SystemRoot%\\\\inf\"\n\
                    \"B\"=hex(3):01,ff,00,00\n\
                    \"Start\"=dword:00000002\n\
                    \"@\"=\"def\"\n";
        let values = parse_lsval(text).unwrap();
        assert_eq!(
            values["PagingFiles"],
            RegValue::MultiSz(vec![r"D:\p".into()])
        );
        assert_eq!(values["X"], RegValue::Sz(r#"hello "q" \ back"#.into()));
        assert_eq!(values["E"], RegValue::ExpandSz(r"%SystemRoot%\inf".into()));
        assert_eq!(values["B"], RegValue::Binary(vec![1, 0xff, 0, 0]));
        assert_eq!(values["Start"], RegValue::Dword(2));
        assert_eq!(values[""], RegValue::Sz("def".into()));
        assert!(parse_lsval("garbage\n").is_err());
    }

    #[test]
    fn key_lookups_ignore_case() {
        let mut key = RegKey::default();
        key.values.insert("Start".into(), RegValue::Dword(2));
        key.subkeys.push("DriverDatabase".into());
        assert_eq!(key.value("START").and_then(RegValue::as_dword), Some(2));
        assert!(key.has_subkey("driverdatabase"));
        assert!(!key.has_subkey("Select"));
    }
}
