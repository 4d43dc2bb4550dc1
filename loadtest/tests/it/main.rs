//! Black-box tests of tailcut-load: real backends on `127.0.0.1:0`, the real
//! generator (in-process through the library, or the binary for exit codes).

mod browser;
mod compare;
mod exit_codes;
mod freeze;
mod keepalive;
mod outputs;
mod support;
