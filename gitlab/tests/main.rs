//! Integration tests of drover-gitlab against its fake GitLab (one test binary).

mod artifacts;
mod cancel;
mod common;
mod decode;
mod faults;
mod fixtures;
mod masking;
mod protocol;
mod strictness;
mod tls;
