//! The behaviour every machine provider shows, as one suite each provider runs against a real
//! backend (cargo feature `testing`): the Docker engine for the `docker` provider, the fake
//! docker-machine for the `docker-machine` one, a cloud emulator for the next.
//!
//! [`run`] checks, in order: create and adopt by name; a restarted provider (a new instance)
//! lists the machine under this manager's prefix and reaches it; another manager's machines are
//! never listed under ours; a creation that failed midway is listed, not reachable, and removed by
//! name (or finished by a new `create`); a `remove` issued while a `create` runs waits and wins;
//! removal is idempotent (twice, and of a name never made). It panics, naming the step, on the
//! first difference.

use futures_util::future::BoxFuture;

use crate::{MachineProvider, ProviderErrorKind};

/// Makes a provider, as a newly started drover does.
pub type Factory = Box<dyn Fn() -> BoxFuture<'static, Box<dyn MachineProvider>> + Send + Sync>;

/// What the suite needs of a backend.
pub struct Setup {
    /// This manager's name prefix; no machine may have it yet. The suite names machines
    /// `<prefix>1`, `<prefix>2`...
    pub prefix: String,
    /// Another manager's prefix on the same backend (another runner token, or the same token with
    /// another `MachineName`); not a prefix of `prefix`, nor `prefix` of it.
    pub other_prefix: String,
    /// A provider of this manager.
    pub provider: Factory,
    /// A provider of the other manager.
    pub other: Factory,
    /// Makes a machine of this name half-created, the way a creation on this backend fails
    /// midway (the creation is expected to fail).
    pub half_create: Box<dyn Fn(String) -> BoxFuture<'static, ()> + Send + Sync>,
}

/// Runs the suite; see the module documentation.
pub async fn run(setup: &Setup) {
    let name = |n: u32| format!("{}{n}", setup.prefix);
    let p = (setup.provider)().await;
    assert_eq!(
        p.list(&setup.prefix).await.expect("list"),
        Vec::<String>::new(),
        "the suite needs a prefix no machine has"
    );

    // Create, and create again: the machine is adopted, not made twice.
    let created = p.create(&name(1)).await.expect("create");
    assert_eq!(created.machine.as_deref(), Some(name(1).as_str()));
    assert_eq!(p.create(&name(1)).await.expect("create again"), created);
    assert_eq!(p.endpoint(&name(1)).await.expect("endpoint"), created);

    // A restarted provider finds it under the prefix and reaches it.
    let restarted = (setup.provider)().await;
    assert_eq!(restarted.list(&setup.prefix).await.unwrap(), [name(1)]);
    assert_eq!(restarted.endpoint(&name(1)).await.unwrap(), created);

    // Another manager's machine is never listed as ours, nor ours as its.
    let other = (setup.other)().await;
    let foreign = format!("{}1", setup.other_prefix);
    other
        .create(&foreign)
        .await
        .expect("the other manager creates");
    assert_eq!(restarted.list(&setup.prefix).await.unwrap(), [name(1)]);
    assert_eq!(
        other.list(&setup.other_prefix).await.unwrap(),
        std::slice::from_ref(&foreign)
    );

    // A creation that failed midway: listed (so reconciliation finds it), not reachable, removed.
    (setup.half_create)(name(2)).await;
    let after_crash = (setup.provider)().await;
    assert_eq!(
        after_crash.list(&setup.prefix).await.unwrap(),
        [name(1), name(2)],
        "a half-created machine is listed"
    );
    let err = after_crash.endpoint(&name(2)).await.unwrap_err();
    assert!(
        matches!(
            err.kind,
            ProviderErrorKind::NotFound | ProviderErrorKind::Retryable
        ),
        "a half-created machine cannot be reached: {err}"
    );
    after_crash
        .remove(&name(2))
        .await
        .expect("remove half-made");
    assert_eq!(after_crash.list(&setup.prefix).await.unwrap(), [name(1)]);
    // ... or finished by a new creation of the same name.
    (setup.half_create)(name(3)).await;
    let finished = after_crash
        .create(&name(3))
        .await
        .expect("finish half-made");
    assert_eq!(after_crash.endpoint(&name(3)).await.unwrap(), finished);

    // A remove issued while a create of the same name runs waits for it, then removes.
    // (`join!` polls the create first: it holds the name before the remove asks.)
    let contested = name(4);
    let (made, removed) = tokio::join!(
        after_crash.create(&contested),
        after_crash.remove(&contested)
    );
    made.expect("create during remove");
    removed.expect("remove during create");
    assert_eq!(
        after_crash.list(&setup.prefix).await.unwrap(),
        [name(1), name(3)],
        "the remove came after the create"
    );

    // Removal is idempotent: twice, and of a name never made.
    for n in [1, 1, 3, 3, 99] {
        after_crash.remove(&name(n)).await.expect("remove");
    }
    assert!(after_crash.list(&setup.prefix).await.unwrap().is_empty());
    let err = after_crash.endpoint(&name(1)).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::NotFound, "{err}");

    // Our removals left the other manager's machine alone.
    assert_eq!(
        other.list(&setup.other_prefix).await.unwrap(),
        std::slice::from_ref(&foreign)
    );
    other
        .remove(&foreign)
        .await
        .expect("the other manager removes");
    for provider in [p, restarted, other, after_crash] {
        provider.shutdown().await;
    }
}
