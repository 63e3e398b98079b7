//! Parsing of memory sizes such as `512K`, `64M`, `2G`.

/// Parses a size in bytes: a decimal number with an optional `K`, `M`, `G` or
/// `T` suffix (powers of 1024, case-insensitive, an optional trailing `B` or
/// `iB`). Zero and overflowing values are refused.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!(
            "invalid size {text:?}: expected a number with an optional K, M or G suffix, e.g. 512K, 64M, 2G"
        ));
    }
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => {
            return Err(format!(
                "invalid size {text:?}: unknown suffix {suffix:?} (use K, M or G, e.g. 512K, 64M, 2G)"
            ));
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid size {text:?}: number too large"))?;
    if n == 0 {
        return Err(format!("invalid size {text:?}: must be greater than zero"));
    }
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("invalid size {text:?}: too large"))
}

/// Formats a byte count for log lines: `63.9M`, `512.0K`, `17B`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("T", 1 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ];
    for (unit, scale) in UNITS {
        if bytes >= scale {
            return format!("{:.1}{unit}", bytes as f64 / scale as f64);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn suffixes() {
        assert_eq!(parse_size("512K"), Ok(512 * 1024));
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("100"), Ok(100));
    }

    #[test]
    fn refuses_garbage() {
        for t in [
            "",
            "K",
            "-1M",
            "1.5G",
            "12X",
            "0",
            "0K",
            "99999999999999999999",
            "16777216T",
            "1 G G",
        ] {
            assert!(parse_size(t).is_err(), "{t:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC*") { let _ = parse_size(&s); }

        #[test]
        fn roundtrips_kib(n in 1u64..1_000_000) {
            prop_assert_eq!(parse_size(&format!("{n}K")), Ok(n * 1024));
        }
    }
}
