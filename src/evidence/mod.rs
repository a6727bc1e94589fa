//! Supply-chain evidence for a harden: which OS packages the source and the hardened image hold,
//! their SBOMs, the vulnerabilities hardening removed, and signatures and provenance a
//! verifier (cosign, an admission controller) can check.

pub mod produce;
pub mod profile;
pub mod provenance;
pub mod sbom;
pub mod sign;
pub mod vulns;
