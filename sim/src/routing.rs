//! Which runner a job goes to: by `[shares]` for synthetic traffic, by the `runner` column of a trace.
//!
//! Jobs routed to a runner of the config file that `--runner` left out are dropped: the simulation
//! then sees that runner's share of the traffic only.

use drover_core::{Config, RunnerId};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::SimError;
use crate::workload::{Arrivals, Workload};

/// Resolved routing rules.
#[derive(Clone, Debug)]
pub struct Routing {
    /// Cumulative weights; `None` targets are runners left out of the simulation.
    shares: Vec<(f64, Option<RunnerId>)>,
    /// Per runner name of a trace.
    trace: Vec<Option<RunnerId>>,
}

impl Routing {
    /// Every job to one runner.
    #[cfg(test)]
    pub(crate) fn single(runner: RunnerId) -> Routing {
        Routing {
            shares: vec![(1.0, Some(runner))],
            trace: Vec::new(),
        }
    }

    /// Resolves the workload's runner names against the simulated config. `excluded` are runners of
    /// the config file that are not simulated.
    pub fn resolve(
        workload: &Workload,
        config: &Config,
        excluded: &[String],
    ) -> Result<Routing, SimError> {
        let lookup = |name: &str| -> Result<Option<RunnerId>, ()> {
            if let Some(i) = config.runners.iter().position(|r| r.name == name) {
                Ok(Some(RunnerId(i as u16)))
            } else if excluded.iter().any(|e| e == name) {
                Ok(None)
            } else {
                Err(())
            }
        };
        let known = || {
            config
                .runners
                .iter()
                .map(|r| r.name.clone())
                .chain(excluded.iter().cloned())
                .collect()
        };

        let mut shares = Vec::new();
        if workload.shares.is_empty() {
            if config.runners.len() == 1 {
                shares.push((1.0, Some(RunnerId(0))));
            }
        } else {
            let mut sum = 0.0;
            for (name, weight) in &workload.shares {
                let target = lookup(name).map_err(|()| SimError::UnknownShare {
                    at: workload
                        .shares_at
                        .clone()
                        .unwrap_or_else(|| workload.origin.display().to_string()),
                    name: name.clone(),
                    known: known(),
                })?;
                if *weight > 0.0 {
                    sum += weight;
                    shares.push((sum, target));
                }
            }
        }

        let mut trace = Vec::new();
        if let Arrivals::Trace(t) = &workload.arrivals {
            for (i, name) in t.runners.iter().enumerate() {
                let target = match lookup(name) {
                    Ok(target) => target,
                    Err(()) => {
                        // Only a runner that some row uses must exist.
                        let Some(row) = t.rows.iter().find(|r| r.runner == Some(i as u16)) else {
                            trace.push(None);
                            continue;
                        };
                        let at = if row.line > 0 {
                            format!("{}:{}", t.source.display(), row.line)
                        } else {
                            t.source.display().to_string()
                        };
                        return Err(SimError::UnknownTraceRunner {
                            at,
                            name: name.clone(),
                            known: known(),
                        });
                    }
                };
                trace.push(target);
            }
            let unrouted = t.rows.iter().find(|r| r.runner.is_none());
            if let (Some(row), true) = (unrouted, shares.is_empty()) {
                return Err(SimError::NeedRouting {
                    what: format!("{}:{} has no runner column", t.source.display(), row.line),
                    known: known(),
                });
            }
        } else if shares.is_empty() {
            return Err(SimError::NeedRouting {
                what: "the workload has no [shares]".into(),
                known: known(),
            });
        } else if shares.iter().all(|(_, target)| target.is_none()) {
            // Every synthetic job would be dropped: the run would never reach its job count.
            return Err(SimError::NoTraffic {
                runners: config.runners.iter().map(|r| r.name.clone()).collect(),
            });
        }
        Ok(Routing { shares, trace })
    }

    /// The fraction of synthetic jobs each runner gets (by index; left-out runners get none).
    pub(crate) fn fractions(&self, runners: usize) -> Vec<f64> {
        let mut out = vec![0.0; runners];
        let total = self.shares.last().map_or(0.0, |s| s.0);
        let mut prev = 0.0;
        for &(cumulative, target) in &self.shares {
            if let Some(r) = target
                && total > 0.0
                && let Some(slot) = out.get_mut(r.index())
            {
                *slot += (cumulative - prev) / total;
            }
            prev = cumulative;
        }
        out
    }

    /// The runner of a synthetic job (or of a trace row without a runner).
    pub(crate) fn synthetic(&self, rng: &mut ChaCha8Rng) -> Option<RunnerId> {
        match self.shares.as_slice() {
            [] => None,
            [(_, only)] => *only,
            all => {
                let total = all.last().map_or(0.0, |s| s.0);
                let u = rng.random::<f64>() * total;
                let i = all.partition_point(|s| s.0 <= u).min(all.len() - 1);
                all[i].1
            }
        }
    }

    /// The runner of a trace row.
    pub(crate) fn trace_runner(&self, name: Option<u16>, rng: &mut ChaCha8Rng) -> Option<RunnerId> {
        match name {
            Some(i) => self.trace.get(usize::from(i)).copied().flatten(),
            None => self.synthetic(rng),
        }
    }
}
