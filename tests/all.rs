//! Integration tests: the real `toolgate` daemon on a temporary Unix socket, called over gRPC.
//!
//! One test binary (fast to build on two cores); each module is a theme. Every denial test has
//! its control: the same attempt made outside the sandbox, which must succeed.

mod suite;
