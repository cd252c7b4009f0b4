//! HTTP plumbing shared by every layer: problem responses, client address, request hygiene and
//! baseline security headers.

pub mod around;
pub mod client_ip;
pub mod hygiene;
pub mod problem;
pub mod security_headers;
pub mod trace_context;
pub mod wrap;
