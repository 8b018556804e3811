//! Integers of the file with their allowed range: a value outside it, or one too large for
//! its type, is refused with the key, the range and the value (`download.concurrency must be
//! 1–1024, got 0`), at its line and column, instead of serde's bare `invalid u16`.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};

/// The range of one key.
struct Ranged {
    key: &'static str,
    min: u64,
    max: u64,
}

impl Ranged {
    fn out_of_range<E: de::Error>(&self, got: impl fmt::Display) -> E {
        E::custom(format_args!(
            "{} must be {}–{}, got {got}",
            self.key, self.min, self.max
        ))
    }
}

impl Visitor<'_> for Ranged {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an integer from {} to {}", self.min, self.max)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        if (self.min..=self.max).contains(&v) {
            Ok(v)
        } else {
            Err(self.out_of_range(v))
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(self.out_of_range(v)),
        }
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<u64, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(self.out_of_range(v)),
        }
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<u64, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(self.out_of_range(v)),
        }
    }
}

fn ranged<'de, D: Deserializer<'de>>(
    d: D,
    key: &'static str,
    min: u64,
    max: u64,
) -> Result<u64, D::Error> {
    // `any`: the YAML scalar says what it is, so `-1` and `1e9` reach the visitor as numbers
    // and are answered with the range, and `lots` as a string with what was expected.
    d.deserialize_any(Ranged { key, min, max })
}

/// The ranges, one function per key (serde's `deserialize_with` takes a path, not
/// arguments). `$ty` is the field's type; every range fits in it.
macro_rules! keys {
    ($($(#[$doc:meta])* $name:ident: $ty:ty = $key:literal, $min:expr, $max:expr;)*) => {
        $(
            $(#[$doc])*
            pub(crate) fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                const { assert!($max as u128 <= <$ty>::MAX as u128) };
                ranged(d, $key, $min, $max).map(|v| v as $ty)
            }
        )*
        /// Every key with its range, for the docs test: `(key, min, max)`.
        #[cfg(test)]
        pub(crate) const ALL: &[(&str, u64, u64)] = &[$(($key, $min, $max)),*];
    };
}

keys! {
    /// Reads in flight per disk; as `convert --concurrency`.
    concurrency: u16 = "download.concurrency", 1, 1024;
    /// As `import --parallel-disks`.
    parallel_disks: u16 = "download.parallel_disks", 1, 256;
    /// As `import --parallel-vms`.
    parallel_vms: u16 = "download.parallel_vms", 1, 256;
    /// Guest fix-ups at once.
    parallel_fixups: u16 = "guest.parallel", 1, 64;
    max_connections_value: u16 = "download.max_connections", 1, 65_535;
    max_retries: u32 = "azure.retry.max_retries", 0, 100;
    timeout_secs: u64 = "azure.retry.timeout_secs", 0, 86_400;
    /// Azure's limits for a grant's `durationInSeconds` as we use them: 5 minutes to a day.
    grant_duration_secs: u32 = "export.grant_duration_secs", 300, 86_400;
    operation_timeout_secs: u64 = "export.operation_timeout_secs", 10, 86_400;
}

/// `download.max_connections` when present (the function of an `Option` field).
pub(crate) fn max_connections<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    max_connections_value(d).map(Some)
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    fn error(section: &str, key: &str, value: &str) -> String {
        let text = format!("azure:\n  subscription: s\n{section}:\n  {key}: {value}\n");
        parse(&text, "c.yaml").unwrap_err().0
    }

    #[test]
    fn out_of_range_values_say_key_range_and_value() {
        assert_eq!(
            error("download", "concurrency", "0"),
            "c.yaml:4:16: download.concurrency must be 1–1024, got 0"
        );
        // Larger than a u16: the range, not `invalid u16`.
        assert_eq!(
            error("download", "concurrency", "70000"),
            "c.yaml:4:16: download.concurrency must be 1–1024, got 70000"
        );
        assert_eq!(
            error("download", "parallel_vms", "-1"),
            "c.yaml:4:17: download.parallel_vms must be 1–256, got -1"
        );
        assert_eq!(
            error("export", "grant_duration_secs", "60"),
            "c.yaml:4:24: export.grant_duration_secs must be 300–86400, got 60"
        );
        let err = error("download", "max_connections", "0");
        assert!(
            err.ends_with("download.max_connections must be 1–65535, got 0"),
            "{err}"
        );
        let err = error("download", "concurrency", "lots");
        assert!(err.starts_with("c.yaml:4:"), "{err}");
        assert!(err.contains("an integer from 1 to 1024"), "{err}");
    }

    #[test]
    fn values_in_range_are_read() {
        let text = "azure:\n  subscription: s\n  retry: { max_retries: 0, timeout_secs: 0 }\ndownload: { concurrency: 1024, parallel_disks: 1, max_connections: 65535 }\n";
        let file = parse(text, "c.yaml").unwrap();
        assert_eq!(file.download.concurrency, 1024);
        assert_eq!(file.download.parallel_disks, 1);
        assert_eq!(file.download.max_connections, Some(65535));
        assert_eq!(file.azure.retry.max_retries, 0);
    }

    #[test]
    fn the_reference_states_every_range() {
        let doc = include_str!("../../docs/config.md");
        for (key, min, max) in super::ALL {
            let short = key.trim_start_matches("azure.");
            let row = doc
                .lines()
                .find(|l| l.starts_with(&format!("| `{short}` |")))
                .unwrap_or_else(|| panic!("docs/config.md has no row for {short}"));
            assert!(
                row.contains(&format!("{min}–{max}")),
                "docs/config.md's row for {key} must say {min}–{max}: {row}"
            );
        }
    }
}
