//! Installing a runner whose adapters were built after start-up (see `daemon/late.rs`), and
//! carrying out what waited for it.

use drover_core::RunnerId;

use super::Driver;
use crate::daemon::late::Built;

impl Driver {
    /// The retry task built a runner's adapters: installed unless a reload did it first.
    pub(super) fn late_built(&mut self, built: Built) {
        if self.late.is_waiting(built.id) && self.runners.get(built.id).is_none() {
            self.runners.install(built.id, built.runner);
        }
        self.release_installed();
    }

    /// Carries out what waited for each waiting runner that has adapters now.
    pub(super) fn release_installed(&mut self) {
        let runners = &self.runners;
        for id in self.late.installed(|id| runners.get(id).is_some()) {
            self.release(id);
        }
    }

    fn release(&mut self, id: RunnerId) {
        let (Some(released), Some(runner)) = (self.late.release(id), self.runners.get(id)) else {
            return;
        };
        let context = runner.context.clone();
        for job in released.jobs {
            self.jobs.adopt(job, context.clone());
        }
        for (job, why) in released.interrupted {
            self.jobs.report_interrupted(job, context.clone(), why);
        }
        self.execute_all(released.commands);
    }
}
