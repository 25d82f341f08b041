//! The one trait every machine provider implements, and what each call promises.

use drover_docker::MachineEndpoint;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use crate::ProviderError;

/// Creates, removes and lists build machines by name, and says how to reach a machine's Docker
/// engine.
///
/// The scheduling core names every machine (`runner-<short token>-<MachineName with %s replaced>`)
/// and journals the name before it asks for the machine, so a provider is driven by names alone:
///
/// - Every call is **idempotent by name**: replaying the journal after a crash issues the same
///   call again. `create` finishes a machine that exists in part, or adopts a complete one;
///   `remove` of an absent (or never heard of) name is `Ok`.
/// - Calls on one name are **serialised** (a `remove` during a `create` waits for it, then
///   removes), across every provider instance that shares a [`crate::NameLocks`] table, so a
///   reload that replaces a provider cannot race the old one.
/// - `list` reports **half-created machines** too (a creation that failed or was cut short by a
///   crash), so reconciliation can remove them, and nothing outside the prefix it is given: the
///   core passes this manager's own prefixes, and machines of another manager (another token or
///   another `MachineName`) are never reported, hence never removed as orphans.
/// - [`crate::conformance`] (cargo feature `testing`) checks all of the above against a real
///   backend; every provider runs it.
///
/// # A cloud instance group next
///
/// The trait is shaped so that an instance-group provider (an AWS Auto Scaling group reached over
/// SSH, as GitLab's fleeting plugins do) fits behind it; fleeting's calls map as follows:
///
/// | fleeting | here |
/// |---|---|
/// | `Init` | the provider's constructor (describe the group once, fail fast on a bad setup) |
/// | `Increase(1)` | `create(name)`: group instances are anonymous, so the provider first records "`name` is pending" in its own state, then raises the desired capacity, and binds the next new instance id to `name`; a crash between the two leaves a pending name that `list` reports and `remove` settles |
/// | `Update` | `list(prefix)`: every bound or pending name under the prefix (instances still `Pending` count as half-created) |
/// | `Decrease([id])` | `remove(name)`: terminate the bound instance, decrementing the capacity; an unbound or gone name is `Ok` |
/// | `ConnectInfo` + `Heartbeat` | `endpoint(name)`: the instance's address and credentials, dialled as a Docker endpoint for the executor (an SSH transport in `drover_docker::EngineConfig`); a failed heartbeat is `Retryable`, a gone instance `NotFound` |
/// | `Shutdown` | `shutdown()` |
pub trait MachineProvider: Send + Sync {
    /// Creates the machine, or finishes one that exists in part, or adopts a complete one, and
    /// returns how to reach its engine.
    fn create<'a>(&'a self, name: &'a str)
    -> BoxFuture<'a, Result<MachineEndpoint, ProviderError>>;

    /// Removes the machine and everything on it; an absent machine is `Ok`.
    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), ProviderError>>;

    /// The names of the machines (complete or not) whose names start with `prefix`, sorted.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, ProviderError>>;

    /// How to reach a complete machine's engine; `NotFound` if it is absent or incomplete.
    fn endpoint<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<MachineEndpoint, ProviderError>>;

    /// Ends what the provider runs on its own (child processes, plugin processes, connections)
    /// before drover exits. Machines stay as they are (the journal still knows them), unless the
    /// operator asked for them to go (the AWS provider's `delete_instances_on_shutdown`). Calls in
    /// flight may fail.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        async {}.boxed()
    }
}
