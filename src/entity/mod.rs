//! SeaORM entities, one per table. Kept apart from hand-written logic; the
//! HTTP layer never serializes these directly.

pub mod api_keys;
pub mod events;
pub mod jobs;
pub mod mail_outbox;
pub mod metrics;
pub mod mfa_tickets;
pub mod recovery_codes;
pub mod refresh_tokens;
pub mod sessions;
pub mod usage;
pub mod usage_breakdown;
pub mod user_factors;
pub mod user_tokens;
pub mod users;
pub mod webauthn_ceremonies;
