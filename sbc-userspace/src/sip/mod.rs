//! The SIP wire layer: framing, parsing, checking and (for forwarding) editing messages.
//!
//! The project owns this layer instead of building on rsip 0.4: measured on the RFC 4475 torture
//! messages, rsip rejects 6 of the 13 valid ones, accepts 11 of the 19 invalid ones, ignores
//! Content-Length for framing, lacks compact header names and IPv6 Request-URIs, and
//! re-serialises bodies lossily. Here, messages keep their received bytes and are forwarded by
//! editing single headers, so what the proxy does not touch passes through byte for byte.
pub mod address;
pub mod bounds;
pub mod check;
pub mod edit;
pub mod framing;
pub mod inbound;
pub mod message;
pub mod method;
pub mod syntax;
pub mod uri;
pub mod via;

pub use message::{Header, Message, ParseError, StartLine};
pub use method::Method;
