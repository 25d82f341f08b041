//! The recovery table, row by row: what a restarted drover does with a job by the phase its
//! journal ends in, and how the containers on its machine decide between re-attaching and
//! starting it.

use std::time::Duration;

use drover_core::{FailureReason, Outcome};
use drover_lifecycle::{
    AcceptAnswer, Action, Cursor, Event, FinalAnswer, FinalTrace, Job, Note, Phase, Policy, Record,
};

const P: Policy = Policy::DEFAULT;

fn received() -> Event {
    Event::Received {
        runner: "linux".into(),
        label: "runner-abcd".into(),
        held: true,
    }
}

fn accepted() -> Event {
    Event::AcceptAnswered(AcceptAnswer::Accepted {
        cancel_requested: false,
    })
}

fn stored(len: u64, step: u16, messages: u64) -> Event {
    Event::TraceStored {
        len,
        cursor: Cursor { step, messages },
        checkpoint: None,
    }
}

/// The job after `events`, through its journal as a restart reads it, then `Restarted`.
fn restart(events: &[Event]) -> (Job, Vec<Action>) {
    let records: Vec<Record> = events.iter().cloned().map(Record::Event).collect();
    // The journal survives serialisation (it is a file of JSON lines).
    let text: Vec<String> = records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect();
    let records: Vec<Record> = text
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut job = Job::replay(&records, &P).expect("a record");
    let actions = job.handle(Event::Restarted, &P);
    (job, actions)
}

const SUCCESS: Outcome = Outcome::Success;

#[test]
fn an_unacknowledged_job_is_acknowledged_again_at_once() {
    let (job, actions) = restart(&[received(), Event::AcceptAnswered(AcceptAnswer::Failed)]);
    assert_eq!(job.phase, Phase::Received { attempts: 0 });
    assert_eq!(
        actions,
        [Action::Accept {
            after: Duration::ZERO
        }]
    );
}

#[test]
fn an_accepted_job_waits_for_the_core_and_starts_when_placed() {
    let (mut job, actions) = restart(&[received(), accepted()]);
    assert_eq!(
        actions,
        [Action::KeepAlive {
            every: P.keep_alive_every
        }]
    );
    assert_eq!(
        job.handle(Event::Placed, &P),
        [Action::Start { again: false }]
    );
}

#[test]
fn a_job_whose_script_never_started_is_started_when_no_step_container_exists() {
    // Placed, the preparation's lines stored (the first step's cursor, no message), then the crash.
    let (mut job, actions) = restart(&[received(), accepted(), Event::Placed, stored(80, 0, 0)]);
    assert_eq!(actions, []);
    assert_eq!(job.handle(Event::Placed, &P), [Action::Inspect]);
    assert_eq!(
        job.handle(Event::ContainersListed { steps: false }, &P),
        [Action::Start { again: true }]
    );
    assert_eq!(job.phase, Phase::Preparing);
    assert_eq!(
        job.trace.len, 80,
        "the trace continues after what is stored"
    );
}

#[test]
fn a_job_whose_step_container_exists_is_reattached_never_started_again() {
    let (mut job, _) = restart(&[received(), accepted(), Event::Placed, stored(80, 0, 0)]);
    let _ = job.handle(Event::Placed, &P);
    assert_eq!(
        job.handle(Event::ContainersListed { steps: true }, &P),
        [Action::Reattach]
    );
}

#[test]
fn a_job_with_stored_step_output_is_reattached_even_when_its_containers_are_gone() {
    // Its script ran: running it again could run a step twice. The executor fails it instead.
    let (mut job, _) = restart(&[received(), accepted(), Event::Placed, stored(120, 0, 3)]);
    assert_eq!(job.phase, Phase::Running);
    let _ = job.handle(Event::Placed, &P);
    assert_eq!(
        job.handle(Event::ContainersListed { steps: false }, &P),
        [Action::Reattach]
    );
    assert_eq!(
        job.trace.cursor,
        Some(Cursor {
            step: 0,
            messages: 3
        })
    );
}

#[test]
fn an_ended_job_has_its_containers_removed_then_reports_its_outcome() {
    let history = [
        received(),
        accepted(),
        Event::Placed,
        stored(120, 1, 3),
        Event::StepsEnded { outcome: SUCCESS },
    ];
    let (mut job, actions) = restart(&history);
    assert_eq!(actions, []);
    assert_eq!(job.handle(Event::Placed, &P), [Action::RemoveContainers]);
    assert_eq!(
        job.handle(Event::ContainersRemoved, &P),
        [Action::SendFinal {
            outcome: SUCCESS,
            trace: FinalTrace::Stored
        }]
    );
}

#[test]
fn a_final_update_in_flight_is_checked_before_it_is_sent_again() {
    let history = [
        received(),
        accepted(),
        Event::Placed,
        Event::StepsEnded { outcome: SUCCESS },
        Event::ContainersRemoved,
    ];
    let (mut job, actions) = restart(&history);
    assert_eq!(actions, [Action::CheckClosed]);
    let mut again = job.clone();
    assert_eq!(
        job.handle(Event::ClosedAnswered { closed: true }, &P),
        [Action::Tell(Note::Finished(SUCCESS))]
    );
    assert_eq!(
        again.handle(Event::ClosedAnswered { closed: false }, &P),
        [Action::SendFinal {
            outcome: SUCCESS,
            trace: FinalTrace::Stored
        }]
    );
}

#[test]
fn a_reported_job_only_tells_the_core() {
    let history = [
        received(),
        accepted(),
        Event::Placed,
        Event::StepsEnded { outcome: SUCCESS },
        Event::ContainersRemoved,
        Event::FinalAnswered(FinalAnswer::Accepted),
    ];
    let (_, actions) = restart(&history);
    assert_eq!(actions, [Action::Tell(Note::Finished(SUCCESS))]);
}

#[test]
fn a_failure_report_cut_short_is_repeated_with_the_same_text() {
    let fail = Event::Fail {
        reason: FailureReason::RunnerSystemFailure,
        text: "no machine".into(),
    };
    let (mut job, actions) = restart(&[received(), accepted(), fail]);
    assert_eq!(actions, [Action::CheckClosed]);
    let outcome = Outcome::Failed {
        reason: FailureReason::RunnerSystemFailure,
        exit_code: None,
    };
    assert_eq!(
        job.handle(Event::ClosedAnswered { closed: false }, &P),
        [Action::SendFinal {
            outcome,
            trace: FinalTrace::Unstarted(Some("no machine".into()))
        }]
    );
    // The core forgot it when it failed it: the record goes.
    assert_eq!(
        job.handle(Event::FinalAnswered(FinalAnswer::Accepted), &P),
        [Action::Discard]
    );
}

#[test]
fn accept_attempts_follow_the_policy_then_the_job_is_given_back() {
    let mut job = Job::new();
    let mut waits = vec![];
    let mut actions = job.handle(received(), &P);
    for _ in 0..P.accept_attempts {
        match actions.as_slice() {
            [Action::Accept { after }] => waits.push(after.as_secs()),
            other => panic!("{other:?}"),
        }
        actions = job.handle(Event::AcceptAnswered(AcceptAnswer::Failed), &P);
    }
    assert_eq!(waits, [0, 1, 2, 4, 8, 16]);
    assert_eq!(actions, [Action::Tell(Note::Canceled)]);
    assert_eq!(job.phase, Phase::Dropped);
}

fn running() -> Vec<Event> {
    vec![received(), accepted(), Event::Placed, stored(20, 0, 1)]
}

#[test]
fn a_cancel_of_the_core_survives_a_restart_and_is_sent_again_after_reattaching() {
    let mut events = running();
    events.push(Event::Cancel);
    let (mut job, _) = restart(&events);
    let _ = job.handle(Event::Placed, &P);
    let actions = job.handle(Event::ContainersListed { steps: true }, &P);
    assert_eq!(actions, [Action::Reattach, Action::Cancel]);
    // The script finished before the cancel reached it: the job still ends canceled.
    let _ = job.handle(Event::StepsEnded { outcome: SUCCESS }, &P);
    assert_eq!(
        job.phase,
        Phase::Ended {
            outcome: Outcome::Canceled
        }
    );
}

#[test]
fn an_abort_of_the_core_survives_a_restart() {
    let mut events = running();
    events.push(Event::Abort {
        reason: FailureReason::RunnerSystemFailure,
    });
    let (mut job, _) = restart(&events);
    let _ = job.handle(Event::Placed, &P);
    let actions = job.handle(Event::ContainersListed { steps: true }, &P);
    assert_eq!(
        actions,
        [
            Action::Reattach,
            Action::Abort(FailureReason::RunnerSystemFailure)
        ]
    );
}

#[test]
fn a_job_canceled_while_preparing_is_not_started_again_after_a_restart() {
    let (mut job, _) = restart(&[received(), accepted(), Event::Placed, Event::Cancel]);
    let _ = job.handle(Event::Placed, &P);
    let actions = job.handle(Event::ContainersListed { steps: false }, &P);
    assert_eq!(actions, [Action::RemoveContainers]);
    let actions = job.handle(Event::ContainersRemoved, &P);
    assert_eq!(
        actions,
        [Action::SendFinal {
            outcome: Outcome::Canceled,
            trace: FinalTrace::Stored
        }]
    );
}

#[test]
fn a_job_gitlab_ended_while_it_ran_is_aborted_again_after_a_restart_and_not_reported() {
    let mut events = running();
    events.push(Event::RemoteEnded);
    let (mut job, _) = restart(&events);
    let _ = job.handle(Event::Placed, &P);
    let actions = job.handle(Event::ContainersListed { steps: true }, &P);
    assert_eq!(
        actions,
        [Action::Reattach, Action::Abort(FailureReason::JobCanceled)]
    );
}

#[test]
fn a_lost_machine_ends_the_job_through_removing_its_containers() {
    let mut job = Job::replay(
        &running().into_iter().map(Record::Event).collect::<Vec<_>>(),
        &P,
    )
    .unwrap();
    let lost = Outcome::Failed {
        reason: FailureReason::RunnerSystemFailure,
        exit_code: None,
    };
    // Its containers may still run on the machine the core reuses: they go first.
    assert_eq!(
        job.handle(Event::MachineLost, &P),
        [Action::RemoveContainers]
    );
    assert_eq!(job.phase, Phase::Ended { outcome: lost });
    assert_eq!(
        job.handle(Event::ContainersRemoved, &P),
        [Action::SendFinal {
            outcome: lost,
            trace: FinalTrace::Stored
        }]
    );
}
