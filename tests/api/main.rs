//! One integration-test binary. Every test spawns a real server on port 0
//! with a fresh database: a temporary SQLite file, or a new database on the
//! Postgres named by TEST_DATABASE_URL; Redis Cluster from
//! TEST_REDIS_CLUSTER_NODES or Redis from TEST_REDIS_URL under a unique key
//! prefix, else the in-process cache.

mod helpers;

mod accounts;
mod adoption;
mod analytics;
mod architecture;
mod audience;
mod auth;
mod callers;
mod cli;
mod export;
mod foundation;
mod hardening;
mod key_generations;
mod mfa;
mod partitions;
mod replicas;
mod stream;
mod usage;
