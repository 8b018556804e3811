//! Redaction of shared access signatures in any text that may be shown.
//!
//! A SAS URL's `sig=` parameter is a bearer secret. Well-formed URLs are redacted where they
//! are parsed, but a mistyped one (`https//…`, `HTTPS://…`, `ftp://…`, `…;sig=…`,
//! `…?sig%3D…`) is not a URL at all: it becomes a file name, and file names go into errors.
//! [`redact`] is applied wherever a path or URL enters an error (core's [`Error`] subject)
//! and by the command line on everything it prints as an error, so a signature cannot be
//! printed whatever shape the text has.
//!
//! [`Error`]: crate::Error

use std::borrow::Cow;

/// What replaces a signature.
pub const REDACTED: &str = "REDACTED";

/// Replaces the value of every `sig=` (or percent-encoded `sig%3D`, any case, anywhere in
/// the text) with `REDACTED`. A value ends at `&`, `;`, `#`, whitespace, a quote, `<`, `>`,
/// or a percent-encoded `&` (`%26`).
pub fn redact(text: &str) -> Cow<'_, str> {
    let lower = text.to_ascii_lowercase();
    if !lower.contains("sig=") && !lower.contains("sig%3d") {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &lower[i..];
        let key = if rest.starts_with("sig=") {
            4
        } else if rest.starts_with("sig%3d") {
            6
        } else {
            0
        };
        if key == 0 {
            // Copy one character (text is UTF-8; step over whole characters).
            let ch = text[i..].chars().next().expect("in bounds");
            out.push(ch);
            i += ch.len_utf8();
            continue;
        }
        out.push_str(&text[i..i + key]);
        i += key;
        let start = i;
        while i < bytes.len() {
            let b = bytes[i];
            if matches!(
                b,
                b'&' | b';' | b'#' | b'"' | b'\'' | b'<' | b'>' | b'`' | b':' | b',' | b')' | b']'
            ) || b.is_ascii_whitespace()
                || bytes[i..]
                    .get(..3)
                    .is_some_and(|b| b.eq_ignore_ascii_case(b"%26"))
            {
                break;
            }
            i += 1;
        }
        // Step back to a character boundary (a value is ASCII, but the text may not be).
        while !text.is_char_boundary(i) {
            i += 1;
        }
        if i > start {
            out.push_str(REDACTED);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signature_shape_is_redacted() {
        for (input, want) in [
            (
                "https://h/c/b?sv=1&sig=S3CR3T&se=2",
                "https://h/c/b?sv=1&sig=REDACTED&se=2",
            ),
            ("HTTPS://h/b?SIG=S3CR3T", "HTTPS://h/b?SIG=REDACTED"),
            (
                "https//h/b?sig=S3CR3T: not found",
                "https//h/b?sig=REDACTED: not found",
            ),
            ("ftp://h/b?sig=S3CR3T", "ftp://h/b?sig=REDACTED"),
            (
                "https://h/b?x=1;sig=S3CR3T;y=2",
                "https://h/b?x=1;sig=REDACTED;y=2",
            ),
            (
                "https://h/b?sig%3DS3CR3T%2B%3D%26se%3D1",
                "https://h/b?sig%3DREDACTED%26se%3D1",
            ),
            (
                "'a?sig=S3CR3T' and \"sig=T0P\"",
                "'a?sig=REDACTED' and \"sig=REDACTED\"",
            ),
            ("émoji?sig=S3CR3T→", "émoji?sig=REDACTED"),
            ("no secret here", "no secret here"),
            ("sig=", "sig="),
        ] {
            assert_eq!(redact(input), want, "{input}");
        }
    }
}
