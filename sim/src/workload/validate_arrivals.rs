//! Validation of `[arrivals]`: Poisson, diurnal or a trace file, and batches.

use std::path::Path;
use std::sync::Arc;

use chrono_tz::Tz;
use drover_core::Timestamp;
use toml::Spanned;

use super::raw::RawArrivals;
use super::validate::{Result, Validator};
use super::{Arrivals, Batch};
use crate::parse::WorkloadError;
use crate::trace;
impl Validator<'_> {
    pub(super) fn arrivals(&self, raw: RawArrivals, start: Timestamp) -> Result<Arrivals> {
        let kind = raw.kind.get_ref().as_str();
        let allowed: &[&str] = match kind {
            "poisson" => &["rate_per_min", "batch"],
            "diurnal" => &["hourly", "weekend_factor", "timezone", "batch"],
            "trace" => &["file"],
            other => {
                return self.err(
                    &raw.kind.span(),
                    format!("arrivals kind = {other:?} is not an arrival process"),
                    Some("use \"poisson\", \"diurnal\" or \"trace\""),
                );
            }
        };
        let present = [
            ("rate_per_min", raw.rate_per_min.as_ref().map(Spanned::span)),
            ("hourly", raw.hourly.as_ref().map(Spanned::span)),
            (
                "weekend_factor",
                raw.weekend_factor.as_ref().map(Spanned::span),
            ),
            ("timezone", raw.timezone.as_ref().map(Spanned::span)),
            ("file", raw.file.as_ref().map(Spanned::span)),
            ("batch", raw.batch.as_ref().map(Spanned::span)),
        ];
        for (field, span) in present {
            if let Some(span) = span
                && !allowed.contains(&field)
            {
                return self.err(
                    &span,
                    format!("`{field}` does not apply to arrivals kind = {kind:?}"),
                    Some(&format!("kind = {kind:?} takes {}", allowed.join(", "))),
                );
            }
        }
        let batch = match &raw.batch {
            None => Batch::ONE,
            Some(v) => self.batch(v)?,
        };
        match kind {
            "poisson" => {
                let Some(rate) = &raw.rate_per_min else {
                    return self.err(
                        &raw.kind.span(),
                        "poisson arrivals need `rate_per_min`",
                        Some("rate_per_min = 10.0"),
                    );
                };
                if !(*rate.get_ref() > 0.0 && rate.get_ref().is_finite()) {
                    return self.err(
                        &rate.span(),
                        "rate_per_min must be a finite number > 0",
                        None,
                    );
                }
                Ok(Arrivals::Poisson {
                    rate_per_min: *rate.get_ref(),
                    batch,
                })
            }
            "diurnal" => {
                let Some(hourly) = &raw.hourly else {
                    return self.err(
                        &raw.kind.span(),
                        "diurnal arrivals need `hourly`: 24 rates per minute, one for each hour of the day",
                        None,
                    );
                };
                let rates: [f64; 24] = match <[f64; 24]>::try_from(hourly.get_ref().as_slice()) {
                    Ok(r) => r,
                    Err(_) => {
                        return self.err(
                            &hourly.span(),
                            format!(
                                "hourly has {} rates; it needs 24 (hours 0 to 23)",
                                hourly.get_ref().len()
                            ),
                            None,
                        );
                    }
                };
                if rates.iter().any(|r| !(*r >= 0.0 && r.is_finite()))
                    || rates.iter().all(|r| *r == 0.0)
                {
                    return self.err(
                        &hourly.span(),
                        "hourly rates must be finite, ≥ 0 and not all 0",
                        None,
                    );
                }
                let weekend_factor = match &raw.weekend_factor {
                    Some(w) if !(*w.get_ref() >= 0.0 && w.get_ref().is_finite()) => {
                        return self.err(
                            &w.span(),
                            "weekend_factor must be a finite number ≥ 0",
                            None,
                        );
                    }
                    Some(w) => *w.get_ref(),
                    None => 1.0,
                };
                let timezone = match &raw.timezone {
                    None => Tz::UTC,
                    Some(t) => match t.get_ref().parse::<Tz>() {
                        Ok(tz) => tz,
                        Err(_) => {
                            return self.err(
                                &t.span(),
                                format!("unknown time zone {:?}", t.get_ref()),
                                Some("use an IANA name such as \"Europe/Berlin\" or \"UTC\""),
                            );
                        }
                    },
                };
                Ok(Arrivals::Diurnal {
                    hourly_per_min: rates,
                    weekend_factor,
                    timezone,
                    batch,
                })
            }
            _ => {
                let Some(file) = &raw.file else {
                    return self.err(
                        &raw.kind.span(),
                        "trace arrivals need `file`",
                        Some("file = \"trace.csv\""),
                    );
                };
                let base = self.origin.parent().unwrap_or(Path::new(""));
                let path = base.join(file.get_ref());
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    WorkloadError::at(
                        self.origin,
                        self.text,
                        file.span(),
                        format!("cannot read trace file {}: {e}", path.display()),
                        Some("a relative path is resolved from the workload file's folder"),
                    )
                })?;
                let trace = trace::parse_csv(&text, &path, start)?;
                if trace.rows.is_empty() {
                    return self.err(
                        &file.span(),
                        format!("trace file {} has no rows", path.display()),
                        None,
                    );
                }
                Ok(Arrivals::Trace(Arc::new(trace)))
            }
        }
    }

    pub(super) fn batch(&self, v: &Spanned<toml::Value>) -> Result<Batch> {
        let bad = || {
            self.err(
                &v.span(),
                "batch must be a number of jobs per arrival (≥ 1) or a range [min, max]",
                Some("batch = 4, or batch = [2, 8] for 2 to 8 jobs per arrival"),
            )
        };
        let int = |x: &toml::Value| {
            x.as_integer()
                .filter(|n| (1..=i64::from(u16::MAX)).contains(n))
                .map(|n| n as u32)
        };
        match v.get_ref() {
            toml::Value::Integer(_) => match int(v.get_ref()) {
                Some(n) => Ok(Batch { min: n, max: n }),
                None => bad(),
            },
            toml::Value::Array(a) if a.len() == 2 => match (int(&a[0]), int(&a[1])) {
                (Some(min), Some(max)) if min <= max => Ok(Batch { min, max }),
                _ => bad(),
            },
            _ => bad(),
        }
    }
}
