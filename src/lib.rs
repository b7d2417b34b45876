//! ferry (module map written later)
pub mod connection;
pub mod display;
pub mod protocol;
pub mod raw;
pub mod server;
mod zerocopy;
pub mod client;
