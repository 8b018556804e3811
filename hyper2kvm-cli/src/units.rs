//! Byte sizes as people read them (`1.50 GiB`), and as they type them (the library's
//! `parse_size`: `64K`, `4MiB`, `2 TiB`).

pub use hyper2kvm::config::parse_size;

const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/// The binary unit `n` reads best in: its index in [`UNITS`].
fn unit_of(n: u64) -> usize {
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    unit
}

/// `n` in `unit`, with three significant digits (bytes as integers).
fn number_in(n: u64, unit: usize) -> String {
    if unit == 0 {
        return n.to_string();
    }
    let value = n as f64 / (1u64 << (10 * unit)) as f64;
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// `1.50 GiB`, `512 B`: binary units with three significant digits.
pub fn human_bytes(n: u64) -> String {
    let unit = unit_of(n);
    format!("{} {}", number_in(n, unit), UNITS[unit])
}

/// `12.3/40.0 GiB`: a part and its whole in the whole's unit.
pub fn bytes_of(done: u64, total: u64) -> String {
    let unit = unit_of(total.max(done));
    format!(
        "{}/{} {}",
        number_in(done, unit),
        number_in(total, unit),
        UNITS[unit]
    )
}

/// A duration left as people say it: `42s`, `5m`, `1h05m`, `2d03h`.
pub fn human_duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3_600 => format!("{}m", secs.div_ceil(60)),
        3_600..86_400 => format!("{}h{:02}m", secs / 3_600, secs % 3_600 / 60),
        _ => format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3_600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.50 KiB");
        assert_eq!(human_bytes(40 << 20), "40.0 MiB");
        assert_eq!(human_bytes(4 << 40), "4.00 TiB");
        assert_eq!(human_bytes(0), "0 B");
    }

    #[test]
    fn formats_a_part_of_a_whole() {
        assert_eq!(bytes_of(12_300 << 20, 40 << 30), "12.0/40.0 GiB");
        assert_eq!(bytes_of(0, 40 << 30), "0.00/40.0 GiB");
        assert_eq!(bytes_of(512 << 20, 1 << 30), "0.50/1.00 GiB");
        assert_eq!(bytes_of(100, 512), "100/512 B");
    }

    #[test]
    fn formats_durations() {
        assert_eq!(human_duration(0), "0s");
        assert_eq!(human_duration(59), "59s");
        assert_eq!(human_duration(61), "2m");
        assert_eq!(human_duration(300), "5m");
        assert_eq!(human_duration(3_900), "1h05m");
        assert_eq!(human_duration(2 * 86_400 + 3 * 3_600), "2d03h");
    }
}
