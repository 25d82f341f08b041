//! How reports write figures: durations in humantime's form, 0 as "unlimited".

use std::time::Duration;

pub fn unlimited(n: u32) -> String {
    if n == 0 {
        "unlimited".to_string()
    } else {
        n.to_string()
    }
}

pub fn human(d: Duration) -> String {
    if d.is_zero() {
        "0s".to_string()
    } else {
        humantime::format_duration(d).to_string()
    }
}
