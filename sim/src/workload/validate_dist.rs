//! Validation of a distribution table (`[duration]`, `[boot]`, `[removal]`).

use toml::Spanned;

use super::raw::RawDist;
use super::validate::{Result, Validator};
use crate::dist::Dist;
impl Validator<'_> {
    /// A distribution table; the failure rate is allowed only where `with_failures`.
    pub(super) fn dist(
        &self,
        raw: Spanned<RawDist>,
        table: &str,
        with_failures: bool,
    ) -> Result<(Dist, f64)> {
        let span = raw.span();
        let raw = raw.into_inner();
        let kind = raw.kind.get_ref().as_str();
        let allowed: &[&str] = match kind {
            "constant" => &["value"],
            "exponential" => &["mean"],
            "lognormal" => &["median", "p95", "mean", "stddev"],
            "uniform" => &["min", "max"],
            "empirical" => &["values", "weights"],
            other => {
                return self.err(
                    &raw.kind.span(),
                    format!("[{table}] kind = {other:?} is not a distribution"),
                    Some("use \"constant\", \"exponential\", \"lognormal\", \"uniform\" or \"empirical\""),
                );
            }
        };
        let takes = format!("kind = {kind:?} takes {}", allowed.join(", "));
        let present = [
            ("value", raw.value.as_ref().map(Spanned::span)),
            ("mean", raw.mean.as_ref().map(Spanned::span)),
            ("median", raw.median.as_ref().map(Spanned::span)),
            ("p95", raw.p95.as_ref().map(Spanned::span)),
            ("stddev", raw.stddev.as_ref().map(Spanned::span)),
            ("min", raw.min.as_ref().map(Spanned::span)),
            ("max", raw.max.as_ref().map(Spanned::span)),
            ("values", raw.values.as_ref().map(Spanned::span)),
            ("weights", raw.weights.as_ref().map(Spanned::span)),
        ];
        for (field, s) in present {
            if let Some(s) = s
                && !allowed.contains(&field)
            {
                return self.err(
                    &s,
                    format!("`{field}` does not apply to [{table}] kind = {kind:?}"),
                    Some(&takes),
                );
            }
        }
        let failure_rate = match &raw.failure_rate {
            Some(f) if !with_failures => {
                return self.err(
                    &f.span(),
                    format!("[{table}] has no failure_rate"),
                    Some("failure_rate applies to [boot] and [removal]"),
                );
            }
            f => self.probability(f.as_ref(), "failure_rate")?,
        };
        let need = |v: &Option<Spanned<toml::Value>>, field: &str| -> Result<f64> {
            match v {
                Some(v) => Ok(self.duration(v, field)? as f64),
                None => self.err(
                    &span,
                    format!("[{table}] kind = {kind:?} needs `{field}`"),
                    Some(&takes),
                ),
            }
        };
        let positive = |v: &Option<Spanned<toml::Value>>, field: &str| -> Result<f64> {
            let x = need(v, field)?;
            if x <= 0.0 {
                let s = v.as_ref().map_or(span.clone(), Spanned::span);
                return self.err(&s, format!("`{field}` must be longer than 0s"), None);
            }
            Ok(x)
        };
        let dist = match kind {
            "constant" => Dist::Constant {
                ms: need(&raw.value, "value")?,
            },
            "exponential" => Dist::Exponential {
                mean_ms: positive(&raw.mean, "mean")?,
            },
            "lognormal" => match (&raw.median, &raw.p95, &raw.mean, &raw.stddev) {
                (Some(_), Some(_), None, None) => {
                    let (median, p95) =
                        (positive(&raw.median, "median")?, positive(&raw.p95, "p95")?);
                    if p95 < median {
                        let s = raw.p95.as_ref().map_or(span.clone(), Spanned::span);
                        return self.err(&s, "p95 must not be shorter than median", None);
                    }
                    Dist::lognormal_median_p95(median, p95)
                }
                (None, None, Some(_), Some(_)) => Dist::lognormal_mean_stddev(
                    positive(&raw.mean, "mean")?,
                    positive(&raw.stddev, "stddev")?,
                ),
                _ => {
                    return self.err(
                        &span,
                        format!("[{table}] kind = \"lognormal\" needs either median and p95, or mean and stddev"),
                        Some("median = \"3m\" and p95 = \"20m\", for example"),
                    );
                }
            },
            "uniform" => {
                let (min, max) = (need(&raw.min, "min")?, need(&raw.max, "max")?);
                if max < min {
                    let s = raw.max.as_ref().map_or(span.clone(), Spanned::span);
                    return self.err(&s, "max must not be shorter than min", None);
                }
                Dist::Uniform {
                    min_ms: min,
                    max_ms: max,
                }
            }
            _ => {
                let Some(values) = &raw.values else {
                    return self.err(
                        &span,
                        format!("[{table}] kind = \"empirical\" needs `values`"),
                        Some("values = [\"1m\", \"3m\", \"10m\"]"),
                    );
                };
                if values.get_ref().is_empty() {
                    return self.err(&values.span(), "values must not be empty", None);
                }
                let ms: Vec<f64> = values
                    .get_ref()
                    .iter()
                    .map(|v| self.duration(v, "values").map(|d| d as f64))
                    .collect::<Result<_>>()?;
                if let Some(w) = &raw.weights {
                    let w_ok = w.get_ref().iter().all(|x| *x >= 0.0 && x.is_finite())
                        && w.get_ref().iter().any(|x| *x > 0.0);
                    if w.get_ref().len() != ms.len() || !w_ok {
                        return self.err(
                            &w.span(),
                            format!(
                                "weights must be {} finite numbers ≥ 0, not all 0 (one per value)",
                                ms.len()
                            ),
                            None,
                        );
                    }
                }
                Dist::empirical(ms, raw.weights.as_ref().map(|w| w.get_ref().as_slice()))
            }
        };
        Ok((dist, failure_rate))
    }
}
