//! Number and duration formatting for people (`1,234,567`, `3m05s`, `12.3%`), shared by the
//! report, the workload summary and the overload verdict.

/// `0.1234` → `12.3%`.
pub fn percent(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// Thousands separators: `1234567` → `1,234,567`.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|g| std::str::from_utf8(g).unwrap_or(""))
        .collect();
    groups.join(",")
}

/// A duration for people: `0s`, `4.2s`, `3m05s`, `2h10m`, `3d4h`.
pub fn human_secs(secs: f64) -> String {
    if secs.is_nan() || secs <= 0.0 {
        return "0s".into();
    }
    if secs < 10.0 {
        return format!("{secs:.1}s");
    }
    let s = secs.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}
