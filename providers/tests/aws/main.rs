//! The AWS group client against moto: the ASG contract drover keeps (SetDesiredCapacity capped at
//! MaxSize, DescribeAutoScalingGroups, TerminateInstanceInAutoScalingGroup with decrement,
//! DescribeInstances, SendSSHPublicKey), and the provider on it (`provider`). Without moto (or
//! Docker and dropbear for the provider) these tests say "SKIPPED", except in CI.

mod bed;
mod provider;

use drover_docker::testing::aws::{Moto, TestGroup};
use drover_providers::aws::{AsgGroup, AwsErrorKind, AwsTarget, InstanceState};

fn target(moto: &Moto, group: &str) -> AwsTarget {
    AwsTarget {
        group: group.to_string(),
        region: Some("us-east-1".into()),
        endpoint_url: Some(moto.endpoint.clone()),
        static_keys: Some(("testing".into(), "testing".into())),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_group_contract_against_moto() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let bed = TestGroup::setup(&moto, "drover-provider", 3).expect("set up the group");
    let group = AsgGroup::init(&target(&moto, &bed.name))
        .await
        .expect("init");
    assert_eq!((group.max_size(), group.desired()), (3, 0));
    assert!(group.setup_notes().is_empty(), "{:?}", group.setup_notes());
    assert!(group.update().await.expect("update").is_empty());

    assert_eq!(group.increase(2).await.expect("increase"), 2);
    let instances = group.update().await.expect("update");
    assert_eq!(instances.len(), 2);
    assert!(instances.iter().all(|i| i.state == InstanceState::Running));
    // moto would launch past MaxSize; drover never asks.
    assert_eq!(group.increase(5).await.expect("increase at the cap"), 1);
    assert_eq!(bed.info().expect("describe").desired, 3);
    assert_eq!(group.increase(1).await.expect("at the cap"), 0);

    let first = instances[0].id.clone();
    let info = group
        .connect_info(
            &first,
            "ec2-user",
            Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0x drover"),
        )
        .await
        .expect("connect info");
    let internal = info.internal_addr.clone().expect("a private address");
    assert!(internal.starts_with("127.0.1."), "{internal}");
    assert!(info.key_pushed);
    assert!(info.availability_zone.is_some());

    let (done, err) = group.decrease(std::slice::from_ref(&first)).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(done, std::slice::from_ref(&first));
    assert_eq!(group.desired(), 2);
    assert_eq!(bed.info().expect("describe").desired, 2, "decremented");
    let left: Vec<String> = group
        .update()
        .await
        .expect("update")
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(left.len(), 2);
    assert!(!left.contains(&first));
    // The terminated instance cannot be reached any more, and says why.
    let gone = group
        .connect_info(&first, "ec2-user", None)
        .await
        .unwrap_err();
    assert_eq!(gone.kind, AwsErrorKind::NotFound, "{gone}");

    // Someone changes the capacity behind drover's back: the next update adopts it.
    bed.set_desired(1)
        .expect("set desired behind drover's back");
    group.update().await.expect("update");
    assert_eq!(group.desired(), 1);
}

#[tokio::test]
async fn a_missing_group_is_a_clear_setup_error() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let err = AsgGroup::init(&target(&moto, "no-such-group"))
        .await
        .err()
        .expect("no group");
    assert_eq!(err.kind, AwsErrorKind::Invalid);
    assert!(err.to_string().contains("no-such-group"), "{err}");
    assert!(err.to_string().contains("plugin_config.name"), "{err}");
}
