//! One module per subcommand.

mod check_autoscaler;
pub mod check_config;
pub mod connect;
mod figures;
pub mod list;
pub mod register;
pub mod replay;
pub mod run;
pub mod simulate;
pub mod status;
pub mod unregister;
pub mod verify;
