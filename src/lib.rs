//! toolgate: a gate between AI agents and the machine.
//!
//! An agent asks, over gRPC, to run a tool. toolgate identifies the caller, finds the tool in the
//! policy files, splits the command without a shell, checks the arguments against the tool's
//! rules, runs the program in a fresh sandbox, and writes an audit record of every decision and
//! outcome. One invocation flows forward through these modules, and any stage can refuse:
//!
//! | module | job |
//! |---|---|
//! | [`api`] | the gRPC service: protobuf ⇄ domain types |
//! | [`auth`] | who is calling, from the connection |
//! | [`policy`] | the tools and their rules, loaded from TOML |
//! | [`command`] | shell-free splitting and argument rules |
//! | [`admission`] | caller authorization, rate limits, concurrency, quotas, circuit breakers |
//! | [`gate`] | the pipeline of one invocation, from request to audit record |
//! | [`sandbox`] | the sandbox: prepared in the parent, applied by the child |
//! | [`supervise`] | stdin, capped output, deadline, cancellation, killing the tree |
//! | [`audit`] | hash-chained, durable records of every request; rotation; `verify` |
//! | [`daemon`] | configuration, listeners, signals, reload, systemd, health, drain |
//! | [`client`] | connecting to the daemon |
//! | [`telemetry`] | logs (text, JSON, journal) and Prometheus metrics |
//! | [`tool_schema`] | a caller's tools as JSON-schema definitions for model APIs |
//! | [`mcp`] | `toolgate mcp`: a Model Context Protocol server forwarding to the daemon |
//!
//! Only `sandbox/sys.rs` may use `unsafe`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod admission;
pub mod api;
pub mod audit;
pub mod auth;
pub mod client;
pub mod command;
pub mod daemon;
mod error;
pub mod gate;
pub mod policy;
pub mod sandbox;
pub mod supervise;
pub mod telemetry;
pub mod tool_schema;

pub mod mcp;

pub use error::Error;
