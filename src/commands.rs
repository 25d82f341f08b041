//! One module per subcommand.

pub mod check_config;
pub mod connect;
pub mod list;
pub mod register;
pub mod replay;
pub mod run;
pub mod simulate;
pub mod status;
pub mod unregister;
pub mod verify;
