//! Sampling distributions for job durations, boot and removal times.
//!
//! Transcendental functions come from the pure-Rust `libm` crate, not from `f64::ln`/`f64::exp`:
//! std documents their precision as platform-dependent, and a one-ulp difference in one sample
//! could change a rounded millisecond and so break byte-identical results across machines.

use rand::Rng;

/// A distribution of non-negative durations, in milliseconds.
#[derive(Clone, Debug, PartialEq)]
pub enum Dist {
    Constant {
        ms: f64,
    },
    Exponential {
        mean_ms: f64,
    },
    /// `exp(N(mu, sigma²))`, with `mu` the log of the median in milliseconds.
    LogNormal {
        mu: f64,
        sigma: f64,
    },
    Uniform {
        min_ms: f64,
        max_ms: f64,
    },
    /// Values drawn with the given weights; `cumulative` is the running sum of the weights.
    Empirical {
        values_ms: Vec<f64>,
        cumulative: Vec<f64>,
    },
}

/// The z-score of the 95th percentile of the standard normal distribution.
pub const Z95: f64 = 1.644_853_626_951_472_2;

impl Dist {
    /// A log-normal distribution through a median and a 95th percentile.
    pub fn lognormal_median_p95(median_ms: f64, p95_ms: f64) -> Dist {
        let mu = libm::log(median_ms);
        Dist::LogNormal {
            mu,
            sigma: (libm::log(p95_ms) - mu) / Z95,
        }
    }

    /// A log-normal distribution with the given mean and standard deviation.
    pub fn lognormal_mean_stddev(mean_ms: f64, stddev_ms: f64) -> Dist {
        let var = libm::log1p((stddev_ms / mean_ms) * (stddev_ms / mean_ms));
        Dist::LogNormal {
            mu: libm::log(mean_ms) - var / 2.0,
            sigma: libm::sqrt(var),
        }
    }

    /// Equal weights unless `weights` is given (same length, non-negative, not all zero: the
    /// workload parser checks that).
    pub fn empirical(values_ms: Vec<f64>, weights: Option<&[f64]>) -> Dist {
        let mut sum = 0.0;
        let cumulative = (0..values_ms.len())
            .map(|i| {
                sum += weights.map_or(1.0, |w| w[i]);
                sum
            })
            .collect();
        Dist::Empirical {
            values_ms,
            cumulative,
        }
    }

    /// One sample, in whole milliseconds.
    pub fn sample_ms<R: Rng>(&self, rng: &mut R) -> u64 {
        let x = match self {
            Dist::Constant { ms } => *ms,
            Dist::Exponential { mean_ms } => exponential(rng, *mean_ms),
            Dist::LogNormal { mu, sigma } => libm::exp(mu + sigma * standard_normal(rng)),
            Dist::Uniform { min_ms, max_ms } => min_ms + (max_ms - min_ms) * rng.random::<f64>(),
            Dist::Empirical {
                values_ms,
                cumulative,
            } => {
                let total = cumulative.last().copied().unwrap_or(0.0);
                let u = rng.random::<f64>() * total;
                let i = cumulative
                    .partition_point(|&c| c <= u)
                    .min(values_ms.len().saturating_sub(1));
                values_ms.get(i).copied().unwrap_or(0.0)
            }
        };
        to_ms(x)
    }

    /// The distribution's mean in milliseconds (for reports and tests).
    pub fn mean_ms(&self) -> f64 {
        match self {
            Dist::Constant { ms } => *ms,
            Dist::Exponential { mean_ms } => *mean_ms,
            Dist::LogNormal { mu, sigma } => libm::exp(mu + sigma * sigma / 2.0),
            Dist::Uniform { min_ms, max_ms } => (min_ms + max_ms) / 2.0,
            Dist::Empirical {
                values_ms,
                cumulative,
            } => {
                let total = cumulative.last().copied().unwrap_or(0.0);
                if total <= 0.0 {
                    return 0.0;
                }
                let mut prev = 0.0;
                let mut sum = 0.0;
                for (v, c) in values_ms.iter().zip(cumulative) {
                    sum += v * (c - prev);
                    prev = *c;
                }
                sum / total
            }
        }
    }
}

/// An exponential variate by inversion; `1 - u` lies in (0, 1], so the log is finite.
pub fn exponential<R: Rng>(rng: &mut R, mean: f64) -> f64 {
    -mean * libm::log(1.0 - rng.random::<f64>())
}

/// A standard normal variate (Box–Muller, one of the pair).
fn standard_normal<R: Rng>(rng: &mut R) -> f64 {
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    libm::sqrt(-2.0 * libm::log(u1)) * libm::cos(std::f64::consts::TAU * u2)
}

/// Rounds a sampled duration to whole milliseconds; negative or NaN samples become 0.
fn to_ms(x: f64) -> u64 {
    if x.is_nan() || x <= 0.0 {
        0
    } else if x >= u64::MAX as f64 {
        u64::MAX
    } else {
        libm::round(x) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn mean_of(d: &Dist, n: usize) -> f64 {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        (0..n).map(|_| d.sample_ms(&mut rng) as f64).sum::<f64>() / n as f64
    }

    #[test]
    fn sample_means_match_the_distribution_means() {
        // n = 200k: the standard error of a sample mean is sd/sqrt(n) ≈ sd/447; 5 standard errors
        // is a tolerance no correct sampler misses with these fixed seeds.
        let n = 200_000;
        let cases = [
            (Dist::Exponential { mean_ms: 300_000.0 }, 300_000.0),
            (Dist::lognormal_mean_stddev(300_000.0, 150_000.0), 150_000.0),
            (
                Dist::Uniform {
                    min_ms: 1_000.0,
                    max_ms: 9_000.0,
                },
                8_000.0 / 12f64.sqrt(),
            ),
            (
                Dist::empirical(vec![1_000.0, 5_000.0], Some(&[3.0, 1.0])),
                1_732.05,
            ),
        ];
        for (d, sd) in cases {
            let m = mean_of(&d, n);
            let tol = 5.0 * sd / (n as f64).sqrt() + 0.5;
            assert!(
                (m - d.mean_ms()).abs() < tol,
                "{d:?}: sample mean {m}, expected {}",
                d.mean_ms()
            );
        }
    }

    #[test]
    fn lognormal_through_median_and_p95() {
        let d = Dist::lognormal_median_p95(60_000.0, 600_000.0);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut xs: Vec<u64> = (0..100_000).map(|_| d.sample_ms(&mut rng)).collect();
        xs.sort_unstable();
        let median = xs[50_000] as f64;
        let p95 = xs[95_000] as f64;
        assert!((median / 60_000.0 - 1.0).abs() < 0.03, "median {median}");
        assert!((p95 / 600_000.0 - 1.0).abs() < 0.05, "p95 {p95}");
    }

    #[test]
    fn constants_and_edges() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(Dist::Constant { ms: 90_000.0 }.sample_ms(&mut rng), 90_000);
        assert_eq!(Dist::Constant { ms: -5.0 }.sample_ms(&mut rng), 0);
        let single = Dist::empirical(vec![42.0], None);
        assert!((0..100).all(|_| single.sample_ms(&mut rng) == 42));
    }
}
