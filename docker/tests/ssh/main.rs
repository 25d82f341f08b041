//! Docker over SSH against real SSH servers: fake instances (dropbear containers on loopback
//! addresses, the host's Docker socket behind them) and the AWS test bed (moto and the
//! reconciler). Without an engine or moto these tests say "SKIPPED", except in CI (`CI` set),
//! where they fail.

mod aws;
mod connect;
mod support;
