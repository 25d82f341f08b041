//! AWS Auto Scaling groups (cargo feature `aws`, on by default): the calls GitLab's
//! `fleeting-plugin-aws` makes, with the AWS SDK for Rust, shaped on fleeting's methods so that the
//! instance-group provider behind [`crate::MachineProvider`] (and other clouds) can build on it.
//!
//! | fleeting | here | AWS |
//! |---|---|---|
//! | `Init` | [`AsgGroup::init`] | `DescribeAutoScalingGroups` (exactly one group; its setup checked) |
//! | `Update` | [`AsgGroup::update`] | `DescribeAutoScalingGroups`; lifecycle states mapped as the plugin does |
//! | `Increase` | [`AsgGroup::increase`] | `SetDesiredCapacity` (no cooldown), capped at the group's `MaxSize` by drover |
//! | `Decrease` | [`AsgGroup::decrease`] | `TerminateInstanceInAutoScalingGroup` with decrement, in order |
//! | `ConnectInfo` | [`AsgGroup::connect_info`] | `DescribeInstances`, then `ec2-instance-connect:SendSSHPublicKey` unless static credentials |
//!
//! Credentials come from `aws-config`'s chain, as operators expect: environment, the profile
//! (`profile`, `config_file`, `credentials_file` of `[runners.autoscaler.plugin_config]`), the
//! instance role through IMDSv2.

mod group;

pub use group::{
    AsgGroup, AwsError, AwsErrorKind, AwsTarget, ConnectInfo, Instance, InstanceState,
};
