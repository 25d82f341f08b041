//! Installing a runner whose adapters were built after start-up (see `daemon/late.rs`), and
//! carrying out what waited for it.

use drover_core::RunnerId;

use super::Driver;
use crate::daemon::late::{Built, Retry};
use crate::daemon::reload::Unbuilt;
use crate::daemon::runners::{self, Runner};
use crate::daemon::strays;

impl Driver {
    /// Runners a reload added (or changed while they waited) whose adapters could not be built:
    /// they wait, and their commands with them, while a task tries again, as at start-up.
    pub(super) fn wait_for_unbuilt(&mut self, unbuilt: Vec<Unbuilt>) {
        for Unbuilt {
            settings,
            short,
            error,
        } in unbuilt
        {
            let core = self.ledger.core();
            let Some(id) = core.state().runner_id(&settings.name) else {
                continue;
            };
            if self.runners.get(id).is_some() {
                continue;
            }
            let label = runners::label(&settings, &short);
            let retry = Retry {
                strays: strays::plan(core, id, &settings, &short, &label),
                settings,
                short,
                label,
                site: self.site.clone(),
                executor: self.executor.clone(),
            };
            self.late.start(id, retry, &error);
        }
    }

    /// The retry task built a runner's adapters: installed unless a reload did it first.
    pub(super) fn late_built(&mut self, built: Built) {
        if self.late.is_waiting(built.id) && self.runners.get(built.id).is_none() {
            self.runners.install(built.id, built.runner);
        }
        self.release_installed();
    }

    /// Waiting runners whose adapters a reload built: swept, then installed by
    /// [`Driver::late_built`].
    pub(super) fn sweep_then_install(&mut self, built: Vec<(String, Runner)>) {
        for (name, runner) in built {
            let core = self.ledger.core();
            let Some(id) = core.state().runner_id(&name) else {
                continue;
            };
            let plan = strays::plan(
                core,
                id,
                runner.settings(),
                &runner.context.short_token,
                &runner.label,
            );
            self.late
                .built_by_reload(id, runner, plan, self.executor.clone());
        }
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
