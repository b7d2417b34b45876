//! Integration tests: one test binary (as ripgrep does), real servers on
//! real loopback sockets bound to port 0.

mod support;

mod auth;
mod blocking;
mod browser;
mod cdp;
mod cli;
mod cluster;

mod faults;
mod first_hour;
mod hardening;
mod hostile;
mod http;
mod memory;
mod native;
mod object;
mod prehash;
mod proxy;
mod tls;
mod tree;
mod tutorial;
mod upload;
mod web;
