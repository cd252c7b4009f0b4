//! A scriptable in-process OpenID Provider and a Portcullis instance wired to it, for testing
//! the gateway's handling of whatever a provider (or an attacker in its place) sends back.
#![allow(dead_code)]

pub mod gateway;
pub mod jose;
pub mod provider;
