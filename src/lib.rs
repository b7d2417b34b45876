//! ferry moves files over TCP: a server that serves a directory to many
//! clients at once, and a client that downloads from it, fast, resumably and
//! verified, plus a small "send a message, get an acknowledgement" mode;
//! browsers, curl and wget are served on the same port over HTTP, and every
//! protocol can run inside TLS. It
//! grew from a Python socket tutorial (four small programs: two message
//! servers, a prompt client and a file downloader) and still speaks
//! that tutorial's protocol.
//!
//! # Map
//!
//! | module | its one job |
//! |---|---|
//! | [`protocol`] | the wire format as a pure codec: frames, error codes, path rules. No IO. `docs/PROTOCOL.md` is its spec. |
//! | [`connection`] | framed IO over any `AsyncRead + AsyncWrite`: read a frame, queue/flush frames, step out of framing for raw file bodies. |
//! | `zerocopy` | file bodies via `sendfile(2)`, header and body in one segment. |
//! | [`storage`] | where served bytes come from: `SafeRoot` (opens beneath the root, never outside, hidden files left out), `ObjectRoot` (an S3-compatible bucket through `object_store`: keys confined to a prefix, versions the same on every node, ranged reads that fail if the object changes, BLAKE3 hashes shared through the store) and `HashCache` (BLAKE3 per file version, rationed); the write side (`begin_upload`: a locked hidden temporary beside the target, verified, `fsync`ed and renamed into place, never through a link). |
//! | [`tls`] | TLS on the port, both ends (rustls): `Stream` (plain or TLS, zero-copy only when plain), the server's certificate (given, or generated once and kept), the client's trust (pin, CA, trust on first use in `known_hosts`). |
//! | [`auth`] | access tokens: a `Secret` that never shows in logs, checked in constant time, wrong ones slowed per address. |
//! | [`service`] | the protocol-neutral file service every front-end calls, over a local directory or an object store (`Storage`; an opened file's bytes are a `Content`): open, stat, list (and a listing's rendering), hash and uploads, every file-system call on the blocking pool (bounded), never on the async workers; hashing ahead of demand on one idle-priority thread (`prehash`); the storage's health for a balancer. |
//! | [`server`] | accept loop, connection limits and eviction (idle and stalled connections), graceful shutdown; `proxy` (HAProxy's PROXY protocol v1/v2 from trusted peers, a pure parser); `sniff` (first bytes → protocol); TLS accepted by its first byte, then ALPN or the same sniffing; front-ends for native ferry, the tutorial's protocol and HTTP/1.1 and HTTP/2 (hyper: files with ranges and validators, HTML/JSON listings, tar/zip archives, `PUT` and the listing page's multipart upload form, `/_ferry/health`), which only translate their wire to the service and never import each other; received messages printed by a thread of their own (`printer`), so a stuck stdout stalls no worker. |
//! | [`client`] | addresses (`HOST[:PORT][/PATH]`, `ferry://`, `ferrys://`), the native session, downloads through `PartFile` with resume and verification: one stream, split over connections (`-j`, resumable), whole trees; uploads (`client::upload`: resumable, pipelined for small files); downloads from any web server (`client::http`: hyper's client, `Range` + `If-Range` resume, `-j` ranges, JSON listings of a ferry server); where they are saved (`-o`); the tutorial's servers (`client::tutorial`). |
//! | [`display`] | making untrusted names and messages safe to print (the one escaping function), sizes for people. |
//! | [`cli`] | the command line: clap arguments, turned into library calls, results into lines and exit codes; shell completions and the man page from the same definitions. |
//!
//! The binary (`src/main.rs`) only calls [`cli::main`]. Errors are
//! `thiserror` enums per layer, `anyhow` only in `cli`. Logging is
//! `tracing`; only `cli` installs a subscriber.

pub mod auth;
pub mod cli;
pub mod client;
pub mod connection;
pub mod display;
mod hashing;
pub mod protocol;
pub mod server;
pub mod service;
pub mod storage;
pub mod tls;
mod zerocopy;
