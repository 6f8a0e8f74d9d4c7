//! `/auth/*`: handlers, their bodies, and the extractors that carry
//! permissions in types.

pub mod accounts;
pub mod answers;
pub mod dto;
pub mod extract;
pub mod mfa;
pub mod oauth;
pub mod passkeys;
pub mod routes;
