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
//! [`AwsProvider`] puts the group behind [`crate::MachineProvider`]: names bound to instances
//! in the state directory (records), AWS calls retried or stopped per the retry policy, instances
//! reached over SSH and checked ready by the connector.
//!
//! Credentials come from `aws-config`'s chain, as operators expect: environment, the profile
//! (`profile`, `config_file`, `credentials_file` of `[runners.autoscaler.plugin_config]`), the
//! instance role through IMDSv2.

mod calls;
mod config;
mod group;
mod instances;
mod provider;
mod records;

pub use config::{
    AwsProviderConfig, ConnectorConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_READY_TIMEOUT,
    DEFAULT_USERNAME,
};
pub use group::{
    AsgGroup, AwsError, AwsErrorKind, AwsTarget, ConnectInfo, Instance, InstanceState,
};
pub use provider::AwsProvider;
