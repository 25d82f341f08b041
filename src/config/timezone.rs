//! GitLab's `Timezone = "Local"` (the default) resolved to a named zone, once, here: the core
//! must not read the OS, and a journal must replay the same on a machine in another zone.

use chrono_tz::Tz;

/// The local time zone as an IANA name, or why it could not be determined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalZone {
    Named(String),
    /// Not resolvable; periods in `Local` time are evaluated in UTC.
    Unknown {
        reason: String,
    },
}

impl LocalZone {
    /// The local zone as the process sees it: the `TZ` environment variable when it names a
    /// zone, else the system setting (`/etc/localtime`).
    pub fn detect() -> LocalZone {
        let tz = std::env::var("TZ").ok();
        LocalZone::resolve(
            tz.as_deref(),
            iana_time_zone::get_timezone().map_err(|e| e.to_string()),
        )
    }

    /// `tz`: the `TZ` variable if set; `system`: the OS setting.
    pub fn resolve(tz: Option<&str>, system: Result<String, String>) -> LocalZone {
        if let Some(tz) = tz
            .map(|t| t.trim_start_matches(':'))
            .filter(|t| !t.is_empty())
        {
            if let Some(name) = known(tz) {
                return LocalZone::Named(name);
            }
            // A POSIX rule such as `CET-1CEST` has no name; the system setting may.
            return match system.ok().and_then(|s| known(&s)) {
                Some(name) => LocalZone::Named(name),
                None => LocalZone::Unknown {
                    reason: format!("TZ={tz:?} is not an IANA zone name"),
                },
            };
        }
        match system {
            Ok(s) => match known(&s) {
                Some(name) => LocalZone::Named(name),
                None => LocalZone::Unknown {
                    reason: format!("the system zone {s:?} is unknown"),
                },
            },
            Err(e) => LocalZone::Unknown {
                reason: format!("the system zone is not set ({e})"),
            },
        }
    }

    /// The zone name to evaluate `Local` periods in.
    pub fn name(&self) -> &str {
        match self {
            LocalZone::Named(n) => n,
            LocalZone::Unknown { .. } => "UTC",
        }
    }
}

fn known(name: &str) -> Option<String> {
    // A TZ path such as `/usr/share/zoneinfo/Europe/Berlin` names its zone by its tail.
    let name = name.rsplit_once("zoneinfo/").map_or(name, |(_, tail)| tail);
    name.parse::<Tz>().ok().map(|tz| tz.name().to_string())
}

/// All zone names, for "did you mean" hints.
pub fn zone_names() -> impl Iterator<Item = &'static str> {
    chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tz_variable_wins_over_the_system() {
        let sys = || Ok("America/New_York".to_string());
        assert_eq!(
            LocalZone::resolve(Some("Europe/Berlin"), sys()).name(),
            "Europe/Berlin"
        );
        assert_eq!(
            LocalZone::resolve(Some(":Asia/Tokyo"), sys()).name(),
            "Asia/Tokyo"
        );
        assert_eq!(
            LocalZone::resolve(Some("/usr/share/zoneinfo/Europe/Paris"), sys()).name(),
            "Europe/Paris"
        );
        assert_eq!(LocalZone::resolve(None, sys()).name(), "America/New_York");
        assert_eq!(
            LocalZone::resolve(Some(""), sys()).name(),
            "America/New_York"
        );
    }

    #[test]
    fn unnamed_zones_fall_back_to_utc_with_a_reason() {
        let zone = LocalZone::resolve(Some("CET-1CEST"), Err("no /etc/localtime".into()));
        assert_eq!(zone.name(), "UTC");
        assert!(matches!(zone, LocalZone::Unknown { reason } if reason.contains("CET-1CEST")));
        // The system may still name the zone when TZ holds a POSIX rule.
        let zone = LocalZone::resolve(Some("CET-1CEST"), Ok("Europe/Berlin".into()));
        assert_eq!(zone, LocalZone::Named("Europe/Berlin".into()));
    }
}
