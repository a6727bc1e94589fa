//! One self-contained HTML page per workflow, per policy, and per `whittle local` run: inline
//! CSS and an inline SVG chart, no script and nothing fetched, so it works offline, from the
//! operator's server ([`crate::server::pages`]) or as a file (`whittle local --html FILE`).
//!
//! Pure functions of the resources. Every string on a page comes from a resource, an image or
//! a registry, and is escaped ([`html::esc`]).

pub mod chart;
pub mod html;
pub mod local;
pub mod policy;
pub mod workflow;

pub use local::local;
pub use policy::policy;
pub use workflow::workflow;
