//! One Auto Scaling group: its setup, its instances, capacity up and down, how to reach one.

use std::path::PathBuf;
use std::sync::Mutex;

use aws_config::BehaviorVersion;
use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
use aws_sdk_autoscaling::error::{DisplayErrorContext, ProvideErrorMetadata};

/// Which group, and how to reach AWS.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AwsTarget {
    /// The Auto Scaling group's name (`plugin_config.name`).
    pub group: String,
    pub profile: Option<String>,
    pub config_file: Option<PathBuf>,
    pub credentials_file: Option<PathBuf>,
    /// A region; `None`: the chain's (environment, profile, IMDS).
    pub region: Option<String>,
    /// Another endpoint for every service (an emulator in tests).
    pub endpoint_url: Option<String>,
    /// Fixed access keys instead of the chain (tests against an emulator).
    pub static_keys: Option<(String, String)>,
}

/// Without the secret key: settings are logged.
impl std::fmt::Debug for AwsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsTarget")
            .field("group", &self.group)
            .field("profile", &self.profile)
            .field("config_file", &self.config_file)
            .field("credentials_file", &self.credentials_file)
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("static_keys", &self.static_keys.as_ref().map(|(id, _)| id))
            .finish()
    }
}

/// What kind of failure, which decides what the caller does.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AwsErrorKind {
    /// Throttled or a transient failure: back off and retry.
    Throttled,
    /// The request or the setup is wrong (`ValidationError`, no such group, access denied):
    /// retrying will not help; say so to the operator.
    Invalid,
    /// The instance is not there (terminated behind drover's back, reclaimed).
    NotFound,
    /// Anything else (network, a 5xx): retry with backoff.
    Other,
}

#[derive(Debug, thiserror::Error)]
#[error("Auto Scaling group {group}: {message}")]
pub struct AwsError {
    pub group: String,
    pub kind: AwsErrorKind,
    pub message: String,
}

/// An instance's state in fleeting's terms.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum InstanceState {
    /// `Pending*`, `Standby`, `Warmed:*`, ...: not ready for jobs yet.
    Creating,
    /// `InService`.
    Running,
    /// `Terminating*`, `Terminated`.
    Deleting,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub state: InstanceState,
    /// The group's own word for it, e.g. `InService`.
    pub lifecycle: String,
}

/// How to reach one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectInfo {
    pub id: String,
    pub internal_addr: Option<String>,
    pub external_addr: Option<String>,
    pub availability_zone: Option<String>,
    /// Go's names: `amd64`, `arm64`, `386`.
    pub arch: Option<String>,
    /// The public key was pushed through EC2 Instance Connect (valid 60 s from now).
    pub key_pushed: bool,
}

/// A connected group.
pub struct AsgGroup {
    name: String,
    asg: aws_sdk_autoscaling::Client,
    ec2: aws_sdk_ec2::Client,
    eic: aws_sdk_ec2instanceconnect::Client,
    /// `MaxSize`, read at `init`; drover never asks for more (AWS would refuse, emulators don't).
    max_size: u32,
    /// The desired capacity as last seen or set.
    desired: Mutex<u32>,
    /// What is off in the group's setup (warnings for the operator).
    setup_notes: Vec<String>,
}

impl AsgGroup {
    /// Connects and describes the group: it must exist, exactly once.
    pub async fn init(target: &AwsTarget) -> Result<AsgGroup, AwsError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(profile) = &target.profile {
            loader = loader.profile_name(profile);
        }
        if target.config_file.is_some() || target.credentials_file.is_some() {
            let mut files = EnvConfigFiles::builder();
            if let Some(f) = &target.config_file {
                files = files.with_file(EnvConfigFileKind::Config, f);
            }
            if let Some(f) = &target.credentials_file {
                files = files.with_file(EnvConfigFileKind::Credentials, f);
            }
            loader = loader.profile_files(files.build());
        }
        if let Some(region) = &target.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(url) = &target.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some((id, secret)) = &target.static_keys {
            loader = loader.credentials_provider(aws_sdk_autoscaling::config::Credentials::new(
                id, secret, None, None, "drover",
            ));
        }
        let config = loader.load().await;
        let mut group = AsgGroup {
            name: target.group.clone(),
            asg: aws_sdk_autoscaling::Client::new(&config),
            ec2: aws_sdk_ec2::Client::new(&config),
            eic: aws_sdk_ec2instanceconnect::Client::new(&config),
            max_size: 0,
            desired: Mutex::new(0),
            setup_notes: Vec::new(),
        };
        let g = group.describe().await?;
        group.max_size = to_u32(g.max_size());
        group.set_desired(to_u32(g.desired_capacity()));
        if g.new_instances_protected_from_scale_in() != Some(true) {
            group.setup_notes.push(
                "new instances are not protected from scale-in: the group may terminate an instance \
                 running a job; turn on scale-in protection"
                    .into(),
            );
        }
        if !g
            .suspended_processes()
            .iter()
            .any(|p| p.process_name() == Some("AZRebalance"))
        {
            group.setup_notes.push(
                "AZRebalance is not suspended: the group may replace instances running jobs; \
                 suspend it"
                    .into(),
            );
        }
        Ok(group)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn max_size(&self) -> u32 {
        self.max_size
    }

    pub fn desired(&self) -> u32 {
        self.desired.lock().map_or(0, |d| *d)
    }

    /// What is off in the group's setup, for one warning at start.
    pub fn setup_notes(&self) -> &[String] {
        &self.setup_notes
    }

    /// Every instance of the group with its state. A desired capacity changed behind drover's
    /// back is adopted, as the plugin does.
    pub async fn update(&self) -> Result<Vec<Instance>, AwsError> {
        let g = self.describe().await?;
        let actual = to_u32(g.desired_capacity());
        if actual != self.desired() {
            tracing::info!(
                group = %self.name,
                expected = self.desired(),
                actual,
                "out-of-sync capacity: adopting the group's"
            );
            self.set_desired(actual);
        }
        let mut out: Vec<Instance> = g
            .instances()
            .iter()
            .filter_map(|i| {
                let id = i.instance_id()?.to_string();
                let lifecycle = i.lifecycle_state().map_or("", |l| l.as_str()).to_string();
                Some(Instance {
                    id,
                    state: state_of(&lifecycle),
                    lifecycle,
                })
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Asks for `delta` more instances; returns how many were asked for, fewer when `MaxSize`
    /// would be passed (0 at the cap). New ids show in a later [`AsgGroup::update`].
    pub async fn increase(&self, delta: u32) -> Result<u32, AwsError> {
        let current = self.desired();
        let target = current.saturating_add(delta).min(self.max_size);
        if target <= current {
            return Ok(0);
        }
        self.set_capacity(target).await?;
        Ok(target - current)
    }

    /// Sets the group's desired capacity to `target` (no cooldown) and remembers it.
    async fn set_capacity(&self, target: u32) -> Result<(), AwsError> {
        self.asg
            .set_desired_capacity()
            .auto_scaling_group_name(&self.name)
            .desired_capacity(i32::try_from(target).unwrap_or(i32::MAX))
            .honor_cooldown(false)
            .send()
            .await
            .map_err(|e| self.error(e))?;
        self.set_desired(target);
        Ok(())
    }

    /// Lowers the desired capacity by one, unless that would take it below `floor`; returns
    /// whether it did. Used for a capacity raised for an instance that has not shown yet.
    pub async fn lower_one(&self, floor: u32) -> Result<bool, AwsError> {
        let current = self.desired();
        if current == 0 || current - 1 < floor {
            return Ok(false);
        }
        let target = current - 1;
        self.set_capacity(target).await?;
        Ok(true)
    }

    /// Terminates the instances in order, each lowering the desired capacity, and stops at the
    /// first failure. Returns the ids terminated, and the failure if there was one.
    pub async fn decrease(&self, ids: &[String]) -> (Vec<String>, Option<AwsError>) {
        let mut done = Vec::new();
        for id in ids {
            let result = self
                .asg
                .terminate_instance_in_auto_scaling_group()
                .instance_id(id)
                .should_decrement_desired_capacity(true)
                .send()
                .await;
            match result {
                Ok(_) => {
                    self.set_desired(self.desired().saturating_sub(1));
                    done.push(id.clone());
                }
                Err(e) => return (done, Some(self.error(e))),
            }
        }
        (done, None)
    }

    /// The instance's addresses, and (unless `public_key` is `None`, for static credentials)
    /// the key pushed for `os_user` through EC2 Instance Connect right before a dial.
    pub async fn connect_info(
        &self,
        id: &str,
        os_user: &str,
        public_key: Option<&str>,
    ) -> Result<ConnectInfo, AwsError> {
        let out = self
            .ec2
            .describe_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(|e| self.error(e))?;
        let Some(instance) = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| i.instance_id() == Some(id))
        else {
            return Err(self.fail(AwsErrorKind::NotFound, format!("instance {id} not found")));
        };
        let state = instance
            .state()
            .and_then(|s| s.name())
            .map_or("", |n| n.as_str());
        if matches!(
            state,
            "shutting-down" | "terminated" | "stopping" | "stopped"
        ) {
            return Err(self.fail(AwsErrorKind::NotFound, format!("instance {id} is {state}")));
        }
        let availability_zone = instance
            .placement()
            .and_then(|p| p.availability_zone())
            .map(String::from);
        let arch = instance.architecture().map(|a| {
            match a.as_str() {
                "x86_64" => "amd64",
                "arm64" | "arm64_mac" => "arm64",
                "i386" => "386",
                other => other,
            }
            .to_string()
        });
        let mut info = ConnectInfo {
            id: id.to_string(),
            internal_addr: instance.private_ip_address().map(String::from),
            external_addr: instance.public_ip_address().map(String::from),
            availability_zone: availability_zone.clone(),
            arch,
            key_pushed: false,
        };
        if let Some(key) = public_key {
            let mut push = self
                .eic
                .send_ssh_public_key()
                .instance_id(id)
                .instance_os_user(os_user)
                .ssh_public_key(key);
            if let Some(az) = &availability_zone {
                push = push.availability_zone(az);
            }
            let out = push.send().await.map_err(|e| self.error(e))?;
            info.key_pushed = out.success();
        }
        Ok(info)
    }

    async fn describe(&self) -> Result<aws_sdk_autoscaling::types::AutoScalingGroup, AwsError> {
        let out = self
            .asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&self.name)
            .send()
            .await
            .map_err(|e| self.error(e))?;
        match out.auto_scaling_groups() {
            [one] => Ok(one.clone()),
            [] => Err(self.fail(
                AwsErrorKind::Invalid,
                "no such Auto Scaling group in this account and region; check \
                 plugin_config.name and the region"
                    .into(),
            )),
            more => Err(self.fail(
                AwsErrorKind::Invalid,
                format!("{} groups answer to this name", more.len()),
            )),
        }
    }

    fn set_desired(&self, n: u32) {
        if let Ok(mut d) = self.desired.lock() {
            *d = n;
        }
    }

    fn fail(&self, kind: AwsErrorKind, message: String) -> AwsError {
        AwsError {
            group: self.name.clone(),
            kind,
            message,
        }
    }

    fn error<E>(&self, e: E) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let kind = match e.code() {
            Some(
                "Throttling"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "ResourceContention"
                | "ScalingActivityInProgress",
            ) => AwsErrorKind::Throttled,
            Some(c) if c.starts_with("InvalidInstanceID") => AwsErrorKind::NotFound,
            Some(
                "ValidationError"
                | "AccessDenied"
                | "AccessDeniedException"
                | "UnauthorizedOperation",
            ) => AwsErrorKind::Invalid,
            _ => AwsErrorKind::Other,
        };
        self.fail(kind, DisplayErrorContext(&e).to_string())
    }
}

/// The plugin's mapping of lifecycle states.
fn state_of(lifecycle: &str) -> InstanceState {
    if lifecycle == "InService" {
        InstanceState::Running
    } else if lifecycle.starts_with("Terminat") {
        InstanceState::Deleting
    } else {
        InstanceState::Creating
    }
}

fn to_u32(n: Option<i32>) -> u32 {
    n.and_then(|n| u32::try_from(n).ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_states_map_as_the_plugin_maps_them() {
        assert_eq!(state_of("InService"), InstanceState::Running);
        for s in [
            "Terminating",
            "Terminating:Wait",
            "Terminating:Proceed",
            "Terminated",
        ] {
            assert_eq!(state_of(s), InstanceState::Deleting, "{s}");
        }
        for s in ["Pending", "Pending:Wait", "Standby", "Warmed:Running", ""] {
            assert_eq!(state_of(s), InstanceState::Creating, "{s}");
        }
    }
}
