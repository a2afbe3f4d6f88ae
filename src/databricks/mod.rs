//! Databricks workspaces: which one and how to authenticate, the way the
//! Databricks SDKs do it. Used by the Databricks sinks and, for upstream
//! credentials, by routes that call Databricks model serving.
//!
//! - [`config`]: pure resolution of `DATABRICKS_*` env vars and the
//!   `~/.databrickscfg` profile into a [`WorkspaceConfig`] (host + PAT or
//!   OAuth M2M client credentials); [`ini`] parses the profile file.
//! - [`credentials`]: [`Credentials`], the `Authorization` header for each
//!   call — a PAT as is, or an OAuth token fetched from the workspace's OIDC
//!   endpoint, cached, refreshed before it expires, single-flight, refreshed
//!   once after a 401 — and the workspace id for `x-databricks-org-id`.
//! - [`token`]: pure parsing of the host-metadata, OIDC-discovery and token
//!   replies, and the [`AuthError`] they classify into.
//!
//! The wire contract is in docs/databricks-contract.md.

pub mod config;
pub mod credentials;
mod ini;
pub mod token;

pub use config::{profile_from_tracking_uri, resolve, AuthConfig, Secret, WorkspaceConfig};
pub use credentials::Credentials;
pub use token::AuthError;
