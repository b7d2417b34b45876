//! ferry moves files over TCP: a server that serves a directory to many
//! clients at once, and a client that downloads from it, fast, resumably and
//! verified, plus a small "send a message, get an acknowledgement" mode. It
//! grew from a Python socket tutorial (`../shared/seed/`) and still speaks
//! that tutorial's raw protocol.
//!
//! # Map
//!
//! | module | its one job |
//! |---|---|
//! | [`protocol`] | the wire format as a pure codec: frames, error codes, path rules. No IO. `docs/PROTOCOL.md` is its spec. |
//! | [`connection`] | framed IO over any `AsyncRead + AsyncWrite`: read a frame, queue/flush frames, step out of framing for raw file bodies. |
//! | `zerocopy` | file bodies via `sendfile(2)`, header and body in one segment. |
//! | [`server`] | accept loop, connection limits and eviction, graceful shutdown; `server::root::SafeRoot` (opens beneath the root, never outside), `HashCache` (BLAKE3 per file version), the native request handler. |
//! | [`client`] | connecting (`HOST[:PORT]`, IPv6), the native session, downloads through `PartFile` with resume and verification. |
//! | [`tree`] | whole-directory downloads: pipelined requests, names from the server checked before anything is created. |
//! | [`raw`] | the tutorial's protocol: serving its clients and netcat, and talking to its servers. |
//! | [`display`] | making untrusted names and messages safe to print. |
//!
//! The binary (`src/main.rs`) is clap glue over these modules; errors are
//! `thiserror` enums per layer, `anyhow` only there. Logging is `tracing`;
//! the library never installs a subscriber.

pub mod client;
pub mod connection;
pub mod display;
mod hashing;
pub mod protocol;
pub mod raw;
pub mod server;
pub mod tree;
mod zerocopy;
